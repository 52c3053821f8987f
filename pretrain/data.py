"""Fixed-length training blocks over token shards, with a resumable, hash-checked order.

Blocks: each shard (data_recipes/shards.py format, read only through `open_shards`) is cut into
blocks of `seq_len + 1` tokens with stride `seq_len` (input = block[:-1], target = block[1:]); a
block never crosses a shard boundary, a shard's tail shorter than a block is not used. Global
block ids number the blocks of every shard of every source in order.

Order: one global permutation per epoch, drawn from numpy's PCG64 seeded with (seed, epoch). A
step takes the next `global_batch` ids from the cursor; rank r of W trains positions r, r+W, ...
of that slice, so each rank sees its own random subset and the order does not depend on the
number of ranks (1 process with 2 accumulation steps trains exactly what 2 processes do).

State (saved with every checkpoint): sources, every shard's sha256 and size, seed, epoch, cursor,
and the current epoch's order itself (8 bytes per block: 4 MB for 1B tokens at 2048). On resume
each shard is hashed again and a changed or missing one stops the run naming it.

Adding data on resume (`add_data`): the new folder's shards are hashed; a shard whose content is
already in the run is refused; the new blocks are shuffled together with the not-yet-trained
remainder of the current epoch only. Blocks already trained stay where they were, so no block is
trained twice in the epoch and new blocks appear only after the resume point.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from core.runs import RunError, atomic_write_json, sha256_file, tokenizer_hash
from data_recipes.shards import open_shards


class DataStateError(RunError):
    """Shards that do not match the checkpoint, duplicate shards, incompatible sources."""
    kind = "data"


def _permutation(seed: int, epoch: int, n: int, salt: int = 0) -> np.ndarray:
    return np.random.Generator(np.random.PCG64([seed, epoch, salt])).permutation(n).astype(np.int64)


def hash_files(paths: list[Path]) -> list[str]:
    return [sha256_file(p) for p in paths]


class BlockLoader:
    def __init__(self, seq_len: int, seed: int, hasher=hash_files):
        self.seq_len = seq_len
        self.seed = seed
        # paths -> sha256s; the trainer passes one that splits the files over ranks.
        self.hasher = hasher
        self.sources: list[dict] = []      # {"path", "tokenizer_sha256", "added_at_step"}
        self.shards: list[dict] = []       # {"source", "file", "sha256", "num_tokens", "first_block", "num_blocks"}
        self.arrays: list[np.ndarray] = []
        self.dtype: str | None = None
        self.epoch = 0
        self.cursor = 0
        self.order = np.zeros(0, dtype=np.int64)
        self._starts: np.ndarray    # every shard's first block id, rebuilt by _add_source

    # ---- building --------------------------------------------------------------------------------
    @classmethod
    def fresh(cls, data_dir: str | Path, seq_len: int, seed: int, hasher=hash_files) -> "BlockLoader":
        loader = cls(seq_len, seed, hasher)
        loader._add_source(Path(data_dir), step=0)
        if loader.num_blocks == 0:
            raise DataStateError(f"{data_dir}: no shard holds a full block of {seq_len + 1} tokens")
        loader.order = _permutation(seed, 0, loader.num_blocks)
        return loader

    @property
    def num_blocks(self) -> int:
        return sum(s["num_blocks"] for s in self.shards)

    def _add_source(self, data_dir: Path, step: int, expected: list[dict] | None = None) -> list[int]:
        """Open a data folder's shards, hashing every one: against the checkpoint's record
        (`expected`, on resume) or against the folder's manifest (new data)."""
        manifest, arrays = open_shards(data_dir, verify_hash=False)  # sizes checked; hashes below
        if self.dtype is not None and manifest["dtype"] != self.dtype:
            raise DataStateError(f"{data_dir}: token dtype {manifest['dtype']} differs from the run's {self.dtype}")
        tok = manifest.get("tokenizer_sha256")
        if self.sources and tok != self.sources[0]["tokenizer_sha256"]:
            raise DataStateError(f"{data_dir}: its tokenizer (sha256 {tok}) is not the run's tokenizer "
                                 f"({self.sources[0]['tokenizer_sha256']}); its token ids mean other things")
        self.dtype = manifest["dtype"]
        if expected is not None and len(expected) != len(manifest["shards"]):
            listed = {e["file"] for e in manifest["shards"]}
            gone = [e["file"] for e in expected if e["file"] not in listed]
            raise DataStateError(f"shard missing: {data_dir}/{gone[0]} was trained on by this run but "
                                 f"{data_dir}/manifest.json no longer lists it" if gone else
                                 f"{data_dir}: shard list changed since the checkpoint ({len(expected)} shards "
                                 f"recorded, manifest lists {len(manifest['shards'])})")
        known = {s["sha256"]: s for s in self.shards}
        new_ids: list[int] = []
        hashes = self.hasher([data_dir / e["file"] for e in manifest["shards"]])
        for i, (entry, arr, got) in enumerate(zip(manifest["shards"], arrays, hashes)):
            path = data_dir / entry["file"]
            if expected is not None:  # resume: the checkpoint's hashes are the truth
                want = expected[i]
                if entry["file"] != want["file"]:
                    raise DataStateError(f"{data_dir}: shard list changed since the checkpoint "
                                         f"(expected {want['file']}, manifest lists {entry['file']})")
                if got != want["sha256"]:
                    raise DataStateError(f"shard changed since the checkpoint: {path} (sha256 {got[:12]}..., "
                                         f"checkpoint recorded {want['sha256'][:12]}...). Restore it or start a new run.")
                sha = got
            else:
                if got != entry["sha256"]:
                    raise DataStateError(f"shard changed after its manifest: {path} "
                                         f"(sha256 differs from {data_dir / 'manifest.json'})")
                sha = got
                if sha in known:
                    raise DataStateError(f"shard already in this run: {path} has the same content as "
                                         f"{known[sha]['source']}/{known[sha]['file']}; refusing to train it twice")
            n_blocks = max((int(entry["num_tokens"]) - 1) // self.seq_len, 0)
            first = self.num_blocks
            self.shards.append({"source": str(data_dir), "file": entry["file"], "sha256": sha,
                                "num_tokens": int(entry["num_tokens"]), "first_block": first,
                                "num_blocks": n_blocks})
            known[sha] = self.shards[-1]
            self.arrays.append(arr)
            new_ids.extend(range(first, first + n_blocks))
        self.sources.append({"path": str(data_dir), "tokenizer_sha256": tok, "added_at_step": step,
                             "content_hash": manifest.get("content_hash")})
        self._starts = np.array([s["first_block"] for s in self.shards], dtype=np.int64)
        return new_ids

    def add_data(self, data_dir: str | Path, step: int) -> int:
        """Mix a new data folder's blocks into the not-yet-trained remainder of this epoch."""
        data_dir = Path(data_dir)
        if any(Path(s["path"]).resolve() == data_dir.resolve() for s in self.sources):
            return 0  # added by an earlier resume of this run: its shards are checked like the rest
        new_ids = np.asarray(self._add_source(data_dir, step=step), dtype=np.int64)
        rest = np.concatenate([self.order[self.cursor:], new_ids])
        mixed = rest[_permutation(self.seed, self.epoch, len(rest), salt=len(self.sources))]
        self.order = np.concatenate([self.order[:self.cursor], mixed])
        return len(new_ids)

    # ---- iteration -------------------------------------------------------------------------------
    def next_ids(self, n: int) -> np.ndarray:
        """The next `n` global block ids (all ranks' blocks for one optimizer step)."""
        out = []
        while n > 0:
            if self.cursor >= len(self.order):
                self.epoch += 1
                self.cursor = 0
                self.order = _permutation(self.seed, self.epoch, self.num_blocks)
            take = min(n, len(self.order) - self.cursor)
            out.append(self.order[self.cursor:self.cursor + take])
            self.cursor += take
            n -= take
        return np.concatenate(out)

    def tokens(self, block_ids: np.ndarray) -> torch.Tensor:
        """[len(block_ids), seq_len + 1] int64 tokens."""
        shard_idx = np.searchsorted(self._starts, block_ids, side="right") - 1
        rows = []
        for b, si in zip(block_ids.tolist(), shard_idx.tolist()):
            off = (b - self.shards[si]["first_block"]) * self.seq_len
            rows.append(np.asarray(self.arrays[si][off:off + self.seq_len + 1], dtype=np.int64))
        return torch.from_numpy(np.stack(rows))

    # ---- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": 1, "seq_len": self.seq_len, "seed": self.seed, "epoch": self.epoch,
                "cursor": self.cursor, "num_blocks": self.num_blocks, "sources": self.sources,
                "shards": [{k: s[k] for k in ("source", "file", "sha256", "num_tokens")} for s in self.shards]}

    def save(self, folder: Path) -> None:
        atomic_write_json(folder / "data_state.json", self.state_dict())
        tmp = folder / ".data_order.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, self.order)
        tmp.replace(folder / "data_order.npy")

    @classmethod
    def load(cls, folder: Path, seq_len: int, seed: int, hasher=hash_files) -> "BlockLoader":
        """Rebuild the loader saved in a checkpoint folder, re-hashing every shard."""
        state = json.loads((folder / "data_state.json").read_bytes())   # json reads UTF-8 bytes itself
        if state["seq_len"] != seq_len or state["seed"] != seed:
            raise DataStateError(f"{folder}: checkpoint data state has seq_len={state['seq_len']}, seed={state['seed']}; "
                                 f"config has seq_len={seq_len}, seed={seed}")
        loader = cls(seq_len, seed, hasher)
        for src in state["sources"]:
            path = Path(src["path"])
            if not (path / "manifest.json").is_file():
                raise DataStateError(f"data folder missing: {path} (trained on by the run saved in {folder})")
            expected = [s for s in state["shards"] if s["source"] == src["path"]]
            loader._add_source(path, step=src["added_at_step"], expected=expected)
            loader.sources[-1].update(src)
        loader.epoch, loader.cursor = state["epoch"], state["cursor"]
        loader.order = np.load(folder / "data_order.npy")
        if loader.num_blocks != state["num_blocks"]:
            raise DataStateError(f"{folder}: {loader.num_blocks} blocks now, checkpoint recorded {state['num_blocks']}")
        return loader


def write_token_folder(out_dir: str | Path, tokenizer, texts: list[str], num_shards: int = 2) -> Path:
    """Write `texts` as a data folder in the data_recipes/shards.py format (tokenizer/, shards/,
    manifest.json last). A minimal writer for tests and the benchmark; `make data` is the real one."""
    from data_recipes.shards import dtype_for_vocab
    from data_recipes.tokenizer import document_separator_id
    from core.runs import sha256_tree
    out = Path(out_dir)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out / "tokenizer")
    sep = document_separator_id(tokenizer)
    dtype = dtype_for_vocab(len(tokenizer))
    per = -(-len(texts) // num_shards)
    entries = []
    for k in range(num_shards):
        ids, ends = [], []
        for text in texts[k * per:(k + 1) * per]:
            ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [sep])
            ends.append(len(ids))
        name = f"shards/shard_{k:05d}.bin"
        np.asarray(ids, dtype=np.dtype(dtype).newbyteorder("<")).tofile(out / name)
        np.save(out / f"shards/shard_{k:05d}.docs.npy", np.asarray(ends, dtype=np.int64))
        entries.append({"file": name, "docs_file": f"shards/shard_{k:05d}.docs.npy",
                        "sha256": sha256_file(out / name), "num_tokens": len(ids),
                        "num_docs": len(ends)})
    atomic_write_json(out / "manifest.json", {
        "stage": "data", "run": out.name, "dtype": dtype, "vocab_size": len(tokenizer), "doc_sep_id": sep,
        "shards": entries, "tokenizer_sha256": tokenizer_hash(out / "tokenizer"),
        "content_hash": sha256_tree(out / "shards", "*.bin")})
    return out
