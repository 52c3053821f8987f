"""Shared by the tests/unit/test_mut_*.py files that need a model: the tiny tokenizer and tiny model
folder of tests/conftest.py, cached on disk under the system temp folder, keyed by the code and
library versions that make them. `make mutants` starts one short pytest run per mutant; loading the
cached folders (~0.1 s) instead of training the tokenizer (~3 s) is what keeps it under an hour."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent


def _key() -> str:
    import tokenizers
    import torch
    import transformers
    h = hashlib.sha256()
    files = sorted((REPO / "data_recipes" / "tokenizer").rglob("*.*")) + [
        REPO / "data_recipes" / "tokenizer_train.py", REPO / "data_recipes" / "demo_data.py", TESTS / "conftest.py"]
    for f in files:
        if "__pycache__" not in f.parts:
            h.update(f.read_bytes())
    h.update(f"{transformers.__version__} {tokenizers.__version__} {torch.__version__}".encode())
    return h.hexdigest()[:16]


def cached_dir(name: str, build) -> Path:
    """<tmp>/zhllm-test-cache/<name>-<key>, made by `build(folder)` once (atomically: a folder is
    renamed into place, so concurrent runs never see half of one)."""
    root = Path(tempfile.gettempdir()) / "zhllm-test-cache"
    final = root / f"{name}-{_key()}"
    if not final.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:                 # another run got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def tokenizer_dir() -> Path:
    def build(path: Path) -> None:
        from data_recipes.demo_data import pretrain_corpus
        from data_recipes.tokenizer import build_tokenizer
        texts = [d for docs in pretrain_corpus().values() for d in docs]
        build_tokenizer(texts, vocab_size=512, min_frequency=2).save_pretrained(path)
    return cached_dir("tiny_tokenizer", build)


def load_tokenizer():
    from transformers import AutoTokenizer
    path = tokenizer_dir()
    tok = AutoTokenizer.from_pretrained(path)
    tok.saved_path = path
    return tok


def model_dir() -> Path:
    def build(path: Path) -> None:
        from conftest import make_tiny_model
        tok = load_tokenizer()
        model = make_tiny_model(tok)
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return cached_dir("tiny_model", build)
