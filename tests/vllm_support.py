"""What the tests of the vLLM backend share (tests/stages/test_eval_vllm_parity.py,
tests/stages/test_rl_grpo_vllm.py): where .venv-vllm's python is, its environment, and the parity
model: a random Qwen2 whose answers vary across A-D (init std 0.2, head_dim 64, fp32, untied head
whose A-D rows are doubled so that generated text often names a letter)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"


def needs_vllm_venv() -> None:
    if not VLLM_PY.is_file():
        pytest.skip(f"{VLLM_PY} absent: run `make setup-vllm` (or `make test-backends`) to enable this test")


def vllm_env() -> dict:
    """This environment plus the repo on PYTHONPATH (the drivers under tests/ import our packages)."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def make_parity_model(tokenizer, out: Path, head_dim: int = 64, layers: int = 4, seed: int = 0) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from eval.backends.hf import letter_token_ids
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=4 * head_dim, intermediate_size=8 * head_dim,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=False, initializer_range=0.2,
                      bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for t in letter_token_ids(tokenizer):
            model.lm_head.weight[t] *= 2.0
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
