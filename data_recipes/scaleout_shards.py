"""Token shards beyond one machine, byte-identical to `make data`'s.

`pretrain` cuts every shard into blocks that never cross a shard boundary, so where shards end
changes what a run trains on: the shards must be the ones `ShardWriter` writes for the same token
stream, not one set per task. So:

1. tokenize (every task): the task's kept documents, in order, to `tok/<task>.bin` (ids with the
   separator after each document) and `tok/<task>.lens.npy` (tokens per document);
2. plan (the driver, from the lengths only): `plan_shards` applies ShardWriter's rule (a shard
   ends after the first document that brings it to `shard_size_tokens`) across task boundaries;
3. assemble (every task, a contiguous run of shards each): `write_shard` copies each shard's
   pieces out of the task files, hashes it and writes its `.docs.npy`, the entry the manifest lists.

Cost: the token stream is written twice (2-4 bytes per token); the temporary files go at the end.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from data_recipes.scaleout_plan import cut_after_newline

COPY_BLOCK = 64 << 20


def line_chunks(path: str | Path, size: int) -> list[tuple[str, int, int]]:
    """(path, start, end) byte ranges of about `size` bytes, each ending after a line end."""
    path = Path(path)
    total = path.stat().st_size if path.is_file() else 0
    out, start = [], 0
    if total:
        with open(path, "rb") as f:
            while start < total:
                end = cut_after_newline(f, start + max(size, 1), total)
                out.append((str(path), start, end))
                start = end
    return out


def plan_shards(lens: list[np.ndarray], limit: int) -> list[list[tuple[int, int, int, int, int]]]:
    """Each shard as pieces (task, first doc, end doc, first token, end token) of the tasks' outputs."""
    limit = max(int(limit), 1)
    shards: list[list[tuple[int, int, int, int, int]]] = []
    cur: list[tuple[int, int, int, int, int]] = []
    filled = 0                                   # tokens already in the open shard
    for task, ln in enumerate(lens):
        cums = np.cumsum(np.asarray(ln, dtype=np.int64))
        i = 0
        while i < len(cums):
            base = int(cums[i - 1]) if i else 0
            j = int(np.searchsorted(cums, limit - filled + base, side="left"))   # first doc that fills it
            if j < len(cums):
                cur.append((task, i, j + 1, base, int(cums[j])))
                shards.append(cur)
                cur, filled, i = [], 0, j + 1
            else:
                cur.append((task, i, len(cums), base, int(cums[-1])))
                filled += int(cums[-1]) - base
                i = len(cums)
    if cur:
        shards.append(cur)
    return shards


def write_shard(index: int, pieces, tok_dir: Path, lens: dict[int, np.ndarray], out_dir: Path, dtype: str) -> dict:
    """Write shard `index` from its pieces; the manifest entry `ShardWriter` would give it."""
    itemsize = np.dtype(dtype).itemsize
    path = out_dir / "shards" / f"shard_{index:05d}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    sha, n = hashlib.sha256(), 0
    ends = []
    with open(path, "wb") as out:
        for task, d0, d1, t0, t1 in pieces:
            with open(tok_dir / f"{task:05d}.bin", "rb") as f:
                f.seek(t0 * itemsize)
                left = (t1 - t0) * itemsize
                while left > 0:
                    block = f.read(min(COPY_BLOCK, left))
                    if not block:
                        raise RuntimeError(f"{tok_dir / f'{task:05d}.bin'} is shorter than its lengths say")
                    out.write(block)
                    sha.update(block)
                    left -= len(block)
            ends.append(n + np.cumsum(lens[task][d0:d1]))
            n += t1 - t0
    docs = path.with_suffix(".docs.npy")
    np.save(docs, np.concatenate(ends).astype(np.int64) if ends else np.zeros(0, dtype=np.int64))
    return {"file": str(path.relative_to(out_dir)), "docs_file": str(docs.relative_to(out_dir)),
            "sha256": sha.hexdigest(), "num_tokens": n, "num_docs": int(sum(p[2] - p[1] for p in pieces))}
