"""Decontamination tokens and hashes against a plain-Python re-computation of their definitions
(closes mutmut survivors of data_recipes/decontam_tokens.py; the equivalent ones are in
tests/mutation_equivalent.md)."""
import math
import unicodedata

import numpy as np
import pytest

from data_recipes import decontam_tokens as dt

M64 = 2 ** 64
# code points at the edges of the CJK ranges and of the class table, full-width forms, a compatibility
# ideograph, ligatures, a plane-3 character (beyond the table) and a tag character
EDGES = "\u33ff\u3400\u4dbf\u4dc0\u9fff\ua000\uf8ff\uf900\ufaff\ufb00\U0001ffff\U00020000\U0002ffff\U00030000\U000e0020"
TEXTS = ["下列说法正确的是 A. 北京 (B) 上海", "Hello World 42x, c d f", "ＡＢＣ１２３ ｄ 水", EDGES, "", "e"]


def value(tok: str) -> int:
    """A CJK character's code point; a latin/digit run's polynomial hash (base 1_000_003, mod 2**64),
    times the first position multiplier plus its length, with the top bit set."""
    if len(tok) == 1 and not tok.isascii():
        return ord(tok)
    h = sum(ord(ch) * pow(int(dt._RUN_BASE), j + 1, M64) for j, ch in enumerate(tok)) % M64
    return ((h * int(dt._MUL[0]) + len(tok)) % M64) | (1 << 63)


def tokens_by_hand(text: str) -> list[int]:
    toks = dt._TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower())
    return [value(t) for t in toks if not (len(t) == 1 and t in "abcde")] + [int(dt._SEP)]


def test_token_values_equal_their_definition():
    toks, text_of, off = dt.tokenize(TEXTS)
    want = [tokens_by_hand(t) for t in TEXTS]
    assert [toks[off[i]:off[i + 1]].tolist() for i in range(len(TEXTS))] == want
    assert text_of.tolist() == [i for i, w in enumerate(want) for _ in w]
    assert off.tolist() == np.cumsum([0] + [len(w) for w in want]).tolist()


def test_kgram_hashes_equal_their_definition():
    toks, _, _ = dt.tokenize(["一二三四五六七八九十 alpha beta 2024"])
    t = [int(x) for x in toks]
    grams = dt.kgram_hashes(toks, [1, 3, len(t)])
    for k in (1, 3, len(t)):
        want = [(sum(t[i + j] * int(dt._MUL[j]) for j in range(k)) + int(dt._LEN[k])) % M64
                for i in range(len(t) - k + 1)]
        assert grams[k].tolist() == want
    assert dt.kgram_hashes(toks, []) == {}
    long = np.arange(2, 2 + dt.MAX_NGRAM, dtype=np.uint64)
    assert len(dt.kgram_hashes(long, [dt.MAX_NGRAM])[dt.MAX_NGRAM]) == 1


@pytest.mark.parametrize("n", [1, 5000, 16384, 16385, 20000, 300_000])
def test_bit_filter_size_and_no_false_negatives(n):
    keys = np.random.default_rng(n).integers(0, M64 - 1, size=n, dtype=np.uint64)
    f = dt.bit_filter(keys)
    bits = min(24, max(10, math.ceil(math.log2(64 * n))))      # ~64 bits per key, 2**10 .. 2**24
    assert f[0] == bits and f[1].nbytes == ((1 << bits) if bits <= 20 else (1 << bits) // 8)
    assert dt.maybe_in(f, keys).all()
    others = np.random.default_rng(n + 1).integers(0, M64 - 1, size=20000, dtype=np.uint64)
    assert dt.maybe_in(f, others).mean() < (0.05 if bits < 24 else 0.2)


def test_char_classes_as_documented():
    c = dt._char_classes()
    assert c[ord("，")] == 0 and c[ord("。")] == 0        # full-width punctuation: no token, no NFKC needed
    assert c[ord("Ａ")] == 4 and c[ord("１")] == 4         # full-width letters/digits: NFKC changes their tokens
    assert c[0xF900] == 1 | 4 and c[ord("水")] == 1 and c[ord("k")] == 2 and c[ord("\u0301")] == 4
    assert c[0x212A] == 0                                  # Kelvin sign: lower() already makes the token "k"
