"""Decontamination of training text against benchmark questions (C-Eval, CMMLU, the demo bench).

An item is its question stem and its options, matched as separate parts, so reordered options, other
labels or another layout do not matter. Text is normalised (NFKC: full-width letters and punctuation
become half-width; lower case) and cut into tokens: single CJK characters and latin/digit runs, with
whitespace and punctuation no tokens and lone letters a-e (option labels, "A." "(B)" "C、") dropped.
- A part of >= `ngram_tokens` tokens is covered by the fraction of its own n-grams found in the text
  (no n-gram crosses parts); a shorter part by its whole token sequence occurring (1) or not (0).
- score = the item's tokens covered (coverage x length, summed over parts) / all its tokens; a hit
  needs score >= `threshold` and an anchor: the stem covered >= `threshold` (stems under 2 n-grams'
  worth of tokens only together with `threshold` of the option tokens: a row that teaches "河南省的
  省会是郑州" does not copy the question), or long options alone covering `threshold` of the item.
  Options are an unordered set; four common words never make a hit without the stem.
- An item shorter than one n-gram must be present whole (every part, any order); items under
  `min_item_tokens` are skipped (too short to tell a copy from a coincidence) and counted.
Coverage of the *item*, not of the text, counts: a long conversation that quotes one question is
caught, a text sharing a stock phrase such as "下列说法正确的是" with many questions is not. Texts are
checked in batches with numpy (token hashes, a sorted key array behind a bit filter, candidate items
scored together), and many rows in several processes (`auto_workers`).

    decon = Decontaminator.from_benchmarks({"ceval": "../shared/data/ceval", "demo": ""}, ngram_tokens=8,
                                           threshold=0.5)   # "" = the spec's built-in copy
    decon.check("...text...")            -> [Hit(benchmark, split, subject, id, score, question)]
    keep, report = decontaminate(records, decon, policy="drop")   # records: (source, where, text)
    write_report(run.path / "decontamination.json", report)

DPO and GRPO configure it with a `decontam:` section (`DecontamOptions`) and call
`decontaminate_records`; SFT mixes use sft_mix.run_decontam. Recall on planted copies, false
positives and throughput: benchmarks/decontam_bench.py.
"""
from __future__ import annotations

import csv
import multiprocessing as mp
import os
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable

import numpy as np

from core.config import ConfigError
from core.errors import UserError
from core.runs import atomic_write_json
from data_recipes.decontam_tokens import MAX_NGRAM, bit_filter, kgram_hashes, maybe_in, tokenize
from data_recipes.preference import expand_path

METHOD = "item coverage: stem n-grams + options as an unordered set (labels, width, spacing ignored)"
_STEM_KEY = 4                            # a stem shorter than one n-gram is looked up by its first 4 tokens


class DecontamError(UserError, ValueError):
    """A benchmark folder that is missing or unreadable."""
    kind = "decontamination"


@dataclass
class BenchItem:
    benchmark: str
    split: str
    subject: str
    id: str               # "<subject>/<split>/<row id>" (core/benchmarks.py's Question.id)
    question: str
    options: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join([self.question, *self.options])


@dataclass
class Hit:
    benchmark: str
    split: str
    subject: str
    id: str
    score: float          # fraction of the item's tokens found in the text (see the module docstring)
    question: str


def read_benchmark_dir(name: str, path: str | Path) -> list[BenchItem]:
    """Every item in an official-layout CSV folder: `<split>/<subject>_<split>.csv` (C-Eval, demo
    bench) or `<split>/<subject>.csv` (CMMLU); all splits present are read."""
    path = Path(path)
    files = sorted(path.glob("*/*.csv"))
    if not files:
        raise DecontamError(f"benchmark '{name}': no <split>/*.csv files under {path}")
    items = []
    for f in files:
        split = f.parent.name
        subject = f.stem[: -len(split) - 1] if f.stem.endswith("_" + split) else f.stem
        with open(f, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            try:
                qcol = header.index("question")
                ocols = [header.index(c) for c in ("a", "b", "c", "d")]
            except ValueError:
                raise DecontamError(f"{f}:1: header needs question,A,B,C,D columns, got {header}") from None
            for i, row in enumerate(reader):
                if len(row) <= max(qcol, *ocols):
                    raise DecontamError(f"{f}:{reader.line_num}: {len(row)} fields, expected {len(header)}")
                items.append(BenchItem(name, split, subject, f"{subject}/{split}/{i}", row[qcol],
                                       [row[c] for c in ocols]))
    return items


def load_benchmark_items(name: str, path: str | Path | None) -> list[BenchItem]:
    """Items of one benchmark, every split on disk. A benchmark with a spec in eval/benchmarks/
    (ceval, cmmlu, demo) goes through core/benchmarks.py's loader, which validates the official layout;
    any other name is read as a folder of `<split>/*.csv` here. `path` empty = the spec's built-in copy."""
    from core import benchmarks as bench_data
    has_spec = bench_data.spec_path(name).is_file()
    if not has_spec:
        if not path:
            raise DecontamError(f"benchmark '{name}': no eval/benchmarks/{name}.yaml spec and no folder given")
        return read_benchmark_dir(name, path)
    try:
        questions = bench_data.load_questions(name, data_dir=path or None, splits=("dev", "val", "test"))
    except bench_data.BenchmarkDataError as e:
        raise DecontamError(f"benchmark '{name}': {e}") from None
    return [BenchItem(name, q.split, q.subject, q.id, q.question, list(q.choices)) for q in questions]


# ---- the index ----------------------------------------------------------------------------------------
class Decontaminator:
    """An index over the parts (stem, options) of benchmark items; `check(text)` returns the items a
    text contains, `check_batch(texts)` does many texts in one pass."""

    def __init__(self, items: list[BenchItem], ngram_tokens: int = 8, threshold: float = 0.5,
                 min_item_tokens: int = 5, sources: dict[str, str] | None = None):
        if not 0 < threshold <= 1:
            raise DecontamError(f"threshold must be in (0, 1], got {threshold}")
        if not 1 <= ngram_tokens <= MAX_NGRAM:
            raise DecontamError(f"ngram_tokens must be in [1, {MAX_NGRAM}], got {ngram_tokens}")
        self.n, self.threshold, self.min_item_tokens = ngram_tokens, threshold, min_item_tokens
        self.items = items
        self.sources = sources or {}
        self._build()

    def _build(self) -> None:
        """Parts of >= n tokens go into a sorted key array (their n-grams) with postings to the part;
        a shorter stem goes in by its first tokens, and short parts are looked for, whole, only in
        texts that already share a key with their item."""
        n, items = self.n, self.items
        toks, _, off = tokenize([p for it in items for p in (it.question, *it.options)])
        grams = kgram_hashes(toks, range(1, n + 1))
        lens = np.diff(off) - 1
        self._total = np.zeros(len(items))                  # tokens of the item, all parts
        self._stem_len = np.zeros(len(items))
        self._need = np.full(len(items), np.inf)            # covered tokens that make a hit (inf: skipped)
        self._short_mass = np.zeros(len(items))             # tokens in parts shorter than n
        self._short: list[list[tuple[int, int, bool]]] = [[] for _ in items]   # (length, hash, is stem)
        units, keys, by_length, self.n_skipped_short, q = [], [], {n: []}, 0, 0
        for idx, it in enumerate(items):
            plens = lens[q:q + 1 + len(it.options)].tolist()
            total = sum(plens)
            if plens[0] == 0 or total < self.min_item_tokens:
                self.n_skipped_short += 1
                q += len(plens)
                continue
            self._total[idx], self._stem_len[idx] = total, plens[0]
            self._need[idx] = total if total < n else self.threshold * total
            for j, k in enumerate(plens):
                start, q = off[q], q + 1
                if 0 < k < n:
                    self._short[idx].append((k, int(grams[k][start]), j == 0))
                    self._short_mass[idx] += k
                if k >= n:
                    g, klen = np.unique(grams[n][start:start + k - n + 1]), n
                elif j == 0:                 # a short stem: keyed by its first tokens, coverage comes later
                    klen = min(k, _STEM_KEY)
                    g = grams[klen][start:start + 1]
                else:
                    continue
                keys.append(np.stack([g, np.full(len(g), len(units), dtype=np.uint64)]))
                by_length.setdefault(klen, []).append(g)
                units.append((idx, k if k >= n else 0, len(g), j == 0))   # item, tokens, keys, is stem
        pairs = np.concatenate(keys, axis=1) if keys else np.zeros((2, 0), dtype=np.uint64)
        pairs = pairs[:, np.argsort(pairs[0], kind="stable")]
        self._keys, first = np.unique(pairs[0], return_index=True)
        self._post_off = np.append(first, pairs.shape[1])
        self._post_unit = pairs[1].astype(np.int64)
        self._filters = {k: bit_filter(np.concatenate(v) if v else np.zeros(0, np.uint64))
                         for k, v in sorted(by_length.items())}
        u = np.array(units, dtype=float).reshape(-1, 4)
        self._unit_item, self._unit_len, self._unit_grams, self._unit_stem = u[:, 0].astype(np.int64), *u[:, 1:].T

    @classmethod
    def from_benchmarks(cls, benchmarks: dict[str, str | Path], ngram_tokens: int = 8,
                        threshold: float = 0.5, on_missing: str = "error", **kw) -> "Decontaminator":
        """`benchmarks`: {name: folder in the official CSV layout}. A missing folder is an error, or
        with on_missing="warn" a printed warning (recorded in the report's `benchmarks`)."""
        items, sources = [], {}
        for name, path in benchmarks.items():
            if path and not Path(path).is_dir():
                msg = f"benchmark '{name}' not found at {path}: cannot decontaminate against it"
                if on_missing != "warn":
                    raise DecontamError(msg + " (set decontam.on_missing=warn to continue without it)")
                print(f"WARNING: {msg}")
                sources[name] = f"missing:{path}"
                continue
            loaded = load_benchmark_items(name, path)
            items += loaded
            sources[name] = f"local:{path}" if path else "builtin"
        return cls(items, ngram_tokens, threshold, sources=sources, **kw)

    def _unit_coverage(self, grams: dict[int, np.ndarray], text_of: np.ndarray) -> tuple[np.ndarray, ...]:
        """(text, keyed part, coverage) for every keyed part that shares a key with a text."""
        nk, nu = len(self._keys), len(self._unit_item)
        at = {k: np.nonzero(maybe_in(f, grams[k]))[0] for k, f in self._filters.items()}
        h = np.concatenate([grams[k][i] for k, i in at.items()])
        t = text_of[np.concatenate(list(at.values()))]
        if not nk or not len(h):
            return (np.zeros(0, np.int64),) * 2 + (np.zeros(0),)
        pos = np.minimum(np.searchsorted(self._keys, h), nk - 1)
        found = self._keys[pos] == h
        t, key = np.divmod(np.unique(t[found] * nk + pos[found]), nk)     # each key once per text
        lo = self._post_off[key]
        cnt = self._post_off[key + 1] - lo
        post = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(cnt.sum())   # every posting of every key
        pair, n_found = np.unique(np.repeat(t, cnt) * nu + self._post_unit[post], return_counts=True)
        t, unit = np.divmod(pair, nu)
        return t, unit, n_found / self._unit_grams[unit]

    def check_batch(self, texts: list[str]) -> list[list[tuple[int, float]]]:
        """[(item index, score)] of the hits of each text, best first."""
        out: list[list[tuple[int, float]]] = [[] for _ in texts]
        toks, text_of, off = tokenize(texts)
        grams = kgram_hashes(toks, self._filters.keys())   # n and the short stems' key lengths
        t, unit, cov = self._unit_coverage(grams, text_of)
        if not len(t):
            return out
        # Per (text, item), vectorised: tokens covered by the long parts, and an upper bound with
        # every short part present; only pairs that could reach the threshold are looked at further.
        long_part = self._unit_len[unit] > 0
        mass, stem = cov * self._unit_len[unit], self._unit_stem[unit]
        pair, inv = np.unique(t * len(self.items) + self._unit_item[unit], return_inverse=True)
        covered, stem_mass = np.bincount(inv, mass), np.bincount(inv, mass * stem)
        stem_cov = np.bincount(inv, cov * stem * long_part)
        short_stem_key = np.bincount(inv, stem * ~long_part) > 0
        t, item = np.divmod(pair, len(self.items))
        eps, theta = 1e-9, self.threshold
        by_options = covered - stem_mass >= theta * self._total[item] - eps
        anchor = (stem_cov >= theta - eps) | short_stem_key | by_options
        cand = np.nonzero(anchor & (covered + self._short_mass[item] >= self._need[item] - eps))[0]
        own: dict[int, dict[int, np.ndarray]] = {}   # text -> its k-grams of every short length, on demand
        for c in cand.tolist():
            ti, ii = int(t[c]), int(item[c])
            if ti not in own:
                own[ti] = kgram_hashes(toks[off[ti]:off[ti + 1] - 1], range(1, self.n))
            m, opts, short_stem = covered[c], covered[c] - stem_mass[c], False
            for k, h, is_stem in self._short[ii]:
                if (own[ti][k] == h).any():
                    m += k
                    opts += 0 if is_stem else k
                    short_stem |= is_stem
            # A stem under 2n tokens is no evidence on its own ("河南省的省会是" in a row that teaches the
            # fact): with it, the options as a set must be there too.
            stem_seen = stem_cov[c] >= theta - eps or short_stem
            opt_total = self._total[ii] - self._stem_len[ii]
            anchored = by_options[c] or (stem_seen and (self._stem_len[ii] >= 2 * self.n
                                                        or opts >= theta * opt_total - eps))
            if anchored and m >= self._need[ii] - eps:
                out[ti].append((ii, float(m / self._total[ii])))
        for hits in out:
            hits.sort(key=lambda x: -x[1])
        return out

    def hit(self, idx: int, score: float) -> Hit:
        it = self.items[idx]
        return Hit(it.benchmark, it.split, it.subject, it.id, round(score, 4), it.question)

    def check(self, text: str) -> list[Hit]:
        return [self.hit(i, s) for i, s in self.check_batch([text])[0]]

    def describe(self) -> dict:
        per = {}
        for it in self.items:
            per[it.benchmark] = per.get(it.benchmark, 0) + 1
        return {name: {"source": src, "n_items": per.get(name, 0)} for name, src in self.sources.items()}


# ---- checking records ----------------------------------------------------------------------------
_worker: dict = {}


def _init_worker(decon: Decontaminator) -> None:
    _worker["decon"] = decon


def _check_texts(texts: list[str]) -> list[list[tuple[int, float]]]:
    return _worker["decon"].check_batch(texts)


def auto_workers(n_rows: int, rows_per_worker: int = 20_000) -> int:
    """Processes for checking n_rows: one per 20k rows (below that, starting a process and copying the
    index costs more than it saves), at most the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, n_rows // rows_per_worker))


def _checked(records: Iterable[tuple[str, str, str]], decon: Decontaminator, workers: int, batch_rows: int):
    """(record, [(item, score)]) in input order. With workers > 1, batches go to a process pool (fork
    where there is one: the index is shared, not copied) with a few batches in flight, so a mix of
    millions of rows is never all in the task queue."""
    def batches():
        it = iter(records)
        while batch := list(islice(it, batch_rows)):
            yield batch

    if workers <= 1:
        for batch in batches():
            yield from zip(batch, decon.check_batch([r[2] for r in batch]))
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers, _init_worker, (decon,)) as pool:
        pending: deque = deque()
        for batch in batches():
            pending.append((batch, pool.apply_async(_check_texts, ([r[2] for r in batch],))))
            if len(pending) > 2 * workers:
                done, found = pending.popleft()
                yield from zip(done, found.get())
        while pending:
            done, found = pending.popleft()
            yield from zip(done, found.get())


def decontaminate(records: Iterable[tuple[str, str, str]], decon: Decontaminator, policy: str = "drop",
                  max_examples: int = 50, workers: int = 1, batch_rows: int = 256) -> tuple[list[bool], dict]:
    """records: (source, where, text). Returns (keep flag per record, decontamination.json dict).
    policy "drop" removes hits; "flag" keeps them but reports them. Any `workers` gives the same result."""
    if policy not in ("drop", "flag"):
        raise DecontamError(f"decontam policy must be 'drop' or 'flag', got {policy!r}")
    keep, per_source, per_bench, examples = [], {}, {}, []
    n_checked = n_flagged = 0
    for (source, where, text), found in _checked(records, decon, workers, batch_rows):
        n_checked += 1
        ps = per_source.setdefault(source, {"checked": 0, "flagged": 0})
        ps["checked"] += 1
        hits = [decon.hit(i, s) for i, s in found]
        if hits:
            n_flagged += 1
            ps["flagged"] += 1
            for b in {h.benchmark for h in hits}:
                per_bench[b] = per_bench.get(b, 0) + 1
            if len(examples) < max_examples:
                h = hits[0]
                examples.append({"source": source, "where": where, "text": text[:200],
                                 "benchmark": h.benchmark, "split": h.split, "subject": h.subject,
                                 "id": h.id, "score": h.score, "question": h.question[:200],
                                 "n_hits": len(hits)})
        keep.append(not (hits and policy == "drop"))
    report = {"policy": policy, "method": METHOD, "threshold": decon.threshold, "ngram_tokens": decon.n,
              "n_checked": n_checked, "n_flagged": n_flagged,
              "n_dropped": n_flagged if policy == "drop" else 0,
              "per_source": per_source, "per_benchmark": {b: per_bench.get(b, 0) for b in decon.sources} | per_bench,
              "benchmarks": decon.describe(), "n_items_skipped_short": decon.n_skipped_short,
              "examples": examples}
    return keep, report


def write_report(path: str | Path, report: dict) -> Path:
    return atomic_write_json(path, report)


# ---- records of the preference and RL stages -----------------------------------------------------
@dataclass
class DecontamOptions:
    """The `decontam:` section of DPO and GRPO: training text against benchmark questions (as in SFT)."""
    policy: str = "drop"                  # drop | flag | none (YAML reads a bare `off` as false: also none)
    benchmarks: list[str] = field(default_factory=lambda: [   # "name:folder" in the official CSV layout
        "ceval:{data_root}/ceval", "cmmlu:{data_root}/cmmlu", "demo:eval/benchmarks/demo_bench"])
    ngram_tokens: int = 8                 # n-gram length in tokens (CJK characters / latin words)
    threshold: float = 0.5                # fraction of a benchmark item's n-grams that makes a hit
    on_missing: str = "error"             # a benchmark folder that is absent: error (as in SFT) | warn


def decontaminate_records(records: list[tuple[str, str, str]], opts: DecontamOptions, data_root: Path,
                          report_path: Path) -> list[bool]:
    """Keep flags for (source, where, text) records; writes decontamination.json (also for policy off)."""
    if opts.policy.lower() in ("none", "off", "false"):
        atomic_write_json(report_path, {"policy": "none", "threshold": None, "n_checked": 0, "n_flagged": 0,
                                        "n_dropped": 0, "per_source": {}, "per_benchmark": {}, "examples": []})
        return [True] * len(records)
    benches = {}
    for entry in opts.benchmarks:
        name, sep, path = entry.partition(":")
        if not sep or not path:
            raise ConfigError(f"decontam.benchmarks entries are 'name:folder', got {entry!r}")
        benches[name] = expand_path(path, data_root)
    decon = Decontaminator.from_benchmarks(benches, ngram_tokens=opts.ngram_tokens, threshold=opts.threshold,
                                           on_missing=opts.on_missing)
    keep, report = decontaminate(records, decon, policy=opts.policy, workers=auto_workers(len(records)))
    write_report(report_path, report)
    print(f"decontamination ({opts.policy}): {report['n_checked']} checked, {report['n_flagged']} flagged, "
          f"{report['n_dropped']} dropped -> {report_path}")
    return keep
