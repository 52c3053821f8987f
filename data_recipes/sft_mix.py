"""SFT data recipes: a YAML mixture of sources, each normalised to chat messages, filtered, capped,
weighted and shuffled with a seed; then decontaminated against the benchmarks and rendered through
the tokenizer's ChatML template with an assistant-only loss mask.

A recipe (data_recipes/sft_mixes/<name>.yaml) sets the fields of `MixRecipe`:

    name: zh_mix_small
    data_root: ""                 # "" = $ZHLLM_SHARED_DATA or ../shared/data
    identity: {name: 知微, author: zhllm-kit}
    max_tokens: 1024              # token-length cap (examples longer are dropped and reported)
    allow_hub: false              # true: fetch a source's `hub` dataset when its file is absent
    decontam: {benchmarks: {ceval: ceval, cmmlu: cmmlu}, ngram_tokens: 8, threshold: 0.5, policy: drop}
    sources:
      - {name: ruozhiba, format: alpaca, path: sft/ruozhiba_qa.json, hub: LooksJuicy/ruozhiba,
         filters: {lang: zh}, max_samples: 1000, weight: 1.0}

Formats: alpaca (instruction/input/output[/system/history]), sharegpt (conversations: from/value),
messages (OpenAI role/content), prompt_response (prompt/response), mcq (question, options A-D,
answer, explanation; `mcq_style: plain | cot`), identity (our templates, no file). `fields:` renames
a format's canonical keys to the file's keys (e.g. WanJuan's `question: q_main`). Order of work per
source: read -> normalise -> filter -> cap + weight (seeded) -> render and length-cap (with a tokenizer).

Bad rows (missing fields, empty conversation, role order other than [system] user/assistant ...,
longer than the cap) are counted per source and listed with file:line; a source whose bad rows
exceed `max_bad_fraction`, an unknown format or an unreadable file stops with an error.

Run as (CPU; no GPU is involved in data work):
    python -m data_recipes.sft_mix data_recipes/sft_mixes/demo.yaml --tokenizer runs/data/demo/tokenizer
    python -m data_recipes.sft_mix zh_mix_small --export-llamafactory /tmp/lf_zh_mix_small
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.config import ConfigError, load_config, to_dict
from core.errors import UserError, entrypoint
from core.runs import REPO_ROOT, atomic_write_json, sha256_file, shared_data_root
from data_recipes import identity as identity_mod
from data_recipes import sft_formats as fmt
from data_recipes.sources import json_array_rows, read_utf8

MIX_DIR = Path(__file__).resolve().parent / "sft_mixes"


class MixError(UserError, ValueError):
    """A structural problem with a data recipe or a source file: the run must not start."""
    kind = "data"


@dataclass
class FilterSpec:
    """Per-source filters (rows they remove are 'filtered', not 'bad')."""
    lang: str = ""                    # "zh": keep examples whose CJK ratio >= min_cjk_ratio; "" = no language filter
    min_cjk_ratio: float = 0.5        # CJK characters / (CJK characters + latin letters), all turns together
    min_response_chars: int = 1       # drop examples whose shortest assistant turn is shorter
    exclude_patterns: list[str] = field(default_factory=list)  # regexes; a match anywhere drops the example


@dataclass
class SourceSpec:
    """One entry of a mixture."""
    name: str = ""                    # label used in reports and decontamination.json
    format: str = ""                  # alpaca | sharegpt | messages | prompt_response | mcq | identity
    path: str = ""                    # file or glob under data_root (.json array, .jsonl, .parquet)
    hub: str = ""                     # hub dataset id; used only when `path` is absent and allow_hub is true
    hub_config: str = ""              # config (subset) of the hub dataset, e.g. Infinity-Instruct's "7M"
    hub_split: str = "train"          # split of the hub dataset
    fields: dict[str, str] = field(default_factory=dict)  # canonical key -> key in the file
    mcq_style: str = "plain"          # mcq: plain (letter only) | cot (explanation, then the letter)
    fill_identity: bool = False       # replace {{name}}/{{author}} placeholders (LLaMA-Factory identity.json)
    filters: FilterSpec = field(default_factory=FilterSpec)
    max_samples: int = 0              # cap after filtering (0 = all), sampled with the seed
    weight: float = 1.0               # repeat factor after the cap: 2.0 = every example twice, 0.5 = half
    seed: int = 0                     # mixed with the recipe seed and the source name


@dataclass
class IdentitySpec:
    """The model's self-identity, filled into identity templates."""
    name: str = ""                    # the model's name, e.g. 小钢
    author: str = ""                  # who made it
    langs: list[str] = field(default_factory=lambda: ["zh", "en"])
    templates: str = ""               # templates file; "" = data_recipes/identity_templates.yaml


@dataclass
class DecontamSpec:
    """Benchmarks every example is checked against before training."""
    benchmarks: dict[str, str] = field(default_factory=dict)           # name -> folder ("" = built-in copy); must exist
    optional_benchmarks: dict[str, str] = field(default_factory=dict)  # checked when present, else a warning
    bench_root: str = ""              # relative benchmark folders resolve here; "" = the shared data folder
    ngram_tokens: int = 8             # n-gram length in tokens (a CJK character or a latin/digit run)
    threshold: float = 0.5            # fraction of a benchmark item's n-grams found in an example = a hit
    policy: str = "drop"              # drop | flag
    enabled: bool = True              # false only for experiments; recorded in decontamination.json


@dataclass
class MixRecipe:
    """An SFT data recipe: sources, filters, caps, seed, identity, decontamination."""
    name: str = ""
    description: str = ""
    data_root: str = ""               # "" = $ZHLLM_SHARED_DATA or ../shared/data
    seed: int = 0
    system_prompt: str = ""           # prepended as a system turn when an example has none ("" = none)
    max_tokens: int = 0               # rendered length cap in tokens (0 = none); longer examples are dropped
    max_bad_fraction: float = 0.2     # more bad rows than this in one source = a structural error
    allow_hub: bool = False           # download a source's `hub` dataset when its local file is absent
    identity: IdentitySpec = field(default_factory=IdentitySpec)
    decontam: DecontamSpec = field(default_factory=DecontamSpec)
    sources: list[SourceSpec] = field(default_factory=list)


@dataclass
class Example:
    messages: list[dict]
    source: str
    where: str                        # file:line (or hub row) the example came from
    input_ids: list[int] | None = None
    labels: list[int] | None = None   # -100 outside assistant turns

    def text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)


@dataclass
class MixResult:
    recipe: MixRecipe
    examples: list[Example]
    stats: dict[str, dict]            # source -> {rows, bad: {kind: n}, filtered: {kind: n}, kept, sampled}
    problems: list[dict]              # first problems of each kind: {source, where, kind, detail}
    files: dict[str, str]             # file -> sha256
    hash: str                         # data-recipe hash: resolved recipe + file contents

    def report(self) -> dict:
        return {"recipe": self.recipe.name, "hash": self.hash, "n_examples": len(self.examples),
                "sources": self.stats, "problems": self.problems, "files": self.files}


# ---- recipe ---------------------------------------------------------------------------------------
def resolve_path(p: str, base: Path) -> Path:
    """Absolute as is; else under `base`; else relative to the repository (the demo's own files)."""
    path = Path(os.path.expandvars(p))
    if path.is_absolute():
        return path
    if (base / path).exists() or not (REPO_ROOT / path).exists():
        return base / path
    return REPO_ROOT / path


def mix_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    return p if p.suffix in (".yaml", ".yml") else MIX_DIR / f"{name_or_path}.yaml"


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> MixRecipe:
    path = mix_path(name_or_path)
    try:
        recipe = load_config(MixRecipe, path, overrides)
    except ConfigError as e:
        raise MixError(str(e)) from None
    recipe.name = recipe.name or path.stem
    for i, s in enumerate(recipe.sources):
        if not s.name:
            raise MixError(f"{path}: sources[{i}] has no name")
        if s.format not in fmt.FORMATS:
            raise MixError(f"{path}: source '{s.name}': unknown format {s.format!r} "
                           f"(known: {', '.join(sorted(fmt.FORMATS))})")
    if len({s.name for s in recipe.sources}) != len(recipe.sources):
        raise MixError(f"{path}: source names must be unique")
    return recipe


def data_root(recipe: MixRecipe) -> Path:
    if not recipe.data_root:
        return shared_data_root()
    p = Path(os.path.expandvars(recipe.data_root))
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


# ---- reading ----------------------------------------------------------------------------------------
def iter_rows(src: SourceSpec, root: Path, files: dict[str, str], allow_hub: bool = False):
    """(where, row dict) for every row of a source: local files first, else (opt-in) the hub."""
    pattern = str(resolve_path(src.path, root)) if src.path else ""
    paths = sorted(glob.glob(pattern)) if pattern else []
    if not paths:
        if not src.hub:
            raise MixError(f"source '{src.name}': no file matches {pattern or '(no path)'} and no hub dataset is named")
        if not allow_hub:
            raise MixError(f"source '{src.name}': no local file at {pattern}; download {src.hub} there, or "
                           f"set allow_hub=true to fetch it from the hub (network)")
        if os.environ.get("HF_DATASETS_OFFLINE") == "1":
            raise MixError(f"source '{src.name}': no local file at {pattern} and the hub is off "
                           f"(HF_DATASETS_OFFLINE=1); download {src.hub} to that path or unset the variable")
        import datasets
        ds = datasets.load_dataset(src.hub, src.hub_config or None, split=src.hub_split)
        files[f"hub:{src.hub}[{src.hub_split}]"] = getattr(ds, "_fingerprint", "")
        for i, row in enumerate(ds):
            yield f"hub:{src.hub}[{src.hub_split}] row {i}", row
        return
    for p in map(Path, paths):
        files[str(p)] = sha256_file(p)
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq
            i = 0
            for batch in pq.ParquetFile(p).iter_batches(batch_size=4096):  # streamed: shards can be GBs
                for row in batch.to_pylist():
                    yield f"{p}:row {i}", row
                    i += 1
        elif p.suffix == ".jsonl":
            with open(p, "rb") as f:
                for n, raw in enumerate(f, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise MixError(f"{p}:{n}: invalid UTF-8 at byte {e.start} of the line ({e.reason})") from None
                    if line.strip():
                        try:
                            yield f"{p}:{n}", json.loads(line)
                        except json.JSONDecodeError as e:
                            raise MixError(f"{p}:{n}: invalid JSON: {e.msg}") from None
        elif p.suffix == ".json":
            yield from json_array_rows(p, read_utf8(p, MixError), MixError)   # where: file:line: row N
        else:
            raise MixError(f"{p}: unsupported file type {p.suffix!r} (.json, .jsonl, .parquet)")


# ---- filters and sampling -----------------------------------------------------------------------
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_RE = re.compile(r"[A-Za-z]")


def cjk_ratio(text: str) -> float:
    """A language-ID proxy: CJK characters / (CJK characters + latin letters); 0 for neither."""
    cjk, latin = len(_CJK_RE.findall(text)), len(_LATIN_RE.findall(text))
    return cjk / (cjk + latin) if cjk + latin else 0.0


def filter_reason(messages: list[dict], f: FilterSpec, patterns: list[re.Pattern]) -> str | None:
    text = "\n".join(m["content"] for m in messages)
    if f.lang == "zh" and cjk_ratio(text) < f.min_cjk_ratio:
        return "lang"
    if f.lang not in ("", "zh"):
        raise MixError(f"filters.lang: only 'zh' is supported, got {f.lang!r}")
    if min(len(m["content"]) for m in messages if m["role"] == "assistant") < f.min_response_chars:
        return "short_response"
    if any(p.search(text) for p in patterns):
        return "excluded_pattern"
    return None


def sample(examples: list, max_samples: int, weight: float, rng: random.Random) -> list:
    """Cap (random subset, order kept), then repeat by `weight` (whole copies + a random remainder)."""
    if max_samples and len(examples) > max_samples:
        keep = sorted(rng.sample(range(len(examples)), max_samples))
        examples = [examples[i] for i in keep]
    if weight <= 0:
        raise MixError(f"weight must be > 0, got {weight}")
    target = round(len(examples) * weight)
    whole, rest = divmod(target, len(examples)) if examples else (0, 0)
    return examples * whole + [examples[i] for i in sorted(rng.sample(range(len(examples)), rest))]


# ---- the mixture ------------------------------------------------------------------------------------
def load_mix(recipe: MixRecipe, tokenizer=None, max_problems_per_kind: int = 5) -> MixResult:
    """Read, normalise, filter and sample every source; with a tokenizer also render each sampled
    example (input_ids + labels) and drop those over `recipe.max_tokens` (reported as too_long)."""
    root = data_root(recipe)
    files: dict[str, str] = {}
    stats: dict[str, dict] = {}
    problems: list[dict] = []
    mixed: list[Example] = []
    if tokenizer is not None:
        fmt.check_template(tokenizer)
    for src in recipe.sources:
        st = stats[src.name] = {"rows": 0, "bad": {}, "filtered": {}, "kept": 0, "sampled": 0}
        patterns = [re.compile(p) for p in src.filters.exclude_patterns]
        kept: list[Example] = []

        def bad(kind: str, where: str, detail: str) -> None:
            st["bad"][kind] = st["bad"].get(kind, 0) + 1
            if st["bad"][kind] <= max_problems_per_kind:
                problems.append({"source": src.name, "where": where, "kind": kind, "detail": detail[:200]})

        if src.format == "identity":
            tpl = recipe.identity.templates or identity_mod.TEMPLATES
            files[str(tpl)] = sha256_file(tpl)
            rows = identity_mod.identity_conversations(recipe.identity.name, recipe.identity.author,
                                                       recipe.identity.langs, seed=recipe.seed, path=tpl)
            normalised = ((where, msgs, None) for where, msgs in rows)
        else:
            normalised = fmt.normalise_rows(iter_rows(src, root, files, recipe.allow_hub), src)
        for where, messages, error in normalised:
            st["rows"] += 1
            if error is not None:
                if error[0].startswith("filtered:"):  # e.g. a multi-answer MCQ: a filter, not bad input
                    k = error[0].split(":", 1)[1]
                    st["filtered"][k] = st["filtered"].get(k, 0) + 1
                else:
                    bad(error[0], where, error[1])
                continue
            if src.fill_identity:
                messages = [{**m, "content": identity_mod.fill(m["content"], recipe.identity.name,
                                                               recipe.identity.author, where)} for m in messages]
            reason = filter_reason(messages, src.filters, patterns)
            if reason:
                st["filtered"][reason] = st["filtered"].get(reason, 0) + 1
                continue
            if recipe.system_prompt and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": recipe.system_prompt}] + messages
            kept.append(Example(messages, src.name, where))
        n_bad = sum(st["bad"].values())
        if st["rows"] and n_bad / st["rows"] > recipe.max_bad_fraction:
            first = "; ".join(f"{p['where']}: {p['kind']} ({p['detail']})" for p in problems
                              if p["source"] == src.name)[:600]
            raise MixError(f"source '{src.name}': {n_bad} of {st['rows']} rows are bad (> max_bad_fraction "
                           f"{recipe.max_bad_fraction}); is format '{src.format}' right? First: {first}")
        if not kept:
            raise MixError(f"source '{src.name}': no usable examples ({st['rows']} rows, bad {st['bad']}, "
                           f"filtered {st['filtered']})")
        st["kept"] = len(kept)
        rng = random.Random(f"{recipe.seed}:{src.name}:{src.seed}")
        chosen = sample(kept, src.max_samples, src.weight, rng)
        if tokenizer is not None:
            # Rendered after the cap so a huge source is tokenized only as far as it is used; the
            # copies that `weight` makes are the same objects, rendered and dropped once.
            too_long = set()
            for ex in {id(e): e for e in chosen}.values():
                ex.input_ids, ex.labels = fmt.render(tokenizer, ex.messages)
                if recipe.max_tokens and len(ex.input_ids) > recipe.max_tokens:
                    too_long.add(id(ex))
                    bad("too_long", ex.where, f"{len(ex.input_ids)} tokens > max_tokens {recipe.max_tokens}")
            chosen = [e for e in chosen if id(e) not in too_long]
        st["sampled"] = len(chosen)
        mixed += chosen
    random.Random(f"{recipe.seed}:shuffle").shuffle(mixed)
    return MixResult(recipe, mixed, stats, problems, files, recipe_hash(recipe, files))


def recipe_hash(recipe: MixRecipe, files: dict[str, str]) -> str:
    """Resolved recipe + the content hashes of every file read. Where the files live (data_root,
    bench_root) is left out, so the same data hashes the same on every machine."""
    d = to_dict(recipe)
    d.pop("data_root")
    d["decontam"].pop("bench_root")
    blob = json.dumps({"recipe": d, "files": sorted(files.values())}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_decontam(result: MixResult) -> tuple[list[Example], dict]:
    """Check every example against the recipe's benchmarks; returns (examples kept, report)."""
    from data_recipes import decontam
    spec = result.recipe.decontam
    if not spec.enabled:
        return result.examples, {"policy": "disabled", "threshold": None, "n_checked": 0, "n_flagged": 0,
                                 "n_dropped": 0, "per_source": {}, "per_benchmark": {}, "examples": []}
    base = Path(spec.bench_root) if spec.bench_root else shared_data_root()
    required = {k: (str(resolve_path(v, base)) if v else "") for k, v in spec.benchmarks.items()}
    optional = {k: (str(resolve_path(v, base)) if v else "") for k, v in spec.optional_benchmarks.items()}
    if not required and not optional:
        raise MixError(f"recipe '{result.recipe.name}': decontam.benchmarks is empty "
                       f"(name at least one benchmark, or set decontam.enabled=false)")
    present = {k: v for k, v in optional.items() if not v or Path(v).is_dir()}
    for k in set(optional) - set(present):
        print(f"WARNING: optional benchmark '{k}' not found at {optional[k]}; not checked")
    try:
        decon = decontam.Decontaminator.from_benchmarks({**required, **present}, spec.ngram_tokens, spec.threshold)
    except decontam.DecontamError as e:
        raise MixError(str(e)) from None
    keep, report = decontam.decontaminate(((e.source, e.where, e.text()) for e in result.examples),
                                          decon, spec.policy, workers=decontam.auto_workers(len(result.examples)))
    report["benchmarks"].update({k: {"source": f"missing:{optional[k]}", "n_items": 0}
                                 for k in set(optional) - set(present)})
    return [e for e, k in zip(result.examples, keep) if k], report


# ---- LLaMA-Factory export -------------------------------------------------------------------------
def export_llamafactory(examples: list[Example], out_dir: str | Path, dataset_name: str) -> Path:
    """`<dataset_name>.json` (sharegpt-style messages + system column) and `dataset_info.json`."""
    out_dir = Path(out_dir)
    rows = []
    for ex in examples:
        msgs, system = ex.messages, ""
        if msgs[0]["role"] == "system":
            system, msgs = msgs[0]["content"], msgs[1:]
        rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in msgs], "system": system})
    atomic_write_json(out_dir / f"{dataset_name}.json", rows)
    info = {dataset_name: {
        "file_name": f"{dataset_name}.json", "formatting": "sharegpt",
        "columns": {"messages": "messages", "system": "system"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}}}
    return atomic_write_json(out_dir / "dataset_info.json", info)


@entrypoint
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m data_recipes.sft_mix", description=__doc__.split("\n")[0])
    ap.add_argument("recipe", help="data_recipes/sft_mixes/<name>.yaml or a name")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides of the recipe")
    ap.add_argument("--tokenizer", help="tokenizer folder: render, apply max_tokens, count tokens")
    ap.add_argument("--export-llamafactory", metavar="DIR", help="write dataset_info.json + data here")
    ap.add_argument("--no-decontam", action="store_true", help="skip decontamination (the report says so)")
    args = ap.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    recipe.decontam.enabled = recipe.decontam.enabled and not args.no_decontam
    tok = None
    if args.tokenizer:
        if not Path(args.tokenizer).is_dir():
            raise MixError(f"tokenizer folder not found: {args.tokenizer}")
        from core.models import load_tokenizer
        tok = load_tokenizer(args.tokenizer)
    result = load_mix(recipe, tok)
    examples, report = run_decontam(result)
    for name, st in result.stats.items():
        print(f"{name:24s} rows {st['rows']:7d}  bad {sum(st['bad'].values()):5d} {st['bad'] or ''}  "
              f"filtered {sum(st['filtered'].values()):6d} {st['filtered'] or ''}  kept {st['kept']:7d}  "
              f"sampled {st['sampled']:7d}")
    for p in result.problems:
        print(f"  {p['kind']:14s} {p['where']}: {p['detail']}")
    print(f"decontamination: {report['n_flagged']} of {report['n_checked']} flagged, {report['n_dropped']} dropped "
          f"({report.get('per_benchmark')})")
    if tok is not None:
        print(f"tokens: {sum(len(e.input_ids) for e in examples):,} in {len(examples)} examples")
    print(f"recipe hash {result.hash[:16]}  examples {len(examples)}")
    if args.export_llamafactory:
        out = Path(args.export_llamafactory)
        export_llamafactory(examples, out, recipe.name)
        atomic_write_json(out / "decontamination.json", report)
        print(f"wrote {out}/dataset_info.json and {out}/{recipe.name}.json")


if __name__ == "__main__":
    main()
