"""Decontamination of training text against benchmark questions (C-Eval, CMMLU, the demo bench).

Every benchmark item (question + its options, all splits present on disk) is normalised and cut
into token n-grams; a training text is a hit for an item when it contains at least `threshold` of
the item's n-grams. Coverage of the *item* (not of the text) is what counts, so a long conversation
that quotes one question is still caught, while a text that merely shares a stock phrase such as
"下列说法正确的是" with many questions is not.

Normalisation: NFKC, lower case, fill-in blanks and option labels ("A." "(B)") removed; tokens are
single CJK characters and runs of latin letters/digits. Items shorter than the n-gram length count
as one n-gram of their own length (an exact token-sequence match); items under `min_item_tokens`
are skipped (too short to tell a copy from a coincidence) and counted.

    decon = Decontaminator.from_benchmarks({"ceval": "../shared/data/ceval", "demo": ""}, ngram_tokens=8,
                                           threshold=0.5)   # "" = the spec's built-in copy
    decon.check("...text...")            -> [Hit(benchmark, split, subject, id, score, question)]
    keep, report = decontaminate(records, decon, policy="drop")   # records: (source, where, text)
    write_report(run.path / "decontamination.json", report)

DPO and GRPO configure it with a `decontam:` section (`DecontamOptions`) and call
`decontaminate_records`, which does all of the above; SFT mixes use sft_mix.run_decontam.
"""
from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from core.config import ConfigError
from core.errors import UserError
from core.runs import atomic_write_json
from data_recipes.preference import expand_path

_TOKEN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]|[a-z0-9]+")
# Option labels at a line start or after whitespace/punctuation ("A." "B、" "(C)" "D:"), and blanks.
_LABEL_RE = re.compile(r"(?:(?<=^)|(?<=[\s(（]))\(?[a-e][.．、:：)）]", re.MULTILINE)
_BLANK_RE = re.compile(r"_{2,}|（\s*）|\(\s*\)")


class DecontamError(UserError, ValueError):
    """A benchmark folder that is missing or unreadable."""
    kind = "decontamination"


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _BLANK_RE.sub(" ", text)
    return _LABEL_RE.sub(" ", text)


def tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(normalize(text))


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
    score: float          # fraction of the item's n-grams found in the text
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


class Decontaminator:
    """An n-gram index over benchmark items; `check(text)` returns the items a text overlaps."""

    def __init__(self, items: list[BenchItem], ngram_tokens: int = 8, threshold: float = 0.5,
                 min_item_tokens: int = 5, sources: dict[str, str] | None = None):
        if not 0 < threshold <= 1:
            raise DecontamError(f"threshold must be in (0, 1], got {threshold}")
        self.n, self.threshold, self.min_item_tokens = ngram_tokens, threshold, min_item_tokens
        self.items = items
        self.sources = sources or {}
        self.n_skipped_short = 0
        self._grams_per_item: list[int] = []
        self._index: dict[int, list[int]] = {}
        self._lengths: set[int] = set()
        for idx, item in enumerate(items):
            grams = self._grams(tokens(item.text), item_side=True)
            self._grams_per_item.append(len(grams))
            if not grams:
                self.n_skipped_short += 1
            for g in grams:
                self._index.setdefault(g, []).append(idx)

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

    def _grams(self, toks: list[str], item_side: bool = False) -> set[int]:
        n = self.n
        if item_side and len(toks) < n:
            if len(toks) < self.min_item_tokens:
                return set()
            self._lengths.add(len(toks))
            return {hash(tuple(toks))}
        return {hash(tuple(toks[i:i + n])) for i in range(len(toks) - n + 1)}

    def check(self, text: str) -> list[Hit]:
        toks = tokens(text)
        grams = self._grams(toks)
        for k in self._lengths:  # whole-item grams of the short items
            grams |= {hash(tuple(toks[i:i + k])) for i in range(len(toks) - k + 1)}
        counts: dict[int, int] = {}
        for g in grams:
            for idx in self._index.get(g, ()):
                counts[idx] = counts.get(idx, 0) + 1
        hits = []
        for idx, c in counts.items():
            score = c / self._grams_per_item[idx]
            if score >= self.threshold:
                it = self.items[idx]
                hits.append(Hit(it.benchmark, it.split, it.subject, it.id, round(score, 4), it.question))
        return sorted(hits, key=lambda h: -h.score)

    def describe(self) -> dict:
        per = {}
        for it in self.items:
            per[it.benchmark] = per.get(it.benchmark, 0) + 1
        return {name: {"source": src, "n_items": per.get(name, 0)} for name, src in self.sources.items()}


def decontaminate(records: Iterable[tuple[str, str, str]], decon: Decontaminator, policy: str = "drop",
                  max_examples: int = 50) -> tuple[list[bool], dict]:
    """records: (source, where, text). Returns (keep flag per record, decontamination.json dict).
    policy "drop" removes hits; "flag" keeps them but reports them."""
    if policy not in ("drop", "flag"):
        raise DecontamError(f"decontam policy must be 'drop' or 'flag', got {policy!r}")
    keep, per_source, per_bench, examples = [], {}, {}, []
    n_checked = n_flagged = 0
    for source, where, text in records:
        n_checked += 1
        ps = per_source.setdefault(source, {"checked": 0, "flagged": 0})
        ps["checked"] += 1
        hits = decon.check(text)
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
    report = {"policy": policy, "threshold": decon.threshold, "ngram_tokens": decon.n,
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
    keep, report = decontaminate(records, decon, policy=opts.policy)
    write_report(report_path, report)
    print(f"decontamination ({opts.policy}): {report['n_checked']} checked, {report['n_flagged']} flagged, "
          f"{report['n_dropped']} dropped -> {report_path}")
    return keep
