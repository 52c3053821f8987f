"""Leaderboard plots (matplotlib Agg, PNG + SVG): accuracy against parameters and against training
tokens (our runs beside published numbers), and per-category bars for our runs.

Published numbers are drawn hollow and grey: their protocols differ from ours (or are unknown), so a
point's position is context, not a ranking. Results on the built-in demo benchmark are not C-Eval or
CMMLU and stay out of the scaling plots.

Names are text: every label is drawn with mathtext off (`text.parse_math`), so a model, run or
benchmark name with `$...$` in it is drawn as written, never as a formula (nor an error for bad TeX).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from leaderboard.collect import HEADLINE, bench_label
from leaderboard.render import fmt_count


# Set for the plots only (rc_context), not for other figures drawn in the same process.
RC = {"svg.fonttype": "none",                # text stays text in the SVG (smaller, searchable)
      "svg.hashsalt": "zhllm-leaderboard",    # stable element ids between builds
      "text.parse_math": False}               # names are text: `$` is a dollar sign, not mathtext


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_dir: Path, name: str, title: str, plt) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing")  # CJK names without a CJK font
        fig.savefig(out_dir / f"{name}.png", dpi=110)
        fig.savefig(out_dir / f"{name}.svg", metadata={"Date": None})
    plt.close(fig)
    return {"title": title, "png": f"plots/{name}.png", "svg": f"plots/{name}.svg"}


def _scaling(plt, ours, published, x_key: str, x_label: str, title: str):
    from matplotlib.ticker import FuncFormatter
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)  # one x range for both benchmarks
    for ax, bench in zip(axes, HEADLINE):
        pts = [(r[x_key], r["scores"][bench]["acc"], r["model"]) for r in published
               if r[x_key] and bench in r["scores"]]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], facecolors="none", edgecolors="grey",
                       label="published (other/unknown protocol)")
            for x, y, name in pts:
                ax.annotate(name, (x, y), fontsize=6, color="grey", xytext=(3, 2), textcoords="offset points")
        protocols = sorted({r["protocol"] for r in ours})
        for i, proto in enumerate(protocols):
            rows = [r for r in ours if r["protocol"] == proto and r[x_key] and bench in r["scores"]]
            if not rows:
                continue
            xs = [r[x_key] for r in rows]
            ys = [r["scores"][bench]["acc"] for r in rows]
            cis = [r["scores"][bench].get("ci95") or [y, y] for r, y in zip(rows, ys)]
            err = [[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]]
            ax.errorbar(xs, ys, yerr=err, fmt="o", color=f"C{i}", label=f"ours: {proto}", capsize=3)
            for x, y, r in zip(xs, ys, rows):
                ax.annotate(r["model"], (x, y), fontsize=7, color=f"C{i}", xytext=(3, -9), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_count(v)))
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{bench_label(bench)} accuracy (%)")
        ax.set_ylim(0, 100)
        ax.axhline(25, color="black", lw=0.6, ls=":", label="chance (4 options)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _categories(plt, ours):
    """One panel per (benchmark, protocol, subset); one bar group per category, one bar per model."""
    panels = {}
    for r in ours:
        for bench, s in r["scores"].items():
            if s.get("per_category"):
                panels.setdefault((bench, r["protocol"], r["protocol_version"], r["subset"]), []).append((r["model"], s))
    if not panels:
        return None
    keys = sorted(panels)[:6]
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 3.2 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        entries = panels[key]
        cats = sorted({c for _, s in entries for c in s["per_category"]})
        width = 0.8 / len(entries)
        for i, (model, s) in enumerate(entries):
            xs = [j + i * width for j in range(len(cats))]
            ax.bar(xs, [s["per_category"].get(c) or 0 for c in cats], width=width, label=model, color=f"C{i}")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cats))])
        ax.set_xticklabels(cats, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{bench_label(key[0])} by category · {key[1]} v{key[2]} · {key[3]}", fontsize=9)
        ax.axhline(25, color="black", lw=0.6, ls=":")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def make_plots(tables: list[dict], published: list[dict], out_dir: Path) -> list[dict]:
    """Write the plots under out_dir/plots; returns [{title, png, svg}] with paths relative to out_dir."""
    plt = _plt()
    with plt.rc_context(RC):
        return _make_plots(plt, tables, published, out_dir)


def _make_plots(plt, tables: list[dict], published: list[dict], out_dir: Path) -> list[dict]:
    ours = [r for t in tables for r in t["rows"] if r["kind"] == "ours"]
    scaled = [r for r in ours if r["subset"] in ("full", "shared-split")]  # not the demo, not partial runs
    pub = [r for t in published for r in t["rows"]] + [r for t in tables for r in t["rows"] if r["kind"] == "baseline"]
    note = "" if scaled else " (no C-Eval/CMMLU results of ours yet)"
    plots = [
        _save(_scaling(plt, scaled, pub, "params", "parameters", "Accuracy vs parameters" + note),
              out_dir / "plots", "acc_vs_params", "Accuracy vs parameters" + note, plt),
        _save(_scaling(plt, scaled, pub, "tokens", "pretraining tokens", "Accuracy vs training tokens" + note),
              out_dir / "plots", "acc_vs_tokens", "Accuracy vs training tokens" + note, plt),
    ]
    fig = _categories(plt, ours)
    if fig is not None:
        plots.append(_save(fig, out_dir / "plots", "per_category", "Per-category accuracy of our runs", plt))
    return plots
