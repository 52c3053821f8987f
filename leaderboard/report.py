"""Report card per lineage: BASE / SFT / DPO / GRPO side by side.

For every leaf run (no other run names it as parent) whose lineage has at least one eval result:
each benchmark + protocol + subset as a row, then wall-clock (manifest started -> finished), steps,
tokens, devices, device-hours and an estimated cost from configurable hourly rates.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from core.runs import read_manifest

from leaderboard.collect import STAGE_COLUMNS, resolve_parent, bench_label, contamination, result_key, run_chain
from leaderboard.effects import stage_effects
from leaderboard.render import fmt_count, md_escape

_DEVICE_KEYS = ("world_size", "n_gpus", "num_gpus", "nproc")


def _parse_time(s) -> dt.datetime | None:
    if not isinstance(s, str):
        return None
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def stage_cost(manifest: dict, cost) -> dict:
    """Wall-clock hours, device count, device-hours and cost of one run from its manifest."""
    start, end = _parse_time(manifest.get("started")), _parse_time(manifest.get("finished"))
    hours = (end - start).total_seconds() / 3600 if start and end and end >= start else None
    env = manifest.get("env") or {}
    device = str(env.get("device") or "unknown")
    n = next((manifest.get(k) or env.get(k) for k in _DEVICE_KEYS if manifest.get(k) or env.get(k)), None)
    n = cost.gpus_per_run or (int(n) if isinstance(n, (int, float)) and n > 0 else 1)
    if device.lower() == "cpu":
        rate, n, kind = cost.cpu_hour_usd, 1, "CPU"
    else:
        rate = next((v for k, v in cost.gpu_hour_usd.items() if k != "default" and k.lower() in device.lower()),
                    cost.gpu_hour_usd.get("default", 0.0))
        kind = "GPU"
    return {"hours": hours, "devices": n, "device": device, "kind": kind, "rate_usd": rate,
            "device_hours": None if hours is None else hours * n,
            "cost_usd": None if hours is None else hours * n * rate}


def _fmt_hours(h) -> str:
    if h is None:
        return "—"
    s = h * 3600
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{h:.1f} h")


def find_leaf_runs(runs_root: Path) -> list[Path]:
    """Finished runs under runs/<stage>/<name>/ that no other run names as parent."""
    runs = [p.parent for p in sorted(runs_root.glob("*/*/manifest.json"))]
    parents = set()
    for r in runs:
        try:
            parent = read_manifest(r).get("parent")
        except Exception:  # an unreadable manifest is reported by the lineage walk
            continue
        resolved = resolve_parent(str(parent), runs_root) if parent else None
        if resolved is not None:
            parents.add(resolved.resolve())
    return [r for r in runs if r.resolve() not in parents]


def report_cards(runs_root: Path, results: list[dict], cost, warn) -> list[dict]:
    by_run: dict[str, list] = {}
    for r in results:
        if r["run_dir"] is not None:
            by_run.setdefault(str(Path(r["run_dir"]).resolve()), []).append(r["data"])
    cards = []
    for leaf in find_leaf_runs(runs_root):
        chain = [c for c in run_chain(leaf, runs_root, warn) if c.get("_path")]
        if not any(str(Path(c["_path"]).resolve()) in by_run for c in chain):
            continue
        columns, seen = [], {}
        for c, effect in zip(chain, stage_effects(chain)):
            label = STAGE_COLUMNS.get(c.get("stage"), str(c.get("stage", "?")).upper())
            seen[label] = seen.get(label, 0) + 1
            columns.append({"label": label if seen[label] == 1 else f"{label}#{seen[label]}", "manifest": c,
                            "results": by_run.get(str(Path(c["_path"]).resolve()), []),
                            "cost": stage_cost(c, cost),
                            "contamination": contamination([c], warn)["label"], "effect": effect})
        # Fixed BASE / SFT / DPO / GRPO columns, empty where the lineage has no such stage.
        for label in STAGE_COLUMNS.values():
            if not any(col["label"] == label for col in columns):
                columns.append({"label": label, "manifest": None, "results": [], "cost": None, "contamination": "—",
                                "effect": None})
        order = list(STAGE_COLUMNS.values())
        columns.sort(key=lambda col: (order.index(col["label"].split("#")[0]) if col["label"].split("#")[0] in order else 99))
        cards.append({"leaf": str(leaf), "columns": columns})
    return cards


def delta_text(col: dict, key: tuple) -> str:
    """' · +33.2 vs parent, 95% CI [..], McNemar p ..' for a score whose parent run has the same result."""
    d = (col.get("effect") or {}).get("deltas", {}).get(key)
    if not d:
        return ""
    if "error" in d:
        return f" · {100 * (d['acc'] - d['acc_parent']):+.1f} vs parent (no paired test)"
    return (f" · {100 * d['diff']:+.1f} vs parent, 95% CI [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}], "
            f"McNemar p {d['p_value']:.2g}")


def render_report(cards: list[dict], cost) -> str:
    out = ["# Report card", "",
           "One card per lineage (leaf run and its ancestors). Scores are micro accuracy (%) with a 95% CI;",
           "cost = wall-clock x devices x hourly rate, with rates from the leaderboard config "
           f"(cost.gpu_hour_usd = {dict(cost.gpu_hour_usd)}, cost.cpu_hour_usd = {cost.cpu_hour_usd}): "
           "an estimate from assumed rates, not a bill. Each score of a stage is followed by its delta against",
           "the parent run on the same protocol and questions (paired: McNemar and a bootstrap CI, core/stats.py);",
           "`held-out checks` are each stage's own measurements on items it never trained on (leaderboard/effects.py).",
           ""]
    if not cards:
        out += ["No lineage has eval results yet: run `make eval MODEL=runs/<stage>/<run>` first.", ""]
    for card in cards:
        cols = card["columns"]
        out += [f"## {md_escape(Path(card['leaf']).parent.name + '/' + Path(card['leaf']).name)}", ""]
        out.append("| | " + " | ".join(c["label"] for c in cols) + " |")
        out.append("|---|" + "|".join("---" for _ in cols) + "|")

        def line(name, fn):
            out.append(f"| {name} | " + " | ".join(md_escape(fn(c)) if c["manifest"] else "—" for c in cols) + " |")

        line("run", lambda c: c["manifest"].get("run", "?"))
        keys = sorted({result_key(d) for c in cols for d in c["results"]})
        for key in keys:
            bench, proto, version, subset = key

            def score(c, key=key):
                d = next((d for d in c["results"] if result_key(d) == key), None)
                if d is None:
                    return "—"
                lo, hi = d["ci95"]["micro"]
                return f"{100 * d['acc_micro']:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]" + delta_text(c, key)
            line(md_escape(f"{bench_label(bench)} · {proto} v{version} · {subset}"), score)
        line("held-out checks", lambda c: "; ".join(
            f"{'met' if k['met'] else 'MISSED'}: {k['check']} ({k['detail']})" for k in c["effect"]["checks"]) or "—")
        line("wall-clock", lambda c: _fmt_hours(c["cost"]["hours"]))
        line("steps", lambda c: str(c["manifest"].get("steps", "—")))
        line("tokens", lambda c: fmt_count(c["manifest"].get("tokens_seen")))
        line("devices", lambda c: f"{c['cost']['devices']} x {c['cost']['device']}")
        line("device-hours", lambda c: "—" if c["cost"]["device_hours"] is None else
             f"{c['cost']['device_hours']:.3g} {c['cost']['kind']}-h")
        line("est. cost (USD)", lambda c: "—" if c["cost"]["cost_usd"] is None else
             f"{c['cost']['cost_usd']:.2f} @ {c['cost']['rate_usd']}/h")
        line("contamination", lambda c: c["contamination"])
        total = sum(c["cost"]["cost_usd"] or 0 for c in cols if c["cost"])
        hours = sum(c["cost"]["hours"] or 0 for c in cols if c["cost"])
        out += ["", f"Total wall-clock {_fmt_hours(hours)}, estimated cost {total:.2f} USD.", ""]
    return "\n".join(out)
