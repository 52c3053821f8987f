"""Token shards: the format every consumer reads.

A data folder `runs/data/<name>/` holds
    tokenizer/                 HF tokenizer folder (tokenizer.json, tokenizer_config.json, chat template)
    shards/shard_00000.bin     raw little-endian token ids (uint16 when the vocab fits, else uint32);
                               every document is followed by the `<|endoftext|>` id
    shards/shard_00000.docs.npy  int64 array: end offset (exclusive, in tokens) of each document
    manifest.json              written last: {"stage": "data", "dtype", "vocab_size", "doc_sep_id",
                               "shards": [{"file", "docs_file", "sha256", "num_tokens", "num_docs"}],
                               "tokenizer_sha256", "content_hash", ...}

`open_shards` checks every shard's size and (optionally) hash against the manifest before use;
`iter_documents` yields each document's ids; `ShardWriter` writes the format (data_recipes/build.py).
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


class ShardWriter:
    """Appends documents (token ids already followed by the separator) to shard files in order,
    starting a new shard once `shard_size_tokens` is reached (documents never straddle shards).
    Output depends only on the token stream, so 1 and N tokenising processes give identical bytes."""

    def __init__(self, folder: str | Path, dtype: str, shard_size_tokens: int, rel_to: str | Path | None = None):
        import hashlib
        self._hashlib = hashlib
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rel_to = Path(rel_to) if rel_to else self.folder.parent
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.limit = max(int(shard_size_tokens), 1)
        self.entries: list[dict] = []
        self._f = None

    def _open(self) -> None:
        i = len(self.entries)
        self._path = self.folder / f"shard_{i:05d}.bin"
        self._f = open(self._path, "wb")
        self._sha = self._hashlib.sha256()
        self._n = 0
        self._ends: list[int] = []

    def _close(self) -> None:
        if self._f is None:
            return
        self._f.close()
        docs = self._path.with_suffix(".docs.npy")
        np.save(docs, np.asarray(self._ends, dtype=np.int64))
        self.entries.append({"file": str(self._path.relative_to(self.rel_to)),
                             "docs_file": str(docs.relative_to(self.rel_to)),
                             "sha256": self._sha.hexdigest(), "num_tokens": self._n, "num_docs": len(self._ends)})
        self._f = None

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """`tokens`: the concatenated documents of a batch; `lengths`: tokens per document."""
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        lengths = np.asarray(lengths, dtype=np.int64)
        i, start = 0, 0
        while i < len(lengths):
            if self._f is None:
                self._open()
            ends = self._n + np.cumsum(lengths[i:])
            full = np.nonzero(ends >= self.limit)[0]
            j = int(full[0]) + 1 if len(full) else len(lengths) - i     # documents that go in this shard
            n = int(ends[j - 1] - self._n)
            piece = tokens[start:start + n].tobytes()
            self._f.write(piece)
            self._sha.update(piece)
            self._ends.extend(ends[:j].tolist())
            self._n += n
            start += n
            i += j
            if self._n >= self.limit:
                self._close()

    def close(self) -> list[dict]:
        self._close()
        return self.entries

    @property
    def num_tokens(self) -> int:
        return sum(e["num_tokens"] for e in self.entries) + (self._n if self._f is not None else 0)


def iter_documents(data_dir: str | Path, verify_hash: bool = False):
    """Yield each document's token ids (separator included) from a finished data folder."""
    manifest, arrays = open_shards(data_dir, verify_hash=verify_hash)
    for entry, arr in zip(manifest["shards"], arrays):
        ends = np.load(Path(data_dir) / entry["docs_file"]) if "docs_file" in entry else \
            np.load((Path(data_dir) / entry["file"]).with_suffix(".docs.npy"))
        start = 0
        for end in ends.tolist():
            yield np.asarray(arr[start:end])
            start = end
