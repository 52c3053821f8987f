"""Build a pretraining data folder beyond one machine: the whole of `make data` (clean, exact and
MinHash near dedupe, tokenizer, shards) as datatrove stages, on a local process pool or on Ray.
The result is the folder `make data` writes for the same recipe: the same kept documents, the same
quarantine, tokenizer, shards (byte for byte) and cache key, so `make pretrain` reads it like any
other and `make data` on the same recipe and inputs prints "cache hit". Needs the optional `data`
extra (`make setup-data`); datatrove and ray are imported only when it runs.

Stages (data_recipes/scaleout_stages.py), each a datatrove executor over `--tasks` ranks that
share files in `<out>.tmp-*/work/` (on a cluster: data_root and run.root on a shared filesystem):
scan -> clean_sign -> buckets -> clusters -> filter -> [tokenizer, here] -> tokenize -> [shard
plan, here] -> assemble. How work is cut: data_recipes/scaleout_plan.py; why the dedupe decisions
and the shards equal one machine's: scaleout_dedupe.py and scaleout_shards.py.

Run as:
    python -m data_recipes.scaleout data_recipes/recipes/shared_zh.yaml --executor=ray --tasks=8
    python -m data_recipes.scaleout data_recipes/recipes/steel_mix.yaml data_root=/mnt/corpora run.root=/mnt/runs \\
        --executor=ray --ray-address=auto --tasks=512          # on a running Ray cluster (CPU nodes)
    python -m data_recipes.scaleout data_recipes/recipes/demo.yaml --executor=local --tasks=4 --workers=2
Options: --executor=local|ray  --tasks=N (default 4)  --workers=N (tasks at once; default all)
  --buckets=N (dedupe buckets; default tasks)  --ray-address=ADDR (default: start a local instance)
  --ray-cpus=N (CPUs of a local instance)  --mem-per-cpu-gb=G (Ray reservation, default 1)
  --keep-work (keep the work folder, and the temporary folder after a failure, for inspection)
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from core.config import ConfigError, parse_args, recipe_name
from core.errors import UserError, entrypoint
from core.runs import Run, RunLock, atomic_write_json, tokenizer_hash
from data_recipes.build import BuildConfig, _swap, check_cache, content_hash, quarantine_files, validate
from data_recipes.build_report import operator_table, per_source, print_summary
from data_recipes.scaleout_plan import all_units, number_lines, plan_tasks
from data_recipes.scaleout_shards import plan_shards
from data_recipes.shards import dtype_for_vocab
from data_recipes.sources import DataError, resolve_inputs, source_name

OPTIONS = {"executor": "local", "tasks": "4", "workers": "-1", "buckets": "0", "ray-address": "", "ray-cpus": "0",
           "mem-per-cpu-gb": "1", "keep-work": ""}


class Runner:
    """Runs one step as a datatrove executor over `tasks` ranks and turns a failed task into its error."""

    def __init__(self, opts: dict, work: Path):
        self.kind, self.work, self.opts = opts["executor"], work, opts
        self.workers = int(opts["workers"])
        self.seconds: dict[str, float] = {}
        self.started_ray = False
        if self.kind == "ray":
            import ray
            if not ray.is_initialized():
                # No address (and no RAY_ADDRESS): start a local instance with --ray-cpus CPUs.
                address = opts["ray-address"] or os.environ.get("RAY_ADDRESS") or None
                ray.init(address=address, include_dashboard=False,
                         **({} if address else {"num_cpus": int(opts["ray-cpus"]) or None}))
                self.started_ray = True

    def __call__(self, step, tasks: int) -> None:
        from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor
        t0 = time.time()
        logs = str(self.work / "logs" / step.name)
        workers = tasks if self.workers <= 0 else min(self.workers, tasks)
        if self.kind == "local":
            ex = LocalPipelineExecutor([step], tasks=tasks, workers=workers, logging_dir=logs,
                                       start_method="fork" if sys.platform == "linux" else "forkserver")
        else:
            ex = RayPipelineExecutor([step], tasks=tasks, workers=workers, logging_dir=logs, cpus_per_task=1,
                                     mem_per_cpu_gb=float(self.opts["mem-per-cpu-gb"]))
        try:
            ex.run()
        except Exception:
            self._raise_failure(step.name)
            raise
        self._raise_failure(step.name)
        if missing := ex.get_incomplete_ranks(skip_completed=True):
            raise DataError(f"scaleout stage {step.name}: task(s) {missing[:8]} did not finish; see {logs}/logs "
                            f"(rerun with --keep-work to keep them)")
        self.seconds[step.name] = round(time.time() - t0, 2)
        print(f"  stage {step.name:<11} {tasks:>4} task(s) {self.seconds[step.name]:>8.2f}s", flush=True)

    def _raise_failure(self, stage: str) -> None:
        """The user error of the first failed task (in input order: the first error a one-machine build meets)."""
        failed = sorted((self.work / "failed").glob(f"{stage}-*.json"))
        if failed:
            info = json.loads(failed[0].read_text(encoding="utf-8"))
            err = DataError(info["message"])
            err.kind = info["kind"]
            raise err

    def close(self) -> None:
        if self.started_ray:
            import ray
            ray.shutdown()


@dataclass
class Totals:
    """What the report needs (the attributes of build._Pass1 that build_report reads)."""
    per_input: dict = field(default_factory=lambda: defaultdict(
        lambda: {"records": 0, "kept": 0, "errors": Counter(), "first_error": None}))
    drops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    modified: Counter = field(default_factory=Counter)
    chars_in: int = 0
    chars_kept: int = 0
    kept: int = 0


def _scan(cfg: BuildConfig, inputs, plan, run) -> tuple[list, list, set]:
    """File identities and line counts from the scan stage; (duplicate files, empty files, skipped inputs)."""
    from data_recipes.scaleout_stages import ScanStep
    work = run.work
    run(ScanStep(str(work), plan, inputs, cfg.dedupe.file_full_hash_max_bytes, cfg.dedupe.file_head_tail_bytes),
        len(plan))
    counts = {}
    for f in sorted((work / "scan").glob("*.json")):
        got = json.loads(f.read_text())
        counts.update({(i, start): n for i, start, n in got["counts"]})
        for i, ident in got["identity"].items():
            inputs[int(i)].identity = ident
    number_lines(plan, counts)
    # build.scan_files' rules, on identities computed by the tasks
    dup_files, empty, skip, first_of = [], [], set(), {}
    for inp in inputs:
        if inp.size_bytes == 0:
            empty.append(inp.path)
            skip.add(inp.index)
            continue
        if cfg.dedupe.files and inp.identity in first_of:
            dup_files.append([inp.path, first_of[inp.identity]])
            if cfg.dedupe.duplicate_files == "skip":
                skip.add(inp.index)
        first_of.setdefault(inp.identity, inp.path)
    for units in plan:
        units[:] = [u for u in units if u.input_index not in skip]
    return dup_files, empty, skip


def _clean_dedupe(cfg: BuildConfig, inputs, plan, run, tmp: Path) -> Totals:
    from data_recipes.scaleout_stages import BucketsStep, CleanSignStep, ClustersStep, FilterStep
    work, tasks = run.work, len(plan)
    buckets = int(run.opts["buckets"]) or tasks
    spec = {"plugins": cfg.plugins, "operators": cfg.clean.operators, "exact": cfg.dedupe.exact,
            "inputs": [(i.path, i.format, i.text_field) for i in inputs],
            "near": {"threshold": cfg.dedupe.near_threshold, "num_perm": cfg.dedupe.num_perm,
                     "ngram_chars": cfg.dedupe.ngram_chars, "seed": cfg.dedupe.seed} if cfg.dedupe.near else None}
    max_docs = {i.index: s.max_docs for s in cfg.sources for i in inputs if i.source == source_name(s)}
    run(CleanSignStep(str(work), plan, inputs, spec, cfg.on_error, cfg.shards.batch_bytes, cfg.shards.batch_docs,
                      max_docs, buckets), tasks)
    tot = Totals()
    for f in sorted((work / "stats").glob("clean-*.json")):
        st = json.loads(f.read_text())
        tot.chars_in += st["chars_in"]
        for k in ("drops", "errors", "modified"):
            getattr(tot, k).update(st[k])
        for i, p in sorted(st["per_input"].items(), key=lambda kv: int(kv[0])):
            pi = tot.per_input[int(i)]
            pi["records"] += p["records"]
            pi["errors"].update(p["errors"])
            pi["first_error"] = pi["first_error"] or p["first_error"]
    for idx, pi in sorted(tot.per_input.items()):       # build._Pass1.check_input
        inp = inputs[idx]
        if pi["records"] and pi["errors"]["missing_field"] == pi["records"]:
            raise DataError(f"{inp.path}: none of its {pi['records']} records has field '{inp.text_field}' "
                            f"({pi['first_error']}); set text_field: in source '{inp.source}'")
    kinds = [k for k, on in (("exact", cfg.dedupe.exact), ("near", cfg.dedupe.near)) if on]
    run(BucketsStep(str(work), kinds), buckets)
    run(ClustersStep(str(work)), 1)
    run(FilterStep(str(work), str(tmp), inputs), tasks)
    for f in sorted((work / "stats").glob("filter-*.json")):
        st = json.loads(f.read_text())
        tot.kept += st["kept"]
        tot.chars_kept += st["chars_kept"]
        tot.drops.update(st["drops"])
        for i, n in st["kept_per_input"].items():
            tot.per_input[int(i)]["kept"] += n
    return tot


def _tokenize_shard(cfg: BuildConfig, run, tmp: Path, report: dict) -> dict:
    """Tokenizer (here, on the cleaned parts in order), then the tokenize and assemble stages."""
    import numpy as np
    from transformers import AutoTokenizer
    from data_recipes.scaleout_stages import AssembleStep, TokenizeStep
    from data_recipes.tokenizer import document_separator_id
    from data_recipes.tokenizer_train import make_tokenizer
    work, tasks = run.work, int(run.opts["tasks"])
    parts = [tmp / "cleaned" / f"part-{r:05d}.jsonl" for r in range(tasks)]
    t0 = time.time()
    report["tokenizer"] = make_tokenizer(cfg.tokenizer, [p for p in parts if p.stat().st_size], tmp / "tokenizer")
    run.seconds["tokenizer"] = round(time.time() - t0, 2)
    tok = AutoTokenizer.from_pretrained(str(tmp / "tokenizer"))
    sep, dtype = document_separator_id(tok), dtype_for_vocab(len(tok))
    run(TokenizeStep(str(work), str(tmp), str(tmp / "tokenizer" / "tokenizer.json"), dtype, sep,
                     cfg.shards.batch_bytes), tasks)
    lens = [np.load(work / "tok" / f"{r:05d}.lens.npy") for r in range(tasks)]
    shard_plan = plan_shards(lens, cfg.shards.shard_size_tokens)
    run(AssembleStep(str(work), str(tmp), shard_plan, dtype), max(1, min(tasks, len(shard_plan))))
    shards = [json.loads((work / "entries" / f"{k:05d}.json").read_text()) for k in range(len(shard_plan))]
    return {"dtype": dtype, "vocab_size": len(tok), "doc_sep_id": sep, "shards": shards,
            "num_tokens": sum(s["num_tokens"] for s in shards), "tokenizer_sha256": tokenizer_hash(tmp / "tokenizer")}


def _quarantine(tmp: Path, work: Path, tasks: int, cfg: BuildConfig, empty, dup_files) -> None:
    """The tasks' quarantine files in order, then the file-level entries, as `make data` writes them."""
    with open(tmp / "quarantine.jsonl", "wb") as q:
        for r in range(tasks):
            with open(work / "quarantine" / f"{r:05d}.jsonl", "rb") as f:
                shutil.copyfileobj(f, q)
        quarantine_files(q, empty, dup_files, cfg.dedupe.duplicate_files)


def _no_survivors(tot: Totals, work: Path, tasks: int) -> DataError:
    """`make data`'s error when nothing is kept, naming the first three rejected records."""
    why = ", ".join(f"{k} {v}" for k, v in (tot.drops + Counter({f"input:{k}": v for k, v in tot.errors.items()}))
                    .most_common()) or "no records read"
    first = []
    for r in range(tasks):
        with open(work / "quarantine" / f"{r:05d}.jsonl", "rb") as f:
            for line in f:
                if len(first) == 3:
                    break
                q = json.loads(line)
                loc, reason = q["loc"], q["reason"]
                first.append(f"{loc} ({q['operator']}: {reason[len(loc) + 2:] if reason.startswith(f'{loc}: ') else reason})")
    first_s = f"; first rejected: {'; '.join(first)}" if first else ""
    return DataError(f"no documents survived cleaning ({why}){first_s}; nothing written")


def scaleout(cfg: BuildConfig, recipe: str | None, opts: dict) -> Path:  # long: the build's steps in order, read top to bottom
    t0 = time.time()
    chain = validate(cfg)
    tasks = int(opts["tasks"])
    if tasks < 1:
        raise ConfigError("scaleout: --tasks must be >= 1")
    name = cfg.run.name or recipe_name(recipe)
    out = Path(cfg.run.root) / "data" / name
    inputs = resolve_inputs(cfg.sources, cfg.data_root)
    for inp in inputs:
        if inp.kind != "file":
            raise DataError(f"source '{inp.source}': scale-out reads local copies of hub data; set data_root")
        if inp.size_bytes == 0 and cfg.on_error == "fail":
            raise DataError(f"{inp.path}: empty file (on_error=fail)")
    tmp = out.parent / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "work").mkdir(parents=True)
    run, ok = None, False
    try:
        run = Runner(opts, tmp / "work")
        print(f"data {name} (scale-out, {opts['executor']}, {tasks} tasks): {recipe or 'defaults'}, "
              f"{len(inputs)} input(s) -> {out}")
        max_docs = {source_name(s): s.max_docs for s in cfg.sources}
        plan = plan_tasks(inputs, {i.index for i in inputs if i.size_bytes == 0}, max_docs, tasks)
        dup_files, empty, skip = _scan(cfg, inputs, plan, run)
        tok_src = f"from_dir:{tokenizer_hash(Path(cfg.tokenizer.from_dir) / 'tokenizer') or tokenizer_hash(cfg.tokenizer.from_dir)}" \
            if cfg.tokenizer.from_dir else "trained"
        key = content_hash(cfg, inputs, tok_src)
        if check_cache(out, key, cfg.verify_on_cache_hit) is not None:
            print(f"cache hit: {out} already holds this recipe's output (content_hash {key[:12]}); nothing to do")
            ok = True
            return out
        runfolder = Run(tmp, "data", recipe_name(recipe))
        runfolder.write_config(cfg)
        tot = _clean_dedupe(cfg, inputs, plan, run, tmp)
        _quarantine(tmp, run.work, tasks, cfg, empty, dup_files)
        if tot.kept == 0:
            raise _no_survivors(tot, run.work, tasks)
        report = {"recipe": recipe, "content_hash": key, "num_workers": tasks,
                  "scaleout": {"executor": opts["executor"], "tasks": tasks, "units": sum(1 for _ in all_units(plan)),
                               "buckets": int(opts["buckets"]) or tasks},
                  "docs_in": sum(p["records"] for p in tot.per_input.values()), "docs_kept": tot.kept,
                  "chars_in": tot.chars_in, "chars_kept": tot.chars_kept,
                  "bytes_in": sum(i.size_bytes for i in inputs if i.index not in skip),
                  "record_errors": dict(tot.errors), "operators": operator_table(chain, tot),
                  "duplicate_files": dup_files, "duplicate_files_policy": cfg.dedupe.duplicate_files,
                  "empty_files": empty, "sources": per_source(inputs, tot)}
        data = _tokenize_shard(cfg, run, tmp, report)
        if not cfg.shards.keep_cleaned:
            shutil.rmtree(tmp / "cleaned")
        report["timings"] = {f"{k}_s": v for k, v in run.seconds.items()}
        report["seconds"] = round(time.time() - t0, 2)
        if opts["keep-work"]:
            print(f"  work folder kept: {out / 'work'}")
        else:
            shutil.rmtree(run.work)
        atomic_write_json(tmp / "report.json", report)
        manifest = runfolder.finish(run=name, num_docs=tot.kept, content_hash=key, tokenizer_dir="tokenizer",
                                    data_recipe={"name": recipe_name(recipe), "hash": key}, **data)
        _swap(tmp, out)
        ok = True
    finally:
        if run is not None:
            run.close()
        if not ok and not opts["keep-work"]:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not ok:
            print(f"kept for inspection: {tmp}", file=sys.stderr)
        elif tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print_summary(name, out, report, manifest)
    print(f"next: make pretrain RECIPE=<pretrain recipe> ARGS=\"data.path={out}\"")
    return out


def parse_options(argv: list[str]) -> tuple[dict, list[str]]:
    """(--options of this module, the rest for the recipe parser)."""
    opts, rest = dict(OPTIONS), []
    for a in argv:
        key = a[2:].split("=", 1)[0] if a.startswith("--") else ""
        if key == "keep-work" and "=" not in a:
            opts[key] = "1"
        elif key in opts and "=" in a:
            opts[key] = a.split("=", 1)[1]
        else:
            rest.append(a)
    if opts["executor"] not in ("local", "ray"):
        raise ConfigError(f"scaleout: --executor must be local or ray, got {opts['executor']!r}")
    for k in ("tasks", "workers", "buckets", "ray-cpus"):
        try:
            int(opts[k])
        except ValueError:
            raise ConfigError(f"scaleout: --{k} must be an integer, got {opts[k]!r}") from None
    return opts, rest


@entrypoint
def main(argv: list[str] | None = None) -> Path:
    opts, rest = parse_options(list(sys.argv[1:] if argv is None else argv))
    cfg, recipe = parse_args(BuildConfig, rest, prog="data_recipes.scaleout")
    try:
        import datatrove  # noqa: F401
        if opts["executor"] == "ray":
            import ray  # noqa: F401
    except ImportError as e:
        raise UserError(f"scaleout needs the optional `data` extra ({e.name} is missing): make setup-data") from None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(cfg.run.root) / "data" / (cfg.run.name or recipe_name(recipe))
    with RunLock(out, out.parent / f".{out.name}.lock"):       # the lock `make data` takes on the same folder
        return scaleout(cfg, recipe, opts)


if __name__ == "__main__":
    main()
