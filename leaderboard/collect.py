"""From result files, run manifests and baselines to leaderboard tables.

A table holds rows that may be ranked against each other: our results and baselines measured with
the same protocol (name and version) on the same benchmark subset. Published numbers with another or
an unknown protocol go to tables of their own, one per source and protocol, and are never ranked.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from core.results import SchemaError, context_overflow, load_predictions, load_result
from core.stats import indistinguishable, paired_comparison
from core.runs import RunError, lineage

from leaderboard.baselines import source_label

HEADLINE = ("ceval", "cmmlu")  # the two columns every table leads with
BENCH_LABELS = {"ceval": "C-Eval", "cmmlu": "CMMLU", "demo": "demo (built-in)"}
STAGE_COLUMNS = {"pretrain": "BASE", "sft": "SFT", "dpo": "DPO", "grpo": "GRPO"}
POST_TRAINING = ("sft", "dpo", "grpo")
# Written next to results by eval/ablation.py and eval/crosscheck.py: reports, not results.
NOT_RESULTS = (".ablation.json", ".crosscheck.json")


def bench_label(bench: str) -> str:
    return BENCH_LABELS.get(bench, bench)


def find_result_files(runs_root: Path, out_dir: Path | None = None) -> list[Path]:
    """<run>/eval/*.json and runs/eval/<model-slug>/*.json, without predictions, temp files or our
    output. Deeper folders under runs/eval/<model-slug>/ (ablations, cross-checks) are not results."""
    files = set(runs_root.glob("**/eval/*.json")) | set(runs_root.glob("eval/*/*.json"))
    out = []
    for p in sorted(files):
        if p.name.startswith(".") or ".predictions." in p.name or p.name.endswith(NOT_RESULTS):
            continue
        if out_dir is not None and out_dir.resolve() in p.resolve().parents:
            continue
        out.append(p)
    return out


def load_results(runs_root: Path, known_protocols, warn, out_dir: Path | None = None) -> list[dict]:
    """Every valid result file as {"data", "path", "run_dir"}; bad ones go to `warn(message)`."""
    loaded = []
    for path in find_result_files(runs_root, out_dir):
        try:
            data = load_result(path, known_protocols)
        except SchemaError as e:
            warn(f"skipped {e}")
            continue
        run_dir = _run_dir_of(path, data)
        loaded.append({"data": data, "path": path, "run_dir": run_dir})
    return _drop_duplicates(loaded, warn)


def _run_dir_of(path: Path, data: dict) -> Path | None:
    """The run folder a result belongs to: <run>/eval/x.json, or model.run when it names one."""
    folder = path.parent.parent
    if path.parent.name == "eval" and ((folder / "config.yaml").exists() or (folder / "manifest.json").exists()):
        return folder
    run = data["model"].get("run")
    if run and (Path(run) / "manifest.json").is_file():
        return Path(run)
    return None


def _drop_duplicates(loaded: list[dict], warn) -> list[dict]:
    """One result per (model, benchmark, protocol, subset): the newest by date, with a warning."""
    by_key = defaultdict(list)
    for r in loaded:
        by_key[(model_key(r), *result_key(r["data"]))].append(r)
    kept = []
    for key, rs in by_key.items():
        rs.sort(key=lambda r: r["data"]["date"])
        if len(rs) > 1:
            warn(f"{len(rs)} results for {key[0]} {key[1]}/{key[2]} v{key[3]} ({key[4]}): using "
                 f"{rs[-1]['path']}, ignoring {', '.join(str(r['path']) for r in rs[:-1])}")
        kept.append(rs[-1])
    return kept


def model_key(r: dict) -> str:
    if r["run_dir"] is not None:
        return str(Path(r["run_dir"]).resolve())
    m = r["data"]["model"]
    return f"{m['name']}|{m.get('path') or r['path'].parent}"


def result_key(d: dict) -> tuple:
    return d["benchmark"], d["protocol"]["name"], d["protocol"]["version"], d["subset"]


# ---- lineage ----------------------------------------------------------------------------------
def resolve_parent(parent: str, runs_root: Path) -> Path | None:
    p = Path(parent)
    # Parents are written relative to the repo (runs/pretrain/x); the runs root may live elsewhere.
    for cand in (p, runs_root.parent / p, runs_root / Path(*p.parts[1:]) if len(p.parts) > 1 else p):
        if cand.exists():
            return cand
    return None


def run_chain(run_dir: Path, runs_root: Path, warn) -> list[dict]:
    """Manifests of run_dir and its ancestors, base first (via core.runs.lineage)."""
    chain: list[dict] = []
    cur: Path | None = Path(run_dir)
    while cur is not None and len(chain) < 16:
        try:
            part = lineage(cur)
        except RunError as e:
            warn(f"lineage of {run_dir}: {e}")
            break
        if not part:
            # A run folder without manifest.json never finished; anything else is a model from outside.
            stage = "unfinished" if (cur / "config.yaml").exists() else "external"
            chain.append({"stage": stage, "run": cur.name, "_path": str(cur)})
            break
        chain.extend(part)
        parent = chain[-1].get("parent")
        if not parent:
            break
        nxt = resolve_parent(str(parent), runs_root)
        if nxt is None:
            chain.append({"stage": "missing", "run": str(parent), "_path": None})
            warn(f"lineage of {run_dir}: parent {parent} not found")
            break
        if any(c.get("_path") and Path(c["_path"]).resolve() == nxt.resolve() for c in chain):
            break
        cur = nxt
    return list(reversed(chain))


def lineage_label(chain: list[dict]) -> str:
    return " -> ".join(f"{c.get('stage', '?')}:{c.get('run', '?')}" for c in chain) or "(not a run)"


def contamination(chain: list[dict], warn) -> dict:
    """Summary of decontamination.json over the post-training stages of a lineage."""
    stages, statuses = [], []
    for c in chain:
        if c.get("stage") not in POST_TRAINING or not c.get("_path"):
            continue
        f = Path(c["_path"]) / "decontamination.json"
        if not f.is_file():
            stages.append(f"{c['stage']}: not checked")
            statuses.append("unchecked")
            continue
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
            flagged, dropped = int(d.get("n_flagged", 0)), int(d.get("n_dropped", 0))
            checked, policy = int(d.get("n_checked", 0)), d.get("policy", "?")
        except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
            warn(f"{f}: unreadable decontamination report ({e})")
            stages.append(f"{c['stage']}: unreadable")
            statuses.append("unreadable")
            continue
        kept = flagged - dropped
        benches = ",".join(sorted(k for k, v in (d.get("per_benchmark") or {}).items() if v))
        if kept > 0:
            stages.append(f"{c['stage']}: {kept} benchmark-like kept ({benches or '?'}; policy {policy})")
            statuses.append("flagged")
        else:
            stages.append(f"{c['stage']}: clean ({dropped} dropped of {checked})")
            statuses.append("clean")
    if not statuses:
        return {"status": "n/a", "label": "n/a (no post-training; pretraining data not checked)", "stages": []}
    status = next(s for s in ("flagged", "unreadable", "unchecked", "clean") if s in statuses)
    return {"status": status, "label": f"{status}: " + "; ".join(stages), "stages": stages}


def pretrain_tokens(chain: list[dict]) -> int | None:
    toks = [c.get("tokens_seen") for c in chain if c.get("stage") == "pretrain"]
    toks = [t for t in toks if isinstance(t, (int, float))]
    return int(sum(toks)) if toks else None


# ---- rows and tables --------------------------------------------------------------------------
def _pct(x):
    return None if x is None else round(100.0 * x, 2)


def context_mark(d: dict) -> dict | None:
    """The result's context counts when some prompts did not fit the model (render marks the row), else None."""
    k, m = context_overflow(d)
    return {"max_len": d["context"]["max_len"], "shots_reduced": k, "left_truncated": m} if k or m else None


def our_rows(results: list[dict], runs_root: Path, warn) -> list[dict]:
    """One row per (model, protocol, version, subset) with a score per benchmark."""
    rows: dict[tuple, dict] = {}
    chains: dict[str, list] = {}
    for r in results:
        d = r["data"]
        bench, proto, version, subset = result_key(d)
        key = (model_key(r), proto, version, subset)
        if key not in rows:
            mk = model_key(r)
            if mk not in chains:
                chains[mk] = run_chain(r["run_dir"], runs_root, warn) if r["run_dir"] else []
            chain = chains[mk]
            if r["run_dir"] is not None and not (Path(r["run_dir"]) / "manifest.json").is_file():
                warn(f"{r['path']}: its run folder {r['run_dir']} has no manifest.json (unfinished run)")
            rows[key] = {
                "kind": "ours", "model": d["model"]["name"], "params": d["model"].get("params"),
                "tokens": pretrain_tokens(chain), "protocol": proto, "protocol_version": version,
                "subset": subset, "scores": {}, "run": str(r["run_dir"]) if r["run_dir"] else None,
                "lineage": lineage_label(chain) if chain else "(not a run folder)",
                "contamination": contamination(chain, warn) if chain else
                {"status": "unknown", "label": "unknown (not a run folder)", "stages": []},
                "source": [], "notes": "",
            }
        row = rows[key]
        ci = d["ci95"]["micro"]
        row["scores"][bench] = {
            "acc": _pct(d["acc_micro"]), "acc_macro": _pct(d["acc_macro"]), "ci95": [_pct(ci[0]), _pct(ci[1])],
            "n": d["n_questions"], "split": d["split"], "benchmark_version": d["benchmark_version"],
            "n_unparsed": d.get("n_unparsed"), "per_category": {
                c: _pct(v["acc"]) for c, v in (d.get("per_category") or {}).items()},
            "context": context_mark(d), "result": str(r["path"]),
        }
        row["source"].append(str(r["path"]))
        if row["params"] is None:
            row["params"] = d["model"].get("params")
    return list(rows.values())


def baseline_row(e: dict) -> dict:
    return {
        "kind": "baseline", "model": e["model"],
        "params": None if e["params_b"] is None else int(round(e["params_b"] * 1e9)),
        "tokens": None if e["train_tokens_b"] is None else int(round(e["train_tokens_b"] * 1e9)),
        "protocol": e["protocol"], "protocol_version": e.get("protocol_version"), "subset": e.get("subset"),
        "scores": {b: {"acc": float(e[b]), "ci95": None} for b in HEADLINE if e.get(b) is not None},
        "run": None, "lineage": "published", "contamination": {"status": "unknown", "label": "unknown", "stages": []},
        "source": [source_label(e["source"]) + ("" if e["checked"] else " (not re-read by us)")],
        "notes": (e.get("notes") or "").strip(), "protocol_note": e["protocol_note"],
    }


def _rank(table: dict) -> None:
    """Rank rows that have every headline benchmark of the table on the same data; others unranked."""
    benches = [b for b in HEADLINE if b in table["benchmarks"]] or table["benchmarks"]
    for b in table["benchmarks"]:
        # The most common (split, n, version) of a benchmark defines the table; others are flagged.
        ids = Counter((s.get("split"), s.get("n"), s.get("benchmark_version"))
                      for row in table["rows"] if (s := row["scores"].get(b)) and row["kind"] == "ours")
        if len(ids) > 1:
            ref = ids.most_common(1)[0][0]
            table["notes"].append(f"{bench_label(b)}: results on different data ({', '.join(f'split {i[0]}, {i[1]} questions' for i in ids)}); "
                                  f"rows not on split {ref[0]} / {ref[1]} questions are marked and not ranked")
            for row in table["rows"]:
                s = row["scores"].get(b)
                if s and row["kind"] == "ours" and (s.get("split"), s.get("n"), s.get("benchmark_version")) != ref:
                    s["mismatch"] = True

    def complete(row):
        return all(b in row["scores"] and not row["scores"][b].get("mismatch") for b in benches)

    def mean(row):
        vals = [row["scores"][b]["acc"] for b in benches if b in row["scores"]]
        return sum(vals) / len(vals) if vals else -1.0

    table["rows"].sort(key=lambda r: (not complete(r), -mean(r), r["model"]))
    n_ranked, prev = 0, None   # the previous ranked row: a row it cannot be told apart from shares its rank
    for row in table["rows"]:
        row["mean"] = round(mean(row), 2) if mean(row) >= 0 else None
        row["tied"] = False
        if table["ranked"] and complete(row):
            n_ranked += 1
            if prev is not None and (row["mean"] == prev["mean"] or _tied(prev, row, benches)):
                row["rank"], row["tied"], prev["tied"] = prev["rank"], True, True
            else:
                row["rank"] = n_ranked
            prev = row
        else:
            row["rank"] = None
    table["rank_by"] = [bench_label(b) for b in benches]


def _paired_p(a: dict, b: dict) -> float | None:
    """McNemar p of two scores on the same questions, from their predictions files (None if either
    score has none, e.g. a published baseline, or they share no question)."""
    if not a.get("result") or not b.get("result"):
        return None
    try:
        ra, rb = load_result(a["result"]), load_result(b["result"])
        return paired_comparison(load_predictions(a["result"], ra),
                                 load_predictions(b["result"], rb), samples=200)["mcnemar"]["p_value"]
    except (SchemaError, ValueError):
        return None


def _tied(a: dict, b: dict, benches: list[str]) -> bool:
    """Rows that cannot be told apart on any ranking benchmark (core.stats.indistinguishable: the paired
    McNemar test where both have per-question predictions, else overlapping 95% CIs). Ties chain: a
    run of rows each tied with the one above shares the first one's rank, every one marked tied."""
    return all(indistinguishable(_paired_p(a["scores"][x], b["scores"][x]),
                                 a["scores"][x].get("ci95"), b["scores"][x].get("ci95")) for x in benches)


def build_tables(rows: list[dict], baselines: list[dict], known_protocols) -> tuple[list[dict], list[dict]]:
    """(comparable tables, published-only tables)."""
    groups: dict[tuple, list] = defaultdict(list)
    for row in rows:
        groups[(row["protocol"], row["protocol_version"], row["subset"])].append(row)
    published: dict[tuple, list] = defaultdict(list)
    for e in baselines:
        row = baseline_row(e)
        if e["protocol"] in known_protocols:
            groups[(row["protocol"], row["protocol_version"], row["subset"])].append(row)
        else:
            published[(e["protocol"], source_label(e["source"]))].append(row)
    tables = []
    for (proto, version, subset), rs in sorted(groups.items(), key=lambda kv: (kv[0][2] != "full", kv[0][2].startswith("builtin"), kv[0])):
        benches = sorted({b for r in rs for b in r["scores"]}, key=lambda b: (b not in HEADLINE, HEADLINE.index(b) if b in HEADLINE else 0, b))
        what = {"full": "full benchmark", "shared-split": "shared split (our fixed subset)",
                "builtin": "built-in demo benchmark (generated, not C-Eval/CMMLU)"}[subset.removesuffix("+partial")]
        if subset.endswith("+partial"):
            what += ", PARTIAL (limited subjects or questions)"
        tables.append({"id": f"{proto}-v{version}-{subset}", "title": f"{proto} v{version} · {what}",
                       "protocol": proto, "protocol_version": version, "subset": subset, "ranked": True,
                       "benchmarks": benches, "rows": rs, "notes": []})
    for (proto, src), rs in sorted(published.items()):
        tables_pub = {"id": f"published-{len(tables)}-{proto}", "title": f"Published: {src}",
                      "protocol": proto, "protocol_version": None, "subset": None, "ranked": False,
                      "benchmarks": list(HEADLINE), "rows": rs, "source": src,
                      "notes": [f"protocol {proto}: {rs[0]['protocol_note']}"]}
        tables.append(tables_pub)
    for t in tables:
        _rank(t)
    return [t for t in tables if t["ranked"]], [t for t in tables if not t["ranked"]]
