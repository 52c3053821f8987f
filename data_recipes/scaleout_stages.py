"""The datatrove pipeline steps of a scale-out build (`data_recipes/scaleout.py` runs them; this
module needs the `data` extra). Each step is one stage run by a datatrove executor over `tasks`
ranks; they pass files in the shared work folder, never documents in memory:

    scan          line ends per byte range, file identities            scan/<task>.json
    clean_sign    our reading + operator chain + exact/MinHash keys    clean/, quar/, sig/<kind>/<bucket>/
    buckets       keys held by two or more documents, per bucket      collide/<kind>/<bucket>.npy
    clusters      the in-order keep/drop sweep (one task)              dropped.npy
    filter        kept documents in order, quarantine in order         <out>/cleaned/part-<task>.jsonl
    tokenize      the trained tokenizer over each task's part          tok/<task>.bin, .lens.npy
    assemble      shards cut exactly where `make data` cuts them       <out>/shards/, entries/

Reading, cleaning and keys reuse `data_recipes.workers` (the one-machine worker code), so every
decision is made by the same function. A step that meets a user error (a bad record with
`on_error=fail`, a missing column) writes it to `failed/` for the driver to report, then raises.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from core.errors import UserError
from data_recipes.dedupe import EXACT_DROP, NEAR_DROP, file_identity
from data_recipes.scaleout_dedupe import EXACT, collisions, doc_ids, dropped_in_task, partition, sweep
from data_recipes.scaleout_plan import count_line_ends, unit_batches
from data_recipes.scaleout_shards import line_chunks, write_shard
from data_recipes.sources import DataError
from data_recipes.workers import DROP, ERROR, clean_batch, init_clean, init_tokenize, tokenize_chunk


def quarantine_record(inp, loc: str, op: str, reason: str, text: str = "") -> bytes:
    """One quarantine.jsonl line, as `build._Pass1.quarantine_line` writes it."""
    rec = {"source": inp.source, "input": inp.path, "loc": loc, "operator": op, "reason": reason}
    if text:
        rec["text"] = text
    return json.dumps(rec, ensure_ascii=False).encode() + b"\n"


class _Step(PipelineStep):
    type = "zhllm-kit"

    def __init__(self, work: str):
        super().__init__()
        self.work = work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        try:
            self.task(Path(self.work), rank, world_size)
        except UserError as e:
            failed = Path(self.work) / "failed" / f"{self.name}-{rank:05d}.json"
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(json.dumps({"kind": e.kind, "message": str(e)}), encoding="utf-8")
            raise
        return data

    def task(self, work: Path, rank: int, world_size: int) -> None:
        raise NotImplementedError


class ScanStep(_Step):
    name = "scan"

    def __init__(self, work: str, plan, inputs, full_hash_max_bytes: int, head_tail_bytes: int):
        super().__init__(work)
        self.plan, self.inputs = plan, inputs
        self.full, self.head_tail = full_hash_max_bytes, head_tail_bytes

    def task(self, work, rank, world_size):
        counts, identity = [], {}
        for u in self.plan[rank]:
            inp = self.inputs[u.input_index]
            if u.kind == "lines":
                counts.append([u.input_index, u.start, count_line_ends(inp.path, u.start, u.end)])
            if u.start == 0:                 # the task holding an input's first piece names the file
                identity[u.input_index] = file_identity(inp.path, self.full, self.head_tail)
        (work / "scan").mkdir(parents=True, exist_ok=True)
        (work / "scan" / f"{rank:05d}.json").write_text(json.dumps({"counts": counts, "identity": identity}))


class CleanSignStep(_Step):
    """Read the task's units, run the chain, write cleaned lines and the (key, doc) pairs per bucket."""
    name = "clean_sign"

    def __init__(self, work: str, plan, inputs, spec: dict, on_error: str, batch_bytes: int, batch_docs: int,
                 max_docs: dict[int, int], buckets: int):
        super().__init__(work)
        self.plan, self.inputs, self.spec, self.on_error = plan, inputs, spec, on_error
        self.batch_bytes, self.batch_docs, self.max_docs, self.buckets = batch_bytes, batch_docs, max_docs, buckets

    def task(self, work, rank, world_size):
        init_clean(self.spec)
        for d in ("clean", "quar", "stats"):
            (work / d).mkdir(parents=True, exist_ok=True)
        st = {"per_input": {}, "drops": Counter(), "errors": Counter(), "modified": Counter(), "chars_in": 0}
        exact, near, qpos, n, per_doc = [], [], [], 0, 0
        with open(work / "clean" / f"{rank:05d}.jsonl", "wb") as clean, \
                open(work / "clean" / f"{rank:05d}.docs.jsonl", "wb") as docs, \
                open(work / "quar" / f"{rank:05d}.jsonl", "wb") as quar:
            for u in self.plan[rank]:
                inp = self.inputs[u.input_index]
                for batch in unit_batches(inp, u, self.batch_bytes, self.batch_docs, self.max_docs.get(inp.index, 0)):
                    idx, results, stats = clean_batch(batch)
                    bands = []
                    st["chars_in"] += stats["chars_in"]
                    st["modified"].update(stats["modified"])
                    pi = st["per_input"].setdefault(idx, {"records": 0, "errors": Counter(), "first_error": None})
                    for r in results:
                        pi["records"] += 1
                        if r[0] == ERROR:
                            _, loc, kind, msg, _ = r
                            if self.on_error == "fail":
                                raise DataError(f"{msg} (on_error=fail; on_error=quarantine skips and counts such records)")
                            st["errors"][kind] += 1
                            pi["errors"][kind] += 1
                            pi["first_error"] = pi["first_error"] or msg
                            quar.write(quarantine_record(inp, loc, f"input:{kind}", msg))
                            qpos.append(n)
                        elif r[0] == DROP:
                            _, loc, op, reason, snippet = r
                            st["drops"][op] += 1
                            quar.write(quarantine_record(inp, loc, op, reason, snippet))
                            qpos.append(n)
                        else:
                            _, loc, line, xh, band_keys, nchars = r
                            clean.write(line)
                            docs.write(json.dumps([idx, loc, nchars], ensure_ascii=False).encode() + b"\n")
                            if xh is not None:
                                exact.append(xh)
                            if band_keys is not None:
                                bands.append(band_keys)
                            n += 1
                    if bands:                    # one array per batch, not per document
                        near.append(np.concatenate(bands))
                        per_doc = len(bands[0])
        np.save(work / "quar" / f"{rank:05d}.pos.npy", np.asarray(qpos, dtype=np.int64))
        ids = doc_ids(rank, n)
        if self.spec["exact"]:
            self._write_keys(work, "exact", np.asarray(exact, dtype=np.uint64), ids, rank)
        if self.spec["near"]:
            keys = np.concatenate(near) if near else np.zeros(0, dtype=np.uint64)
            self._write_keys(work, "near", keys, np.repeat(ids, per_doc), rank)
        st["docs"] = n
        (work / "stats" / f"clean-{rank:05d}.json").write_text(json.dumps(st))

    def _write_keys(self, work: Path, kind: str, keys: np.ndarray, docs: np.ndarray, rank: int) -> None:
        for b, pairs in enumerate(partition(keys, docs, self.buckets)):
            folder = work / "sig" / kind / f"{b:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{rank:05d}.npy", pairs)


class BucketsStep(_Step):
    """One bucket per task: the pairs whose key two or more documents hold."""
    name = "buckets"

    def __init__(self, work: str, kinds: list[str]):
        super().__init__(work)
        self.kinds = kinds

    def task(self, work, rank, world_size):
        for kind in self.kinds:
            files = sorted((work / "sig" / kind / f"{rank:04d}").glob("*.npy"))
            pairs = np.concatenate([np.load(f) for f in files]) if files else np.zeros((0, 2), dtype=np.uint64)
            (work / "collide" / kind).mkdir(parents=True, exist_ok=True)
            np.save(work / "collide" / kind / f"{rank:04d}.npy", collisions(pairs))


class ClustersStep(_Step):
    """One task: the in-order sweep over every colliding document."""
    name = "clusters"

    def task(self, work, rank, world_size):
        def load(kind):
            files = sorted((work / "collide" / kind).glob("*.npy"))
            return np.concatenate([np.load(f) for f in files]) if files else np.zeros((0, 2), dtype=np.uint64)
        np.save(work / "dropped.npy", sweep(load("exact"), load("near")))


class FilterStep(_Step):
    """Write the task's kept documents and its quarantine, both in input order."""
    name = "filter"

    def __init__(self, work: str, out: str, inputs):
        super().__init__(work)
        self.out, self.inputs = out, inputs

    def task(self, work, rank, world_size):
        dropped = dropped_in_task(np.load(work / "dropped.npy"), rank)
        qpos = np.load(work / "quar" / f"{rank:05d}.pos.npy").tolist()
        (Path(self.out) / "cleaned").mkdir(parents=True, exist_ok=True)
        (work / "quarantine").mkdir(parents=True, exist_ok=True)
        st = {"kept": 0, "chars_kept": 0, "kept_per_input": Counter(), "drops": Counter()}
        with open(work / "clean" / f"{rank:05d}.jsonl", "rb") as clean, \
                open(work / "clean" / f"{rank:05d}.docs.jsonl", "rb") as docs, \
                open(work / "quar" / f"{rank:05d}.jsonl", "rb") as quar, \
                open(Path(self.out) / "cleaned" / f"part-{rank:05d}.jsonl", "wb") as part, \
                open(work / "quarantine" / f"{rank:05d}.jsonl", "wb") as q:
            k = 0
            for i, (line, meta) in enumerate(zip(clean, docs)):
                while k < len(qpos) and qpos[k] <= i:      # records rejected before document i
                    q.write(quar.readline())
                    k += 1
                idx, loc, nchars = json.loads(meta)
                if i in dropped:
                    op, reason = EXACT_DROP if dropped[i] == EXACT else NEAR_DROP
                    st["drops"][op] += 1
                    q.write(quarantine_record(self.inputs[idx], loc, op, reason, json.loads(line)["text"][:200]))
                    continue
                part.write(line)
                st["kept"] += 1
                st["chars_kept"] += nchars
                st["kept_per_input"][idx] += 1
            q.write(quar.read())                         # records rejected after the last document
        (work / "stats" / f"filter-{rank:05d}.json").write_text(json.dumps(st))


class TokenizeStep(_Step):
    name = "tokenize"

    def __init__(self, work: str, out: str, tokenizer_json: str, dtype: str, sep_id: int, batch_bytes: int):
        super().__init__(work)
        self.out, self.tokenizer_json, self.dtype, self.sep_id = out, tokenizer_json, dtype, sep_id
        self.batch_bytes = batch_bytes

    def task(self, work, rank, world_size):
        init_tokenize(self.tokenizer_json, self.dtype, self.sep_id)
        (work / "tok").mkdir(parents=True, exist_ok=True)
        lens = []
        little = np.dtype(self.dtype).newbyteorder("<")
        with open(work / "tok" / f"{rank:05d}.bin", "wb") as f:
            for chunk in line_chunks(Path(self.out) / "cleaned" / f"part-{rank:05d}.jsonl", self.batch_bytes):
                tokens, lengths, _ = tokenize_chunk(chunk)
                f.write(np.ascontiguousarray(tokens, dtype=little).tobytes())
                lens.append(lengths)
        np.save(work / "tok" / f"{rank:05d}.lens.npy",
                np.concatenate(lens).astype(np.int64) if lens else np.zeros(0, dtype=np.int64))


class AssembleStep(_Step):
    """A contiguous run of shards per task, copied from the tokenize stage's files."""
    name = "assemble"

    def __init__(self, work: str, out: str, shard_plan, dtype: str):
        super().__init__(work)
        self.out, self.shard_plan, self.dtype = out, shard_plan, dtype

    def task(self, work, rank, world_size):
        mine = np.array_split(np.arange(len(self.shard_plan)), world_size)[rank].tolist()
        needed = {p[0] for k in mine for p in self.shard_plan[k]}
        lens = {t: np.load(work / "tok" / f"{t:05d}.lens.npy") for t in needed}
        (work / "entries").mkdir(parents=True, exist_ok=True)
        for k in mine:
            entry = write_shard(k, self.shard_plan[k], work / "tok", lens, Path(self.out), self.dtype)
            (work / "entries" / f"{k:05d}.json").write_text(json.dumps(entry))
