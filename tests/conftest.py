"""Shared fixtures: a tiny tokenizer and a tiny Qwen2 model built in-process (nothing downloads),
a finished fake run folder to hand to later stages, and access to ../shared/data (skipped with a
clear message when it is not there)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.runs import shared_data_root

REPO_ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP busy-waiting made 2-thread steps up to 8x slower on a shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a message naming what is missing."""
    p = shared_data_root().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not present: {p} (tests that read ../shared/data skip without it)")
    return p


@pytest.fixture
def user_error(capsys):
    """`user_error(main, argv)` runs an entrypoint that must stop on a user error and returns its
    stderr, after checking the one convention (core.errors): exit code 2, `[kind ]error: ...`, no traceback."""
    def run(main, *args, **kwargs) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(*args, **kwargs)
        err = capsys.readouterr().err
        assert e.value.code == 2, err
        assert "error: " in err and "Traceback" not in err, err
        return err
    return run


@pytest.fixture(scope="session")
def demo_texts() -> list[str]:
    from data_recipes.demo_data import pretrain_corpus
    return [d for docs in pretrain_corpus().values() for d in docs]


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory, demo_texts):
    """Byte-level BPE (vocab 512) with ChatML specials and chat template, saved to a folder."""
    from data_recipes.tokenizer import build_tokenizer
    tok = build_tokenizer(demo_texts, vocab_size=512, min_frequency=2)
    path = tmp_path_factory.mktemp("tiny_tokenizer")
    tok.save_pretrained(path)
    tok.saved_path = path
    return tok


def make_tiny_model(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    return Qwen2ForCausalLM(cfg)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """An HF model folder (config, safetensors, tokenizer, generation config) of a 2-layer Qwen2."""
    path = tmp_path_factory.mktemp("tiny_model")
    model = make_tiny_model(tiny_tokenizer)
    model.generation_config.eos_token_id = tiny_tokenizer.eos_token_id
    model.generation_config.pad_token_id = tiny_tokenizer.pad_token_id
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def _fake_run(tmp_path_factory, model_dir: Path, stage: str, name: str) -> Path:
    import shutil
    from core.runs import Run, RunOptions
    run = Run.create(stage, "tiny", RunOptions(root=str(tmp_path_factory.mktemp("runs")), name=name))
    shutil.copytree(model_dir, run.path / "model")
    (run.path / "config.yaml").write_text("model: {size: tiny}\n")
    run.finish(steps=0, tokens_seen=0)
    return run.path


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished fake pretrain run folder whose model/ is the tiny model (a parent for SFT/DPO/eval)."""
    return _fake_run(tmp_path_factory, tiny_model_dir, "pretrain", "tiny-fixture")


@pytest.fixture(scope="session")
def tiny_sft_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished fake SFT run folder whose model/ is the tiny model (the parent of DPO/GRPO)."""
    return _fake_run(tmp_path_factory, tiny_model_dir, "sft", "tiny-sft")
