"""GPU checks of the pretraining loop (run on a lent GPU: pytest -m gpu tests/stages/test_pretrain_gpu.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from core.log import read_metrics
from pretrain.data import write_token_folder
from pretrain.train import main

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_tokenizer, demo_texts):
    return write_token_folder(tmp_path_factory.mktemp("gpu_data") / "demo", tiny_tokenizer, demo_texts[:600])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("ffn", ["swiglu", "soft_moe"])
def test_bf16_training_on_gpu_and_export(data_dir, tmp_path, ffn):
    run = main([f"data.path={data_dir}", f"run.root={tmp_path}", f"run.name={ffn}", "model.size=debug",
                f"model.ffn={ffn}", "data.seq_len_tokens=64", "train.batch_size_tokens=1024",
                "train.micro_batch_size=8", "train.max_steps=20", "train.log_every_steps=1",
                "optim.lr=3e-3", "optim.warmup_steps=2", "train.activation_checkpointing=true"])
    rows = read_metrics(run / "metrics.jsonl")
    assert all(math.isfinite(r["loss"]) for r in rows) and rows[-1]["loss"] < rows[0]["loss"] - 0.5
    assert json.loads((run / "manifest.json").read_text())["env"]["device"] != "cpu"
    assert (run / "model" / "model.safetensors").is_file()
