"""GRPO with `generation.use_vllm=true`: refused with a pointer to .venv-vllm where vLLM is not
importable (the fast suite), and on CPU through .venv-vllm in TRL's colocate mode (marker
`backends`): a weight update reaches the engine as TRL sends it, and a short run finishes."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess

import pytest

from vllm_support import REPO, VLLM_PY, make_parity_model, needs_vllm_venv, vllm_env


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM importable here")
def test_use_vllm_without_vllm_points_to_its_venv(tiny_sft_run, tmp_path, user_error):
    from rl.grpo import main
    err = user_error(main, ["rl/recipes/demo_grpo.yaml", f"init_from={tiny_sft_run}", f"run.root={tmp_path}",
                            "generation.use_vllm=true"])
    assert err.startswith("config error: generation.use_vllm needs vLLM") and ".venv-vllm" in err
    assert not list(tmp_path.iterdir())       # refused before any run folder


@pytest.fixture(scope="module")
def policy_dirs(tmp_path_factory, tiny_tokenizer):
    needs_vllm_venv()
    root = tmp_path_factory.mktemp("grpo_vllm")
    return (make_parity_model(tiny_tokenizer, root / "policy-a", seed=0),
            make_parity_model(tiny_tokenizer, root / "policy-b", seed=1))


@pytest.mark.backends
def test_weight_sync_reaches_the_cpu_engine(policy_dirs):
    a, b = policy_dirs
    proc = subprocess.run([str(VLLM_PY), "tests/vllm_weight_sync_driver.py", str(a), str(b)], cwd=REPO,
                          env=vllm_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["a"] != out["b"]                      # the two policies generate differently
    assert out["a_then_b"] == out["b"]               # after the sync the engine is policy B


@pytest.mark.backends
def test_grpo_colocated_vllm_on_cpu(policy_dirs, tmp_path):
    a, _ = policy_dirs
    proc = subprocess.run([str(VLLM_PY), "-m", "rl.grpo", "rl/recipes/demo_grpo.yaml", f"init_from={a}",
                           f"run.root={tmp_path}", "generation.use_vllm=true", "train.max_steps=2",
                           "train.log_every_steps=1"],
                          cwd=REPO, env=vllm_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = next((tmp_path / "grpo").iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["generation"] == "vllm" and manifest["steps"] == 2
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) and r["completion_len"] > 0 for r in rows)
