"""Build a pretraining data folder from a recipe: sources -> cleaning chain -> dedupe -> tokenizer
-> token shards, with a quarantine of every rejected record and a per-operator report.

Run as:
    make data RECIPE=demo                     # = python -m data_recipes.build data_recipes/recipes/demo.yaml
    python -m data_recipes.build data_recipes/recipes/shared_zh.yaml num_workers=2
    python -m data_recipes.build data_recipes/recipes/steel_mix.yaml data_root=/mnt/corpora num_workers=32
    python -m data_recipes.build data_recipes/recipes/demo.yaml --dry-run
(CPU only: a GPU machine builds data the same way; raise num_workers to its core count.)

Output `<run.root>/data/<run.name or recipe>/` (format in data_recipes/shards.py):
    config.yaml  report.json  quarantine.jsonl  cleaned/part-*.jsonl  tokenizer/  shards/  manifest.json
It is written in a hidden temporary folder and renamed into place after manifest.json, so a crash
never leaves a folder that looks finished. The manifest's content_hash covers (recipe, inputs,
tokenizer): a rebuild with the same ones prints "cache hit" and does nothing.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from core.config import ConfigError, dump_yaml, parse_args, recipe_name, to_dict
from core.errors import entrypoint
from core.log import progress
from core.runs import Run, RunError, RunLock, RunOptions, atomic_write_json, read_manifest, tokenizer_hash
from data_recipes.clean import DEFAULT_OPERATORS, Chain, load_plugins
from data_recipes.build_report import operator_table, per_source, print_summary
from data_recipes.dedupe import Deduper, MinHasher, collision_probability, file_identity
from data_recipes.shards import ShardWriter, dtype_for_vocab, open_shards
from data_recipes.sources import (DataError, SourceOptions, batches, resolve_inputs, resolve_root, source_name,
                                  uses_local)
from data_recipes.tokenizer import SPLITS, document_separator_id
from data_recipes.tokenizer_train import TokenizerOptions, make_tokenizer
from data_recipes.workers import DROP, ERROR, clean_batch, init_clean, init_tokenize, ordered_map, tokenize_chunk

PIPELINE_VERSION = 1      # bump when a change to this code changes the output for the same recipe


@dataclass
class CleanOptions:
    """The operator chain (see data_recipes/clean.py for every operator and its parameters)."""
    operators: list[dict] = field(default_factory=lambda: [dict(o) for o in DEFAULT_OPERATORS])


@dataclass
class DedupeOptions:
    """File, exact-document and MinHash-LSH near-document dedupe."""
    files: bool = True                      # find byte-identical input files (always reported)
    duplicate_files: str = "skip"           # skip: read each identical file once; keep: read every copy
    file_full_hash_max_bytes: int = 64 << 20  # files up to this size are MD5-hashed whole ...
    file_head_tail_bytes: int = 1 << 20     # ... larger ones by size + this many head and tail bytes
    exact: bool = True                      # drop documents whose cleaned text was seen before
    near: bool = True                       # drop near duplicates (MinHash LSH)
    near_threshold: float = 0.8             # Jaccard similarity of character n-gram sets
    num_perm: int = 128                     # MinHash permutations
    ngram_chars: int = 5                    # shingle size in characters
    seed: int = 1                           # MinHash seed


@dataclass
class ShardOptions:
    """Token shards and how work is cut into tasks."""
    shard_size_tokens: int = 100_000_000    # a new shard file starts after this many tokens
    batch_bytes: int = 1 << 20              # input bytes per worker task (JSON Lines / txt lines)
    batch_docs: int = 256                   # records per worker task (json, csv, parquet, hub)
    cleaned_part_bytes: int = 1 << 30       # size of each cleaned/part-*.jsonl file
    keep_cleaned: bool = True               # keep cleaned/ (the deduped text) after sharding


@dataclass
class BuildConfig:
    """A pretraining data recipe."""
    run: RunOptions = field(default_factory=RunOptions)   # output: <root>/data/<name or recipe>
    data_root: str = ""                     # folder that source paths are relative to; set => local copies of hub sources
    sources: list[SourceOptions] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)      # modules that register extra operators
    on_error: str = "quarantine"            # bad records: quarantine (skip, log, count) | fail (stop at the first)
    num_workers: int = 1                    # processes for cleaning and tokenising (output identical for any value)
    verify_on_cache_hit: bool = True        # re-hash the shards before trusting a cache hit
    clean: CleanOptions = field(default_factory=CleanOptions)
    dedupe: DedupeOptions = field(default_factory=DedupeOptions)
    tokenizer: TokenizerOptions = field(default_factory=TokenizerOptions)
    shards: ShardOptions = field(default_factory=ShardOptions)


def quarantine_files(q, empty: list, dup_files: list, policy: str) -> None:
    """Quarantine rows (binary file `q`) for whole input files skipped before cleaning: empty ones
    (with a warning) and byte-identical copies under `dedupe.duplicate_files`."""
    for path in empty:
        q.write(json.dumps({"input": path, "operator": "input:empty_file", "reason": f"{path}: empty file"},
                           ensure_ascii=False).encode() + b"\n")
        print(f"warning: {path}: empty file (skipped, listed in quarantine.jsonl)", file=sys.stderr)
    for a, b in dup_files:
        q.write(json.dumps({"input": a, "operator": "file_dedupe", "reason": f"byte-identical to {b} ({policy})"},
                           ensure_ascii=False).encode() + b"\n")


def validate(cfg: BuildConfig) -> Chain:
    if cfg.on_error not in ("quarantine", "fail"):
        raise ConfigError(f"on_error must be quarantine or fail, got {cfg.on_error!r}")
    if cfg.dedupe.duplicate_files not in ("skip", "keep"):
        raise ConfigError(f"dedupe.duplicate_files must be skip or keep, got {cfg.dedupe.duplicate_files!r}")
    if cfg.num_workers < 1:
        raise ConfigError("num_workers must be >= 1")
    if cfg.tokenizer.split not in SPLITS:
        raise ConfigError(f"tokenizer.split must be one of {', '.join(SPLITS)}, got {cfg.tokenizer.split!r}")
    load_plugins(cfg.plugins)
    return Chain(cfg.clean.operators)


def content_hash(cfg: BuildConfig, inputs, tokenizer_source: str) -> str:
    """Cache key over everything that changes the output (not run options or worker counts)."""
    d = to_dict(cfg)
    for k in ("run", "num_workers", "verify_on_cache_hit", "data_root"):
        d.pop(k)
    for k in ("batch_bytes", "batch_docs"):
        d["shards"].pop(k)
    blob = {"pipeline_version": PIPELINE_VERSION, "config": d, "tokenizer": tokenizer_source,
            "inputs": [[i.source, Path(i.path).name, i.identity] for i in inputs]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def check_cache(out: Path, key: str, verify: bool) -> dict | None:
    if not (out / "manifest.json").is_file():
        return None
    manifest = read_manifest(out)
    if manifest.get("content_hash") != key:
        print(f"inputs or recipe changed since {out}/manifest.json: rebuilding")
        return None
    try:
        open_shards(out, verify_hash=verify)
    except RunError as e:
        print(f"{e}: rebuilding")
        return None
    return manifest


def _print_plan(cfg: BuildConfig, recipe: str | None, chain: Chain) -> None:
    print(f"# resolved config for data_recipes.build" + (f" from {recipe}" if recipe else ""))
    print(dump_yaml(cfg), end="")
    print("# plan")
    for src in cfg.sources:
        if uses_local(src, cfg.data_root):
            root = resolve_root(cfg.data_root)
            where = f"under {root}" + ("" if root.exists() else " (not present here)") if root else \
                "(local only: set data_root=<folder with the copy>)"
            print(f"#   source {source_name(src)}: local {src.path} {where}")
        else:
            print(f"#   source {source_name(src)}: hub {src.hub} split={src.split} (streamed; set data_root for a local copy)")
    print(f"#   operators: {' -> '.join(chain.names)}")
    if cfg.dedupe.near:
        mh = MinHasher(cfg.dedupe.near_threshold, cfg.dedupe.num_perm)
        print(f"#   near dedupe: {mh.bands} bands x {mh.rows} rows; P(flag) at Jaccard 0.5/0.8/0.9 = "
              + "/".join(f"{collision_probability(j, mh.bands, mh.rows):.2f}" for j in (0.5, 0.8, 0.9)))
    tok = f"from {cfg.tokenizer.from_dir}" if cfg.tokenizer.from_dir else f"train vocab {cfg.tokenizer.vocab_size}"
    print(f"#   tokenizer: {tok}; output {Path(cfg.run.root) / 'data' / (cfg.run.name or recipe_name(recipe))}")


class _Pass1:
    """The in-order half of cleaning: dedupe decisions, cleaned corpus, quarantine, counters."""

    def __init__(self, cfg: BuildConfig, inputs, tmp: Path):
        self.cfg, self.inputs, self.tmp = cfg, inputs, tmp
        self.dedupe = Deduper(cfg.dedupe.exact, cfg.dedupe.near)
        self.drops: Counter = Counter()
        self.errors: Counter = Counter()
        self.modified: Counter = Counter()
        self.per_input = defaultdict(lambda: {"records": 0, "kept": 0, "errors": Counter(), "first_error": None})
        self.chars_in = self.chars_kept = self.kept = 0
        self.quarantine = open(tmp / "quarantine.jsonl", "wb")
        self.first_rejected: list[str] = []
        (tmp / "cleaned").mkdir()
        self.parts: list[Path] = []
        self.chunks: list[tuple[str, int, int]] = []
        self._part = None
        self._chunk_start = 0

    def quarantine_line(self, inp, loc, op, reason, text="") -> None:
        rec = {"source": inp.source, "input": inp.path, "loc": loc, "operator": op, "reason": reason}
        if len(self.first_rejected) < 3:      # named in the error when nothing survives (quarantine.jsonl goes with it)
            why = reason[len(loc) + 2:] if reason.startswith(f"{loc}: ") else reason
            self.first_rejected.append(f"{loc} ({op}: {why})")
        if text:
            rec["text"] = text
        self.quarantine.write(json.dumps(rec, ensure_ascii=False).encode() + b"\n")

    def _write_clean(self, line: bytes) -> None:
        sc = self.cfg.shards
        if self._part is None or self._part.tell() >= sc.cleaned_part_bytes:
            self._close_part()
            path = self.tmp / "cleaned" / f"part-{len(self.parts):05d}.jsonl"
            self.parts.append(path)
            self._part = open(path, "wb")
            self._chunk_start = 0
        self._part.write(line)
        if self._part.tell() - self._chunk_start >= sc.batch_bytes:
            self.chunks.append((str(self.parts[-1]), self._chunk_start, self._part.tell()))
            self._chunk_start = self._part.tell()

    def _close_part(self) -> None:
        if self._part is not None:
            end = self._part.tell()
            if end > self._chunk_start:
                self.chunks.append((str(self.parts[-1]), self._chunk_start, end))
            self._part.close()
            self._part = None

    def consume(self, result) -> None:
        idx, results, stats = result
        inp = self.inputs[idx]
        pi = self.per_input[idx]
        self.chars_in += stats["chars_in"]
        self.modified.update(stats["modified"])
        for r in results:
            pi["records"] += 1
            if r[0] == ERROR:
                _, loc, kind, msg, _ = r
                if self.cfg.on_error == "fail":
                    raise DataError(f"{msg} (on_error=fail; on_error=quarantine skips and counts such records)")
                self.errors[kind] += 1
                pi["errors"][kind] += 1
                pi["first_error"] = pi["first_error"] or msg
                self.quarantine_line(inp, loc, f"input:{kind}", msg)
            elif r[0] == DROP:
                _, loc, op, reason, snippet = r
                self.drops[op] += 1
                self.quarantine_line(inp, loc, op, reason, snippet)
            else:
                _, loc, line, xh, bands, nchars = r
                dup = self.dedupe.check(xh, bands)
                if dup is not None:
                    self.drops[dup[0]] += 1
                    self.quarantine_line(inp, loc, dup[0], dup[1], json.loads(line)["text"][:200])
                    continue
                self.kept += 1
                pi["kept"] += 1
                self.chars_kept += nchars
                self._write_clean(line)

    def check_input(self, idx: int) -> None:
        """A file where every record lacks the text field is a wrong column mapping, not bad records."""
        pi, inp = self.per_input[idx], self.inputs[idx]
        if pi["records"] and pi["errors"]["missing_field"] == pi["records"]:
            raise DataError(f"{inp.path}: none of its {pi['records']} records has field '{inp.text_field}' "
                            f"({pi['first_error']}); set text_field: in source '{inp.source}'")

    def close(self) -> None:
        self._close_part()
        self.quarantine.close()


def run_pass1(cfg: BuildConfig, inputs, skip: set[int], tmp: Path) -> _Pass1:
    p1 = _Pass1(cfg, inputs, tmp)
    spec = {"plugins": cfg.plugins, "operators": cfg.clean.operators, "exact": cfg.dedupe.exact,
            "inputs": [(i.path, i.format, i.text_field) for i in inputs],
            "near": {"threshold": cfg.dedupe.near_threshold, "num_perm": cfg.dedupe.num_perm,
                     "ngram_chars": cfg.dedupe.ngram_chars, "seed": cfg.dedupe.seed} if cfg.dedupe.near else None}
    max_docs = {source_name(s): s.max_docs for s in cfg.sources}
    if spec["near"] and cfg.num_workers > 1:
        MinHasher(**spec["near"])   # import datasketch and cache the LSH bands once, before the workers fork

    def all_batches():
        for inp in inputs:
            if inp.index in skip:
                continue
            yield from batches(inp, cfg.shards.batch_bytes, cfg.shards.batch_docs, max_docs.get(inp.source, 0))

    line_based = all(i.kind == "file" and i.format in ("jsonl", "txt") for i in inputs)
    total = sum(math.ceil(i.size_bytes / cfg.shards.batch_bytes) for i in inputs) if line_based else None
    last = None
    results = ordered_map(clean_batch, all_batches(), cfg.num_workers, init_clean, (spec,))
    try:
        for res in progress(results, total=total, desc="clean + dedupe"):
            if last is not None and res[0] != last:
                p1.check_input(last)
            last = res[0]
            p1.consume(res)
        if last is not None:
            p1.check_input(last)
    finally:
        results.close()          # stops the worker pool at once if a record failed the run
        p1.close()
    return p1


def run_pass2(cfg: BuildConfig, chunks, tok_dir: Path, tmp: Path, vocab_size: int, sep_id: int) -> list[dict]:
    dtype = dtype_for_vocab(vocab_size)
    writer = ShardWriter(tmp / "shards", dtype, cfg.shards.shard_size_tokens, rel_to=tmp)
    results = ordered_map(tokenize_chunk, chunks, cfg.num_workers, init_tokenize,
                          (str(tok_dir / "tokenizer.json"), dtype, sep_id))
    try:
        for tokens, lengths, _ in progress(results, total=len(chunks), desc="tokenise -> shards"):
            writer.add(tokens, lengths)
    finally:
        results.close()
    return writer.close()


def scan_files(cfg: BuildConfig, inputs) -> tuple[list, list, set]:
    """(byte-identical [file, first copy] pairs, empty files, input indexes to skip); sets each file's identity."""
    dup_files, empty, skip, first_of = [], [], set(), {}
    for inp in inputs:
        if inp.kind != "file":
            continue
        if inp.size_bytes == 0:
            if cfg.on_error == "fail":
                raise DataError(f"{inp.path}: empty file (on_error=fail)")
            empty.append(inp.path)
            skip.add(inp.index)
            continue
        inp.identity = file_identity(inp.path, cfg.dedupe.file_full_hash_max_bytes, cfg.dedupe.file_head_tail_bytes)
        if cfg.dedupe.files and inp.identity in first_of:
            dup_files.append([inp.path, first_of[inp.identity]])
            if cfg.dedupe.duplicate_files == "skip":
                skip.add(inp.index)
        first_of.setdefault(inp.identity, inp.path)
    return dup_files, empty, skip


def build(cfg: BuildConfig, recipe: str | None, only: str | None = None) -> Path:
    t0 = time.time()
    chain = validate(cfg)
    name = cfg.run.name or recipe_name(recipe)
    out = Path(cfg.run.root) / "data" / name
    inputs = resolve_inputs(cfg.sources, cfg.data_root)
    dup_files, empty, skip = scan_files(cfg, inputs)
    tok_src = f"from_dir:{tokenizer_hash(Path(cfg.tokenizer.from_dir) / 'tokenizer') or tokenizer_hash(cfg.tokenizer.from_dir)}" \
        if cfg.tokenizer.from_dir else "trained"
    key = content_hash(cfg, inputs, tok_src)
    if only is None:
        hit = check_cache(out, key, cfg.verify_on_cache_hit)
        if hit is not None:
            print(f"cache hit: {out} already holds this recipe's output (content_hash {key[:12]}); nothing to do")
            return out
    tmp = out.parent / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        run = Run(tmp, "data", recipe_name(recipe))
        run.write_config(cfg)
        print(f"data {name}: {recipe or 'defaults'}, {len(inputs)} input(s) -> {out}")
        t1, c1 = time.time(), _cpu()
        p1 = run_pass1(cfg, inputs, skip, tmp)
        timings = {"clean_dedupe_s": round(time.time() - t1, 2), **_cpu_since(c1, "clean_dedupe")}
        with open(tmp / "quarantine.jsonl", "ab") as q:
            quarantine_files(q, empty, dup_files, cfg.dedupe.duplicate_files)
        if p1.kept == 0:
            why = ", ".join(f"{k} {v}" for k, v in (p1.drops + Counter({f"input:{k}": v for k, v in p1.errors.items()}))
                            .most_common()) or "no records read"
            first = f"; first rejected: {'; '.join(p1.first_rejected)}" if p1.first_rejected else ""
            raise DataError(f"no documents survived cleaning ({why}){first}; nothing written")
        report = {"recipe": recipe, "content_hash": key, "num_workers": cfg.num_workers,
                  "docs_in": sum(p["records"] for p in p1.per_input.values()), "docs_kept": p1.kept,
                  "chars_in": p1.chars_in, "chars_kept": p1.chars_kept,
                  "bytes_in": sum(i.size_bytes for i in inputs if i.index not in skip),
                  "record_errors": dict(p1.errors), "operators": operator_table(chain, p1),
                  "duplicate_files": dup_files, "duplicate_files_policy": cfg.dedupe.duplicate_files,
                  "empty_files": empty, "dedupe_index_bytes": p1.dedupe.index_bytes,
                  "sources": per_source(inputs, p1)}
        tok_dir = tmp / "tokenizer"
        report["timings"] = timings
        report["tokenizer"] = make_tokenizer(cfg.tokenizer, p1.parts, tok_dir)
        timings["tokenizer_s"] = report["tokenizer"]["seconds"]
        manifest = None
        if only != "tokenizer":
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(str(tok_dir))
            sep = document_separator_id(tok)
            t2, c2 = time.time(), _cpu()
            shards = run_pass2(cfg, p1.chunks, tok_dir, tmp, len(tok), sep)
            timings.update(tokenise_shards_s=round(time.time() - t2, 2), **_cpu_since(c2, "tokenise_shards"))
            if not cfg.shards.keep_cleaned:
                shutil.rmtree(tmp / "cleaned")
            report["seconds"] = round(time.time() - t0, 2)
            atomic_write_json(tmp / "report.json", report)
            num_tokens = sum(s["num_tokens"] for s in shards)
            manifest = run.finish(run=name, dtype=dtype_for_vocab(len(tok)), vocab_size=len(tok), doc_sep_id=sep,
                                  shards=shards, num_tokens=num_tokens, num_docs=p1.kept,
                                  tokenizer_sha256=tokenizer_hash(tok_dir), content_hash=key,
                                  data_recipe={"name": recipe_name(recipe), "hash": key}, tokenizer_dir="tokenizer")
        else:
            report["seconds"] = round(time.time() - t0, 2)
            atomic_write_json(tmp / "report.json", report)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print_summary(name, out, report, manifest)
    if only == "tokenizer":
        print(f"  tokenizer only: {out}/tokenizer (no shards, no manifest.json); next: make data RECIPE={name}")
    else:
        print(f"next: make pretrain RECIPE=<pretrain recipe> ARGS=\"data.path={out}\"")
    return out


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its finished (joined) worker processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _cpu_since(start: tuple[float, float], phase: str) -> dict:
    now = _cpu()
    return {f"{phase}_cpu_main_s": round(now[0] - start[0], 2), f"{phase}_cpu_workers_s": round(now[1] - start[1], 2)}


def _swap(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished `tmp` folder (two renames; the old folder is removed after)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@entrypoint
def main(argv: list[str] | None = None, only: str | None = None, prog: str = "data_recipes.build") -> Path | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    dry = "--dry-run" in argv
    cfg, recipe = parse_args(BuildConfig, [a for a in argv if a != "--dry-run"], prog=prog)
    chain = validate(cfg)
    if dry:
        _print_plan(cfg, recipe, chain)
        return None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(cfg.run.root) / "data" / (cfg.run.name or recipe_name(recipe))
    # One build writes a data folder at a time; the lock sits beside it, as the folder is swapped in.
    with RunLock(out, out.parent / f".{out.name}.lock"):
        return build(cfg, recipe, only=only)


if __name__ == "__main__":
    main()
