"""Token shards: the format every consumer reads.

A data folder `runs/data/<name>/` holds
    tokenizer/                 HF tokenizer folder (tokenizer.json, tokenizer_config.json, chat template)
    shards/shard_00000.bin     raw little-endian token ids (uint16 when the vocab fits, else uint32);
                               every document is followed by the `<|endoftext|>` id
    shards/shard_00000.docs.npy  int64 array: end offset (exclusive, in tokens) of each document
    manifest.json              written last: {"stage": "data", "dtype", "vocab_size", "doc_sep_id",
                               "shards": [{"file", "sha256", "num_tokens", "num_docs"}],
                               "tokenizer_sha256", "content_hash", ...}

`open_shards` checks every shard's size and (optionally) hash against the manifest before use.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.runs import RunError, read_manifest, sha256_file


def dtype_for_vocab(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 65536 else "uint32"


def read_shard(path: str | Path, dtype: str) -> np.ndarray:
    """A read-only memory map of one shard's tokens."""
    return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")


def open_shards(data_dir: str | Path, verify_hash: bool = True) -> tuple[dict, list[np.ndarray]]:
    """(manifest, [token memmap per shard]) for a finished data folder; clear errors otherwise."""
    data_dir = Path(data_dir)
    if not (data_dir / "manifest.json").is_file():
        raise RunError(f"{data_dir} has no manifest.json: not a finished data folder (run `make data` first)")
    manifest = read_manifest(data_dir)
    arrays = []
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for entry in manifest["shards"]:
        p = data_dir / entry["file"]
        if not p.is_file():
            raise RunError(f"shard missing: {p} (listed in {data_dir / 'manifest.json'})")
        if p.stat().st_size != entry["num_tokens"] * itemsize:
            raise RunError(f"shard changed after its manifest: {p} has {p.stat().st_size} bytes, "
                           f"manifest says {entry['num_tokens']} tokens x {itemsize} bytes")
        if verify_hash and sha256_file(p) != entry["sha256"]:
            raise RunError(f"shard changed after its manifest: {p} (sha256 differs from manifest.json)")
        arrays.append(read_shard(p, manifest["dtype"]))
    return manifest, arrays
