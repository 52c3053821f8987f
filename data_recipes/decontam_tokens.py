"""Tokens and hashes for decontamination (data_recipes/decontam.py), for many texts in one numpy pass.

A token is a single CJK character or a run of latin letters/digits, after NFKC and lower case (the
regex `_TOKEN_RE` defines them; `tokenize` computes the same vectorised, tests/unit/test_decontam.py
checks the two agree), minus lone letters a-e, which are option labels ("A." "(B)" "C、" anywhere).
Whitespace and punctuation make no token, so spacing and full/half-width punctuation do not matter.
Token values are uint64 (a CJK character's code point, a hash of a latin/digit run); a k-gram hash
is a sum of token values times per-position multipliers plus a per-length constant, mod 2**64, fixed
by a seed so that every process and run agrees.

    toks, text_of, off = tokenize(["下列说法正确的是", "A. 北京"])   # text i: toks[off[i]:off[i + 1]]
    grams = kgram_hashes(toks, [8])[8]                             # hash of the 8 tokens at each position
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

import numpy as np

MAX_NGRAM = 63
_CJK = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FFFF))
_LABELS = np.array([ord(c) for c in "abcde"], dtype=np.uint64)
_RUN_BIT = np.uint64(1 << 63)            # latin/digit run tokens; CJK tokens are code points (< 2**21)
_rng = np.random.default_rng(20240615)   # fixed: hashes must agree across processes and runs
_MUL = _rng.integers(1, 2**63, size=MAX_NGRAM + 1, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd, per position
_LEN = _rng.integers(1, 2**63, size=MAX_NGRAM + 2, dtype=np.uint64)                        # per k-gram length
_RUN_BASE = np.uint64(1_000_003)
_classes: np.ndarray | None = None
_SEP = np.uint64(1)                      # the token between two texts; no real token has this value
_TOKEN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]|[a-z0-9]+")


def _char_classes() -> np.ndarray:
    """Per code point below 0x30000: CJK (1), latin letter or digit after lower() (2), and 4 where NFKC
    would change the tokens it makes (full-width letters and digits, circled numbers, compatibility
    ideographs ...) or where NFKC may fold it into the letter before it (combining marks). Texts with
    no 4 skip NFKC: full-width punctuation, the common case in Chinese, makes NFKC slow and changes
    no token. Built once, on first use (~0.05 s)."""
    global _classes
    if _classes is None:
        table = np.zeros(0x30000, dtype=np.uint8)
        for lo, hi in _CJK:
            table[lo:min(hi, 0x2FFFF) + 1] = 1
        table[[ord(c) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]] = 2
        for cp in range(0x30000):
            c = chr(cp)
            n = unicodedata.normalize("NFKC", c)
            if unicodedata.combining(c) or (n != c and _TOKEN_RE.findall(n.lower()) != _TOKEN_RE.findall(c.lower())):
                table[cp] |= 4
        _classes = table
    return _classes


def tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All texts at once: (token values uint64, text index of each token, offsets: text i's tokens are
    [off[i], off[i + 1]), the last of them a separator). A CJK token's value is its code point, a
    latin/digit run's a hash of it; the separator's (_SEP) is in no benchmark key, so no n-gram that
    crosses from one text into the next can match. Same tokens as _TOKEN_RE over NFKC + lower case,
    minus single letters a-e (tests/unit/test_decontam.py)."""
    norm = [t.lower() for t in texts]
    for again in (True, False):
        starts = np.cumsum([0] + [len(t) + 1 for t in norm])   # "\n" after each text becomes _SEP
        cp = np.frombuffer(("\n".join(norm) + "\n").encode("utf-32-le"), dtype=np.uint32)
        cls = _char_classes()[np.minimum(cp, 0x2FFFF)]
        cls[cp > 0x2FFFF] = 0              # beyond the CJK ranges of _TOKEN_RE: no token, no NFKC change
        odd = np.nonzero(cls & 4)[0]
        if not again or not len(odd):
            break
        for i in np.unique(np.searchsorted(starts, odd, side="right") - 1).tolist():
            norm[i] = unicodedata.normalize("NFKC", texts[i]).lower()
    cp = cp.astype(np.uint64)
    alnum = (cls & 2).astype(bool)
    run_start = alnum & ~np.concatenate(([False], alnum[:-1]))
    vals = np.where(cls & 1, cp, np.uint64(0))
    if alnum.any():                     # polynomial hash of each run, all runs at once
        pos = np.nonzero(alnum)[0]
        first = np.nonzero(run_start[pos])[0]             # where each run begins, within `pos`
        run_of = np.cumsum(run_start[pos]) - 1
        within = np.arange(len(pos)) - first[run_of]
        powers = np.cumprod(np.full(int(within.max()) + 1, _RUN_BASE, dtype=np.uint64))  # wraps mod 2**64
        h = np.add.reduceat(cp[pos] * powers[within], first)
        length = np.diff(np.append(first, len(pos)))
        h = (h * _MUL[0] + length.astype(np.uint64)) | _RUN_BIT
        label = (length == 1) & np.isin(cp[pos[first]], _LABELS)   # "a".."e" alone: an option label
        vals[pos[first]] = h
        run_start[pos[first[label]]] = False
    sep = starts[1:] - 1
    vals[sep] = _SEP
    is_tok = (cls & 1).astype(bool) | run_start
    is_tok[sep] = True
    keep = np.nonzero(is_tok)[0]
    off = np.searchsorted(keep, starts)
    return vals[keep], np.repeat(np.arange(len(texts)), np.diff(off)), off


def kgram_hashes(toks: np.ndarray, lengths: Iterable[int]) -> dict[int, np.ndarray]:
    """{k: hash of the k tokens starting at each position} for the given lengths. Hashes of different
    lengths differ; computed incrementally, one multiply-add per length up to the longest."""
    lengths, out = set(lengths), {}
    acc = np.zeros(len(toks), dtype=np.uint64)
    for k in range(1, max(lengths, default=0) + 1):
        m = max(len(toks) - k + 1, 0)
        acc = acc[:m]
        acc += toks[k - 1:k - 1 + m] * _MUL[k - 1]
        if k in lengths:
            out[k] = acc + _LEN[k]
    return out


def bit_filter(keys: np.ndarray) -> tuple[int, np.ndarray]:
    """A bit per hash prefix, about 64 bits per key: most text n-grams are ruled out by one cached bit
    instead of a binary search over the keys. Up to 2**20 bits as bools, else packed (2 MB at most)."""
    bits = int(np.clip(np.ceil(np.log2(max(len(keys), 1) * 64)), 10, 24))
    table = np.zeros(1 << bits, dtype=bool)
    table[keys >> np.uint64(64 - bits)] = True
    return bits, (table if bits <= 20 else np.packbits(table, bitorder="little"))


def maybe_in(bit_filter: tuple[int, np.ndarray], h: np.ndarray) -> np.ndarray:
    bits, table = bit_filter
    i = h >> np.uint64(64 - bits)
    if bits <= 20:
        return table[i]
    return (table[i >> np.uint64(3)] >> (i & np.uint64(7)).astype(np.uint8)) & 1 == 1
