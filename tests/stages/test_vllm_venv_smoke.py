"""The project runs inside .venv-vllm, whose transformers (5.19, vLLM's pin) is older than ours
(5.24): pretraining with activation checkpointing (core/compat.py's fallback for transformers < 5.23)
gives the losses this venv gives, and an SFT run with activation checkpointing finishes (marker
`backends`; the eval path in that venv: test_eval_vllm_parity.py)."""
from __future__ import annotations

import json
import math
import subprocess

import pytest
from vllm_support import REPO, VLLM_PY, needs_vllm_venv, vllm_env

from core.log import read_metrics

pytestmark = pytest.mark.backends

ARGS = ["model.size=debug", "data.seq_len_tokens=32", "train.batch_size_tokens=256", "train.micro_batch_size=4",
        "train.max_steps=4", "train.log_every_steps=1", "train.seed=0", "train.cpu_threads=1", "optim.lr=1e-2",
        "optim.warmup_steps=1", "data.seed=0", "export=false"]


def _in_vllm_venv(*args: str) -> str:
    proc = subprocess.run([str(VLLM_PY), *args], cwd=REPO, env=vllm_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_transformers_there_is_vllms():
    needs_vllm_venv()
    out = _in_vllm_venv("-c", "import transformers, vllm; print(transformers.__version__, vllm.__version__)")
    tf, vl = out.split()
    assert tuple(int(x) for x in tf.split(".")[:2]) < (5, 20) and vl.startswith("0.32")


def test_pretrain_with_activation_checkpointing_matches(tmp_path, tiny_tokenizer, demo_texts):
    needs_vllm_venv()
    from pretrain.data import write_token_folder
    from pretrain.train import main
    data = write_token_folder(tmp_path / "data", tiny_tokenizer, demo_texts[:300], num_shards=1)
    here = main([*ARGS, f"data.path={data}", f"run.root={tmp_path}", "run.name=here"])
    _in_vllm_venv("-m", "pretrain.train", *ARGS, f"data.path={data}", f"run.root={tmp_path}", "run.name=there",
                  "train.activation_checkpointing=true")
    there = tmp_path / "pretrain" / "there"
    assert json.loads((there / "manifest.json").read_text())["steps"] == 4
    assert [r["loss"] for r in read_metrics(there / "metrics.jsonl")] == \
        pytest.approx([r["loss"] for r in read_metrics(here / "metrics.jsonl")], rel=1e-5)


def test_sft_with_activation_checkpointing_runs(tmp_path, tiny_run_dir):
    needs_vllm_venv()
    _in_vllm_venv("-m", "sft.train", "sft/recipes/demo.yaml", f"init_from={tiny_run_dir}", f"run.root={tmp_path}",
                  "train.max_steps=2", "train.batch_size=4", "train.log_every_steps=1", "optim.warmup_steps=0",
                  "train.activation_checkpointing=true", "samples.prompts=[你是谁？]", "samples.max_new_tokens=4")
    run = next((tmp_path / "sft").iterdir())
    assert json.loads((run / "manifest.json").read_text())["steps"] == 2
    assert all(math.isfinite(r["loss"]) for r in read_metrics(run / "metrics.jsonl"))
