"""Benchmark questions: C-Eval, CMMLU and the built-in demo benchmark as lists of `Question`s.

Shared by eval/ (scoring) and data_recipes/ (decontamination, RL prompts from the dev split), so it
lives in core/ and imports no stage. The benchmark specs stay next to their docs in
eval/benchmarks/<name>.yaml; this module knows that folder by path only.

Three sources, one result:
- a local copy in the official CSV layout (`data_dir=`): C-Eval `<split>/<subject>_<split>.csv`
  (header `id,question,A,B,C,D,answer[,explanation]`), CMMLU `<split>/<subject>.csv` (header
  `,Question,A,B,C,D,Answer`, the first column an unnamed row index);
- the built-in benchmark of a spec with `builtin_dir` (eval/benchmarks/demo_bench, C-Eval layout);
- the Hugging Face hub (`datasets.load_dataset("ceval/ceval-exam", subject)` /
  `("haonan-li/cmmlu", subject)`), the default when no data_dir is given. It needs the network.

Subject metadata (English name, Chinese name, category) comes from `subject_mapping.json` in the
data folder when there is one, else from the spec's `subjects` table (a copy of the official file).
A subject with a `dev` file but no scored file is skipped with a note (../shared/data holds out
some subjects on purpose); the result is then labelled `subset: shared-split`.

    from core.benchmarks import load_benchmark, load_questions
    bench = load_benchmark("cmmlu", data_dir="../shared/data/cmmlu")   # .questions, .shots, .notes
    every = load_questions("ceval", data_dir=..., splits=("dev", "val")) # for decontamination
"""
from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.errors import UserError
from core.runs import REPO_ROOT

BENCH_DIR = REPO_ROOT / "eval" / "benchmarks"   # the specs (<name>.yaml) and their docs (<name>.md)
LETTERS = ("A", "B", "C", "D")
HEADERS = {  # layout -> the header columns that must open each file (extra trailing columns allowed)
    "ceval": ["id", "question", "A", "B", "C", "D", "answer"],
    "cmmlu": ["", "Question", "A", "B", "C", "D", "Answer"],
}


class BenchmarkDataError(UserError, ValueError):
    """A benchmark file that cannot be used; the message names the file and line."""
    kind = "data"


@dataclass
class BenchSpec:
    """One benchmark (the `bench:` section of eval/benchmarks/<name>.yaml)."""
    name: str = ""                 # ceval | cmmlu | demo
    version: str = "1"             # bumped when questions, prompt or scoring of the benchmark change
    hub_path: str = ""             # Hugging Face dataset id (one config per subject)
    layout: str = "ceval"          # CSV file naming and header: ceval | cmmlu
    split: str = "val"             # the scored split
    shot_split: str = "dev"        # few-shot exemplars come from here
    n_shots: int = 5               # exemplars per subject for the few-shot protocols
    builtin_dir: str = ""          # repo-relative folder of a built-in copy (used when data_dir is empty)
    instruction: str = ""          # few-shot header; {subject_zh} / {subject_en} are filled in
    answer_prefix: str = "答案："    # text right before the answer letter
    steel_blank: list[str] = field(default_factory=list)  # [old, new]: Steel-LLM's rewrite of the blank
    steel_extractor: str = "qwen-ceval"  # steel-compat extraction: qwen-ceval | cmmlu
    categories: list[str] = field(default_factory=list)          # reporting groups, in order
    extra_groups: dict[str, list[str]] = field(default_factory=dict)  # overlapping groups (hard, China specific)
    subjects: dict[str, list[str]] = field(default_factory=dict)      # subject -> [English, Chinese, category]


@dataclass(frozen=True)
class Question:
    subject: str
    category: str
    id: str                        # "<subject>/<split>/<row id>", stable across runs
    question: str
    choices: tuple[str, str, str, str]
    answer: str                    # "A".."D"
    split: str = ""
    explanation: str = ""


@dataclass
class Benchmark:
    spec: BenchSpec
    questions: list[Question]                # scored split, subject by subject
    shots: dict[str, list[Question]]         # subject -> dev exemplars
    subjects: dict[str, list[str]]           # subject -> [English, Chinese, category] (scored ones)
    data_source: str                         # "hub:<id>" | "local:<dir>"
    subset: str                              # "full" | "shared-split" | "builtin"
    notes: list[str] = field(default_factory=list)


# ---- specs ---------------------------------------------------------------------------------------
def spec_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    return BENCH_DIR / f"{name_or_path}.yaml"


def load_spec(name_or_path: str | Path) -> BenchSpec:
    """The `bench:` section of a benchmark YAML ("ceval", "cmmlu", "demo" or a path)."""
    p = spec_path(name_or_path)
    if not p.is_file():
        raise BenchmarkDataError(f"benchmark spec not found: {p}")
    raw = (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("bench")
    if not isinstance(raw, dict):
        raise BenchmarkDataError(f"{p}: no `bench:` mapping")
    return spec_from_dict(raw, source=str(p))


def spec_from_dict(raw: dict, source: str = "") -> BenchSpec:
    known = {f.name for f in dataclasses.fields(BenchSpec)}
    unknown = set(raw) - known
    if unknown:
        raise BenchmarkDataError(f"{source}: unknown bench keys {sorted(unknown)}")
    return BenchSpec(**raw)


# ---- CSV files -----------------------------------------------------------------------------------
def subject_file(root: Path, layout: str, split: str, subject: str) -> Path:
    return root / split / (f"{subject}_{split}.csv" if layout == "ceval" else f"{subject}.csv")


def read_subject_csv(path: str | Path, layout: str, subject: str, category: str, split: str,
                     require_answer: bool = True) -> list[Question]:
    """Rows of one official CSV, validated: header, four options, answer in A-D; errors name file:line."""
    path = Path(path)
    want = HEADERS[layout]
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise BenchmarkDataError(f"{path}:1: empty file (expected header {','.join(want)})")
        if [h.strip() for h in header[:len(want)]] != want:
            raise BenchmarkDataError(f"{path}:1: unexpected header {','.join(header)!r}; the {layout} layout "
                                     f"needs {','.join(want)!r}")
        col = {h.strip(): i for i, h in enumerate(header)}
        out: list[Question] = []
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num   # a quoted field may span several lines
            if not any(c.strip() for c in row):
                continue
            if len(row) < len(want):
                raise BenchmarkDataError(f"{path}:{start}: {len(row)} columns, expected at least {len(want)}")
            ans = row[col["answer" if layout == "ceval" else "Answer"]].strip().upper()
            if require_answer and not ans:
                raise BenchmarkDataError(f"{path}:{start}: missing answer")
            if ans and ans not in LETTERS:
                raise BenchmarkDataError(f"{path}:{start}: answer {ans!r} is not one of A, B, C, D")
            rid = row[0].strip() or str(len(out))
            q = row[col["question" if layout == "ceval" else "Question"]]
            expl = row[col["explanation"]] if "explanation" in col and len(row) > col["explanation"] else ""
            out.append(Question(subject, category, f"{subject}/{split}/{rid}", q,
                                tuple(row[col[c]] for c in LETTERS), ans, split, expl))
    if not out:
        raise BenchmarkDataError(f"{path}:2: no questions (header only)")
    return out


def _subject_table(spec: BenchSpec, root: Path | None) -> dict[str, list[str]]:
    if root is not None and (root / "subject_mapping.json").is_file():
        mp = root / "subject_mapping.json"
        try:
            table = json.loads(mp.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise BenchmarkDataError(f"{mp}:{e.lineno}: invalid JSON: {e.msg}") from None
        for s, meta in table.items():
            if not (isinstance(meta, list) and len(meta) == 3):
                raise BenchmarkDataError(f"{mp}: subject {s!r} must map to [English, Chinese, category]")
        return table
    if not spec.subjects:
        raise BenchmarkDataError(f"benchmark {spec.name!r}: no subject table (spec `subjects` empty and no "
                                 f"subject_mapping.json in {root})")
    return spec.subjects


def _root_for(spec: BenchSpec, data_dir: str | Path | None) -> tuple[Path | None, str, str]:
    """(local root or None for the hub, data_source, subset label)."""
    if data_dir:
        root = Path(data_dir)
        if not root.is_dir():
            raise BenchmarkDataError(f"data_dir not found: {root}")
        return root, f"local:{root}", "full"
    if spec.builtin_dir:
        root = REPO_ROOT / spec.builtin_dir
        return root, f"local:{spec.builtin_dir}", "builtin"
    return None, f"hub:{spec.hub_path}", "full"


def _hub_rows(spec: BenchSpec, subject: str, split: str, category: str) -> list[Question]:
    """One subject split from the hub (needs network; HF_DATASETS_OFFLINE=1 makes this fail fast)."""
    import datasets
    try:
        ds = datasets.load_dataset(spec.hub_path, subject, split=split)
    except (ConnectionError, OSError) as e:
        raise BenchmarkDataError(f"cannot load hub:{spec.hub_path}/{subject} split {split} ({type(e).__name__}: "
                                 f"{e}); offline, pass data_dir=<local copy in the official CSV layout>") from None
    qkey, akey = ("question", "answer") if spec.layout == "ceval" else ("Question", "Answer")
    out = []
    for i, r in enumerate(ds):
        ans = str(r.get(akey) or "").strip().upper()
        if ans not in LETTERS and split != "test":
            raise BenchmarkDataError(f"hub:{spec.hub_path}/{subject}/{split} row {i}: answer {ans!r} not in A-D")
        rid = r.get("id", i)
        out.append(Question(subject, category, f"{subject}/{split}/{rid}", r[qkey],
                            tuple(str(r[c]) for c in LETTERS), ans, split, r.get("explanation") or ""))
    return out


def _load_split(spec, root, subject, split, category, require_answer=True) -> list[Question] | None:
    if root is None:
        return _hub_rows(spec, subject, split, category)
    p = subject_file(root, spec.layout, split, subject)
    if not p.is_file():
        return None
    return read_subject_csv(p, spec.layout, subject, category, split, require_answer)


def load_benchmark(spec: BenchSpec | str, data_dir: str | Path | None = None, split: str | None = None,
                   subjects: list[str] | None = None, with_shots: bool = True) -> Benchmark:
    """The scored questions (and dev shots) of a benchmark from a local copy, the built-in copy or the hub."""
    spec = load_spec(spec) if isinstance(spec, (str, Path)) else spec
    split = split or spec.split
    root, source, subset = _root_for(spec, data_dir)
    table = _subject_table(spec, root)
    names = list(subjects) if subjects else list(table)
    missing = [s for s in names if s not in table]
    if missing:
        raise BenchmarkDataError(f"unknown subject(s) for {spec.name}: {', '.join(missing)}")
    questions, shots, used, notes = [], {}, {}, []
    for s in names:
        category = table[s][2]
        rows = _load_split(spec, root, s, split, category)
        dev = _load_split(spec, root, s, spec.shot_split, category) if with_shots else []
        if rows is None:
            where = subject_file(root, spec.layout, split, s)
            notes.append(f"skipped {s}: {'has ' + spec.shot_split + ' but ' if dev else ''}no scored file {where}")
            continue
        if with_shots and dev is None:
            raise BenchmarkDataError(f"{subject_file(root, spec.layout, spec.shot_split, s)}: missing "
                                     f"({spec.shot_split} exemplars are needed for subject {s})")
        questions += rows
        shots[s] = list(dev or [])
        used[s] = table[s]
    if not questions:
        raise BenchmarkDataError(f"no scored questions for {spec.name} split {split} in {source}")
    if notes and subset == "full" and root is not None:
        subset = "shared-split"
    return Benchmark(spec, questions, shots, used, source, subset, notes)


def load_questions(spec: BenchSpec | str, data_dir: str | Path | None = None,
                   splits: tuple[str, ...] = ("dev", "val", "test")) -> list[Question]:
    """Every question found for the given splits (missing files are fine): for decontamination."""
    spec = load_spec(spec) if isinstance(spec, (str, Path)) else spec
    root, _, _ = _root_for(spec, data_dir)
    table = _subject_table(spec, root)
    out: list[Question] = []
    for s, meta in table.items():
        for split in splits:
            if root is None:
                try:
                    out += _hub_rows(spec, s, split, meta[2])
                except (ValueError, KeyError):   # a split the hub dataset does not have
                    continue
            else:
                rows = _load_split(spec, root, s, split, meta[2], require_answer=False)
                out += rows or []
    return out


def group_members(bench: Benchmark) -> dict[str, list[str]]:
    """Reporting group -> scored subjects: each category, then the spec's extra (overlapping) groups."""
    groups: dict[str, list[str]] = {c: [] for c in bench.spec.categories}
    for s, meta in bench.subjects.items():
        groups.setdefault(meta[2], []).append(s)
    for g, members in bench.spec.extra_groups.items():
        groups[g] = [s for s in members if s in bench.subjects]
    return {g: m for g, m in groups.items() if m}
