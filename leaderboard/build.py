"""Build the leaderboard and report cards from eval result files and published baselines.

Reads every `runs/**/eval/<bench>.<protocol>.json` and `runs/eval/<model>/*.json` (the result
contract in core/results.py, which eval/ writes with), the run manifests and decontamination reports of their lineages, and
leaderboard/baselines.yaml; writes `runs/leaderboard/` in one swap (leaderboard.md, leaderboard.json,
index.html, report.md, plots/*.png|svg). Our runs are ranked only against rows measured with the same
protocol on the same benchmark subset; published numbers with other or unknown protocols get tables
of their own. A bad result file is skipped with a warning naming it (strict=1: an error, and nothing
is written). Reads files only: no torch, no model.

Run as:
    make leaderboard                                   # CPU (= python -m leaderboard.build)
    make leaderboard ARGS="strict=1 cost.gpu_hour_usd.H100=2.2"
    python -m leaderboard.build runs_root=runs out=runs/leaderboard --dry-run
    On a GPU machine: the same commands (nothing here uses an accelerator).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.config import parse_args
from core.errors import UserError, entrypoint
from core.results import PROTOCOL_NAMES, SchemaError
from core.runs import REPO_ROOT, atomic_write_text, now_iso

from leaderboard.baselines import load_baselines
from leaderboard.collect import build_tables, load_results, our_rows
from leaderboard.render import render_html, render_markdown
from leaderboard.report import render_report, report_cards


@dataclass
class CostConfig:
    """Hourly rates for the report card's cost estimate (assumptions, not quotes)."""
    # USD per GPU-hour, matched as a case-insensitive substring of the manifest's env.device; "default" otherwise.
    gpu_hour_usd: dict[str, float] = field(default_factory=lambda: {
        "H200": 3.5, "H100": 2.5, "H800": 2.5, "A100": 1.5, "default": 2.0})
    cpu_hour_usd: float = 0.0     # USD per machine-hour for runs whose env.device is "cpu"
    gpus_per_run: int = 0         # devices per run; 0 = the manifest's world_size (1 when absent)


@dataclass
class LeaderboardConfig:
    runs_root: str = "runs"                          # folder scanned for eval results and run manifests
    out: str = ""                                    # output folder; empty = <runs_root>/leaderboard
    baselines: str = "leaderboard/baselines.yaml"    # published numbers (relative to the repo if not found here)
    strict: bool = False                             # any skipped input is an error and nothing is written
    plots: bool = True                               # write the PNG/SVG plots (matplotlib)
    print_table: bool = True                         # print leaderboard.md when done
    known_protocols: list[str] = field(default_factory=lambda: list(PROTOCOL_NAMES))  # eval protocol names
    cost: CostConfig = field(default_factory=CostConfig)


class BuildError(UserError, RuntimeError):
    """The baselines file is broken (printed as `error: baselines: ...`, exit code 2)."""


def _baselines_path(p: str) -> Path:
    path = Path(p)
    return path if path.exists() or path.is_absolute() else REPO_ROOT / path


def build(cfg: LeaderboardConfig, warn) -> dict:
    """Everything the outputs are rendered from (the content of leaderboard.json)."""
    runs_root = Path(cfg.runs_root)
    out = Path(cfg.out) if cfg.out else runs_root / "leaderboard"
    try:
        baselines = load_baselines(_baselines_path(cfg.baselines), tuple(cfg.known_protocols))
    except (SchemaError, OSError) as e:
        raise BuildError(f"baselines: {e}") from None
    results = load_results(runs_root, tuple(cfg.known_protocols), warn, out_dir=out) if runs_root.is_dir() else []
    rows = our_rows(results, runs_root, warn)
    tables, published = build_tables(rows, baselines, tuple(cfg.known_protocols))
    cards = report_cards(runs_root, results, cfg.cost, warn) if runs_root.is_dir() else []
    return {
        "schema_version": 1, "generated": now_iso(), "runs_root": str(runs_root),
        "n_results": len(results), "n_baselines": len(baselines),
        "empty_message": (f"No eval results found under {runs_root}/ (looked for **/eval/*.json and "
                          f"eval/*/*.json): showing published baselines only. Evaluate a model first: "
                          f"make eval MODEL=runs/<stage>/<run>") if not results else "",
        "tables": tables, "published": published, "report_cards": cards, "plots": [], "warnings": [],
    }


def _json_cards(cards: list[dict]) -> list[dict]:
    """Report cards without the full manifests (env, config hashes) that only bloat the JSON."""
    keep = ("stage", "run", "parent", "started", "finished", "steps", "tokens_seen")
    return [{"leaf": c["leaf"], "columns": [
        {"label": col["label"], "run": {k: col["manifest"].get(k) for k in keep} if col["manifest"] else None,
         "results": [{"benchmark": d["benchmark"], "protocol": d["protocol"], "subset": d["subset"],
                      "acc_micro": d["acc_micro"], "ci95": d["ci95"]} for d in col["results"]],
         "cost": col["cost"], "contamination": col["contamination"],
         "effect": _json_effect(col.get("effect"))} for col in c["columns"]]} for c in cards]


def _json_effect(effect: dict | None) -> dict | None:
    """A column's stage effect with its deltas keyed by text (JSON has no tuple keys)."""
    if not effect:
        return None
    return {**effect, "deltas": {" · ".join(map(str, k)): v for k, v in effect["deltas"].items()}}


def write_outputs(board: dict, cfg: LeaderboardConfig, out: Path) -> Path:
    """Render into a temp folder next to `out`, then swap it in: readers never see a half-written board."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if cfg.plots:
            from leaderboard.plots import make_plots
            board["plots"] = make_plots(board["tables"], board["published"], tmp)
        atomic_write_text(tmp / "leaderboard.md", render_markdown(board))
        atomic_write_text(tmp / "index.html", render_html(board))
        atomic_write_text(tmp / "report.md", render_report(board["report_cards"], cfg.cost))
        data = {**board, "report_cards": _json_cards(board["report_cards"]), "config": asdict(cfg)}
        atomic_write_text(tmp / "leaderboard.json", json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o644)  # atomic writes create 0600 files; the page is meant to be served and shared
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old.exists():
                os.replace(old, out)  # put the previous board back rather than leave none
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


@entrypoint
def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_args(LeaderboardConfig, argv, prog="leaderboard.build")
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        print(f"{'error' if cfg.strict else 'warning'}: {msg}", file=sys.stderr)

    out = Path(cfg.out) if cfg.out else Path(cfg.runs_root) / "leaderboard"
    board = build(cfg, warn)
    if cfg.strict and warnings:
        print(f"error: strict=1 and {len(warnings)} input(s) were skipped or inconsistent (listed above); "
              f"nothing written to {out}", file=sys.stderr)
        return 1
    board["warnings"] = warnings
    if not board["n_results"]:
        print(board["empty_message"])
    write_outputs(board, cfg, out)
    if cfg.print_table:
        print((out / "leaderboard.md").read_text(encoding="utf-8"))
    n_ours = sum(r["kind"] == "ours" for t in board["tables"] for r in t["rows"])
    print(f"leaderboard: {n_ours} row(s) of ours in {len(board['tables'])} ranked table(s), "
          f"{board['n_baselines']} published baseline(s), {len(warnings)} warning(s), "
          f"{len(board['report_cards'])} report card(s)")
    print(f"wrote {out}/ (index.html, leaderboard.md, leaderboard.json, report.md"
          f"{', plots/' if board['plots'] else ''}); open {out}/index.html in a browser")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
