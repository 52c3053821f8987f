"""Dedupe beyond one machine with the one-machine decisions (`dedupe.Deduper`), from the same keys.

`make data` keeps a document unless its exact hash, or one of its MinHash LSH band keys, is
already held by an earlier *kept* document. That is a sweep in document order, not connected
components (which datatrove's `MinhashDedupCluster` computes: with A~B and B~C but not A~C, we keep
A and C, components keep A only). The sweep only ever looks up keys that two or more documents
share, so it splits into the stages datatrove's MinHash pipeline has:

1. signatures (every task): each cleaned document's exact hash and band keys, as (key, doc) pairs,
   written to bucket `key % buckets` (`partition`);
2. buckets (one task per bucket): sort the pairs, keep only keys held by two or more documents
   (`collisions`); a bucket holds a range of key values, not one band, because one machine keeps
   the keys of all bands in one set (two different bands' keys that happen to be equal count);
3. clusters (one task): the in-order sweep over the colliding documents only (`sweep`): usually a
   small share of the corpus, and never more than its duplicates and their first copies;
4. filter (every task): drop the documents the sweep named.

A document id is `task << DOC_BITS | index in the task's cleaned output`: tasks hold contiguous
parts of the input in order, so id order is document order.
"""
from __future__ import annotations

import numpy as np

DOC_BITS = 40                      # up to 1.1e12 cleaned documents per task
EXACT, NEAR = 1, 2                 # reasons in the sweep's output


def doc_ids(rank: int, count: int, start: int = 0) -> np.ndarray:
    return (np.uint64(rank) << np.uint64(DOC_BITS)) + np.arange(start, start + count, dtype=np.uint64)


def fix_keys(keys: np.ndarray) -> np.ndarray:
    """`dedupe.U64Set` stores key 0 as 1 (0 marks an empty slot): keys 0 and 1 are one key there."""
    keys = np.asarray(keys, dtype=np.uint64)
    return np.where(keys == 0, np.uint64(1), keys)


def partition(keys: np.ndarray, docs: np.ndarray, buckets: int) -> list[np.ndarray]:
    """(n, 2) uint64 [key, doc] arrays, one per bucket `key % buckets`."""
    pairs = np.stack([fix_keys(keys), np.asarray(docs, dtype=np.uint64)], axis=1) if len(keys) else \
        np.zeros((0, 2), dtype=np.uint64)
    which = pairs[:, 0] % np.uint64(buckets)
    return [pairs[which == b] for b in range(buckets)]


def collisions(pairs: np.ndarray) -> np.ndarray:
    """The [key, doc] rows whose key is held by two or more rows, sorted by (key, doc)."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    k = pairs[:, 0]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    counts = np.diff(np.r_[starts, len(k)])
    return pairs[np.repeat(counts >= 2, counts)]


def _by_doc(pairs: np.ndarray, docs: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    pairs = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))] if len(pairs) else pairs.reshape(0, 2)
    lo = np.searchsorted(pairs[:, 1], docs, "left")
    hi = np.searchsorted(pairs[:, 1], docs, "right")
    return pairs[:, 0].tolist(), lo.tolist(), hi.tolist()


def sweep(exact: np.ndarray, near: np.ndarray) -> np.ndarray:
    """(n, 2) uint64 [doc, EXACT or NEAR] of the dropped documents, in document order, from the
    colliding [key, doc] pairs: `Deduper.check` applied in order to every document that has one."""
    docs = np.union1d(exact[:, 1], near[:, 1]).astype(np.uint64)
    ex_keys, ex_lo, ex_hi = _by_doc(exact, docs)
    nr_keys, nr_lo, nr_hi = _by_doc(near, docs)
    kept_exact: set[int] = set()
    kept_near: set[int] = set()
    dropped: list[tuple[int, int]] = []
    for d, a, b, c, e in zip(docs.tolist(), ex_lo, ex_hi, nr_lo, nr_hi):
        xs, ns = ex_keys[a:b], nr_keys[c:e]
        if any(k in kept_exact for k in xs):
            dropped.append((d, EXACT))
        elif any(k in kept_near for k in ns):
            dropped.append((d, NEAR))
        else:
            kept_exact.update(xs)
            kept_near.update(ns)
    return np.asarray(dropped, dtype=np.uint64).reshape(-1, 2)


def dropped_in_task(dropped: np.ndarray, rank: int) -> dict[int, int]:
    """{index in the task's cleaned output: reason} for one task."""
    lo, hi = (np.uint64(r) << np.uint64(DOC_BITS) for r in (rank, rank + 1))
    docs = dropped[:, 0]
    a, b = np.searchsorted(docs, lo), np.searchsorted(docs, hi)
    mask = np.uint64((1 << DOC_BITS) - 1)
    return dict(zip((docs[a:b] & mask).tolist(), dropped[a:b, 1].tolist()))
