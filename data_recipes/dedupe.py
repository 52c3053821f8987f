"""Deduplication at three levels.

- Files: identity = MD5 of the whole file when it is at most `full_hash_max_bytes`, else MD5 of
  (size, first and last `head_tail_bytes`). Byte-identical files (a mirror copied twice, a shard
  downloaded under two names) are reported in report.json and, by default, read once.
- Exact documents: a 64-bit BLAKE2b of the cleaned text.
- Near documents: MinHash (datasketch, character n-gram shingles) split into LSH bands; a document
  that shares any band with an earlier kept document is a near duplicate.

Memory: the index keeps only 64-bit keys (one per LSH band per kept document, one exact hash per
kept document) in `U64Set`, an open-addressing table over one numpy array kept at most half full:
16 bytes per key, about 10 keys per document at the default threshold, i.e. ~170 bytes per kept
document (~170 MB per million documents) instead of datasketch's MinHashLSH dictionaries of Python
objects (~1-2 KB per document). Signatures are not stored, so candidates are not re-checked
against the exact Jaccard: with the (bands, rows) that datasketch picks for the threshold, pairs
well below it collide rarely (see `lsh_params`). Beyond one machine, `data_recipes.scaleout`
makes the same decisions from the same keys as datatrove stages (README, scale-out).
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from data_recipes.clean import char_ngram_hashes


# ---- files -----------------------------------------------------------------------------------------
def file_identity(path: str | Path, full_hash_max_bytes: int = 64 << 20, head_tail_bytes: int = 1 << 20) -> str:
    """'md5:<hex>:<size>' of the whole file, or of size + head + tail for files above the bound."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.md5()
    with open(path, "rb") as f:
        if size <= full_hash_max_bytes:
            while block := f.read(1 << 20):
                h.update(block)
            kind = "md5"
        else:
            h.update(str(size).encode())
            h.update(f.read(head_tail_bytes))
            f.seek(max(size - head_tail_bytes, 0))
            h.update(f.read(head_tail_bytes))
            kind = "md5ht"
    return f"{kind}:{h.hexdigest()}:{size}"


# ---- a compact set of 64-bit keys ------------------------------------------------------------------
class U64Set:
    """Open-addressing hash set of uint64 keys in one numpy array (0 marks an empty slot)."""

    def __init__(self, capacity: int = 1 << 16):
        cap = 1 << max(4, (capacity - 1).bit_length())
        self._a = np.zeros(cap, dtype=np.uint64)
        self._mask = cap - 1
        self.n = 0

    @staticmethod
    def _fix(key: int) -> int:
        return key or 1          # 0 is the empty marker

    def _slot(self, key: int) -> int:
        a, mask = self._a, self._mask
        i = (key ^ (key >> 29)) & mask
        while True:
            v = int(a[i])
            if v == 0 or v == key:
                return i
            i = (i + 1) & mask

    def __contains__(self, key: int) -> bool:
        key = self._fix(int(key))
        return int(self._a[self._slot(key)]) == key

    def add(self, key: int) -> bool:
        """Insert; True when the key was new."""
        key = self._fix(int(key))
        i = self._slot(key)
        if int(self._a[i]) == key:
            return False
        self._a[i] = key
        self.n += 1
        if 2 * self.n > len(self._a):
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._a[self._a != 0]
        self._a = np.zeros(2 * len(self._a), dtype=np.uint64)
        self._mask = len(self._a) - 1
        self.n = 0
        for k in old.tolist():
            self._a[self._slot(k)] = k
            self.n += 1

    @property
    def nbytes(self) -> int:
        return self._a.nbytes

    def __len__(self) -> int:
        return self.n


# ---- exact -----------------------------------------------------------------------------------------
# (operator, reason) of a dedupe drop, in quarantine.jsonl; data_recipes/scaleout_stages.py writes the same.
EXACT_DROP = ("exact_dedupe", "exact duplicate of an earlier document")
NEAR_DROP = ("near_dedupe", "shares a MinHash LSH band with an earlier document")


def exact_key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


# ---- near (MinHash LSH) ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising equal-weight false positive + false negative area around
    `threshold`: datasketch's criterion (`MinHashLSH`), integrated on a grid instead of with
    scipy's quad (2.6 s per call there, which every worker would pay)."""
    s = np.linspace(0.0, 1.0, 2001)
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1.0 - (1.0 - s ** r) ** b                     # probability of becoming a candidate
            fp = np.trapezoid(np.where(s <= threshold, p, 0.0), s)
            fn = np.trapezoid(np.where(s >= threshold, 1.0 - p, 0.0), s)
            if 0.5 * fp + 0.5 * fn < best_err:
                best, best_err = (b, r), 0.5 * fp + 0.5 * fn
    return best


def collision_probability(jaccard: float, bands: int, rows: int) -> float:
    """Chance that two documents with this Jaccard similarity share at least one band."""
    return 1.0 - (1.0 - jaccard ** rows) ** bands


class MinHasher:
    """Band keys of a document's MinHash signature; deterministic for a given (num_perm, seed)."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram_chars: int = 5, seed: int = 1):
        from datasketch import MinHash
        self.num_perm, self.ngram_chars, self.seed = num_perm, ngram_chars, seed
        self.bands, self.rows = lsh_params(threshold, num_perm)
        template = MinHash(num_perm=num_perm, seed=seed)
        self._perm, self._scheme = template.permutations, template.scheme
        self._band_salt = (np.arange(self.bands, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)

    def signature(self, text: str) -> np.ndarray:
        from datasketch import MinHash
        # Shingle hashes are computed vectorised and fed as ints (hashfunc=int): datasketch's default
        # SHA-1 per shingle is 2x slower and gives the same estimator.
        m = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=int, permutations=self._perm,
                    scheme=self._scheme)
        h = char_ngram_hashes(text, self.ngram_chars) & np.uint64(0xFFFFFFFF)
        m.update_batch(h.tolist())
        return m.hashvalues

    def band_keys(self, text: str) -> np.ndarray:
        sig = self.signature(text)[: self.bands * self.rows].astype(np.uint64).reshape(self.bands, self.rows)
        with np.errstate(over="ignore"):
            keys = self._band_salt.copy()
            for j in range(self.rows):
                keys = (keys ^ sig[:, j]) * np.uint64(1099511628211)
            keys ^= keys >> np.uint64(32)
        return keys


class Deduper:
    """The in-order dedupe decisions of a build (main process only)."""

    def __init__(self, exact: bool = True, near: bool = True, capacity: int = 1 << 16):
        self.exact = U64Set(capacity) if exact else None
        self.near = U64Set(capacity * 8) if near else None

    def check(self, exact_hash: int | None, band_keys: np.ndarray | None) -> tuple[str, str] | None:
        """None to keep (and remember) the document, else (operator, reason)."""
        if self.exact is not None and exact_hash is not None and exact_hash in self.exact:
            return EXACT_DROP
        if self.near is not None and band_keys is not None:
            keys = band_keys.tolist()
            for k in keys:
                if k in self.near:
                    return NEAR_DROP
            for k in keys:
                self.near.add(k)
        if self.exact is not None and exact_hash is not None:
            self.exact.add(exact_hash)
        return None

    @property
    def index_bytes(self) -> int:
        return sum(s.nbytes for s in (self.exact, self.near) if s is not None)
