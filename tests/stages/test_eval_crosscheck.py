"""Cross-checks: lm-eval on the same questions (fast, one subject) and OpenCompass (marker `backends`, needs
.venv-opencompass from `make setup-opencompass`)."""
import json
import shutil
from pathlib import Path

import pytest

from eval.crosscheck import main as crosscheck_main

REPO = Path(__file__).resolve().parents[2]


def test_lmeval_agrees_with_ours(tiny_model_dir, tmp_path):
    r = crosscheck_main(["eval/benchmarks/demo.yaml", f"model={tiny_model_dir}", f"out_dir={tmp_path}",
                         "subjects=[towns]", "limit=4", "bootstrap_samples=50"])
    assert r["n_questions"] == 4 and r["same_prediction"] == 1.0 and r["acc_ours"] == r["acc_lmeval"]
    assert json.loads((tmp_path / "demo.crosscheck.json").read_text())["same_prediction"] == 1.0


@pytest.mark.backends
def test_opencompass_on_tiny_model(tiny_run_dir, tmp_path):
    if not (REPO / ".venv-opencompass" / "bin" / "opencompass").is_file():
        pytest.skip("no .venv-opencompass (make setup-opencompass)")
    from eval.opencompass import main as oc_main
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    r = oc_main(["eval/benchmarks/demo.yaml", f"model={run}", "subjects=[towns,arithmetic]", "limit=3"])
    assert r["failed_subjects"] == [] and r["n_questions"] == 6 and 0 <= r["acc_micro"] <= 1
