"""The tokenizer step of a data build: train our Chinese byte-level BPE on the cleaned corpus (or
take an existing tokenizer folder), save it to `<data>/tokenizer/`, and measure it.

The report compares characters and UTF-8 bytes per token on a held-out slice (every
`heldout_every_docs`-th cleaned document, never used for training) against a plain GPT-2-style
byte BPE (`build_tokenizer(chinese_split=False)`) trained on the same text with the same vocab.
Training reads at most `train_max_chars` characters, which bounds its memory on large corpora.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data_recipes.tokenizer import CHAT_TEMPLATE, build_tokenizer
from data_recipes.sources import DataError


@dataclass
class TokenizerOptions:
    """The `tokenizer:` section of a data recipe."""
    from_dir: str = ""               # use this tokenizer folder (or a data folder with tokenizer/) instead of training
    vocab_size: int = 32000          # BPE vocab size including the 3 ChatML specials
    min_frequency: int = 2           # BPE: minimum pair count to merge
    train_max_chars: int = 20_000_000  # cleaned characters used for training: bounds memory (~200 B of RAM per char)
    heldout_every_docs: int = 50     # every Nth cleaned document is held out for the report
    heldout_max_chars: int = 2_000_000  # size cap of the held-out slice
    split: str = "qwen2"             # pre-tokenizer: qwen2 (Qwen2's rule) | cjk_chars (one Han character per pre-token)
    compare_baseline: bool = True    # also train a GPT-2-style byte BPE of the same vocab for the report


def iter_cleaned(parts: list[Path]) -> Iterator[tuple[int, str]]:
    """(document index, text) over the cleaned corpus parts, streamed."""
    i = 0
    for part in parts:
        with open(part, "rb") as f:
            for line in f:
                yield i, json.loads(line)["text"]
                i += 1


def _train_texts(parts: list[Path], cfg: TokenizerOptions) -> Iterator[str]:
    budget = cfg.train_max_chars
    for i, text in iter_cleaned(parts):
        if cfg.heldout_every_docs and i % cfg.heldout_every_docs == 0:
            continue
        if budget <= 0:
            return
        budget -= len(text)
        yield text


def heldout_texts(parts: list[Path], cfg: TokenizerOptions) -> list[str]:
    out, n = [], 0
    if not cfg.heldout_every_docs:
        return out
    for i, text in iter_cleaned(parts):
        if i % cfg.heldout_every_docs == 0:
            out.append(text)
            n += len(text)
            if n >= cfg.heldout_max_chars:
                break
    return out


def measure(tokenizer, texts: list[str]) -> dict:
    chars = sum(len(t) for t in texts)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    encs = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
    tokens = sum(len(e.ids) for e in encs)
    return {"chars": chars, "bytes": nbytes, "tokens": tokens,
            "chars_per_token": round(chars / tokens, 4) if tokens else None,
            "bytes_per_token": round(nbytes / tokens, 4) if tokens else None}


def load_existing(from_dir: str):
    """An HF tokenizer folder (or a data folder's tokenizer/) that has the document separator."""
    from transformers import AutoTokenizer
    p = Path(from_dir)
    if (p / "tokenizer" / "tokenizer.json").is_file():
        p = p / "tokenizer"
    if not (p / "tokenizer.json").is_file():
        raise DataError(f"tokenizer.from_dir: {p} has no tokenizer.json")
    tok = AutoTokenizer.from_pretrained(str(p))
    if tok.convert_tokens_to_ids("<|endoftext|>") in (None, tok.unk_token_id):
        raise DataError(f"tokenizer.from_dir: {p} has no <|endoftext|> token (the document separator)")
    if not tok.chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok, p


def make_tokenizer(cfg: TokenizerOptions, parts: list[Path], out_dir: Path, log=print) -> dict:
    """Train or copy the tokenizer into out_dir and return its report."""
    t0 = time.time()
    held = heldout_texts(parts, cfg)
    report: dict = {"heldout_docs": len(held), "heldout_every_docs": cfg.heldout_every_docs}
    if cfg.from_dir:
        tok, src = load_existing(cfg.from_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tok.save_pretrained(str(out_dir))
        report.update(source=f"from_dir:{src}", vocab_size=len(tok))
    else:
        log(f"tokenizer: training byte-level BPE, vocab {cfg.vocab_size} (<= {cfg.train_max_chars:,} chars)")
        tok = build_tokenizer(_train_texts(parts, cfg), vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                              split=cfg.split)
        tok.save_pretrained(str(out_dir))
        report.update(source="trained", vocab_size=len(tok), min_frequency=cfg.min_frequency)
    report["ours"] = measure(tok, held)
    if cfg.compare_baseline and held:
        base = build_tokenizer(_train_texts(parts, cfg), vocab_size=cfg.vocab_size,
                               min_frequency=cfg.min_frequency, chinese_split=False)
        report["gpt2_style_baseline"] = {"vocab_size": len(base), **measure(base, held)}
        ours, theirs = report["ours"]["tokens"], report["gpt2_style_baseline"]["tokens"]
        report["token_ratio_baseline_over_ours"] = round(theirs / ours, 4) if ours else None
    report["seconds"] = round(time.time() - t0, 2)
    return report
