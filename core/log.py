"""Logging: one fixed-order line per logged step, the same numbers in metrics.jsonl; rich progress
bars for data work and evaluation; a metrics plot for the run folder.

    log = StepLogger(run.path / "metrics.jsonl", total_steps=cfg.train.max_steps)
    log.step(step, loss=2.48, lr=1.9e-5, grad_norm=0.87, tokens=4096)
    -> step 00120/02000 (6.0%) | loss 2.4812 | lr 1.9e-05 | grad_norm 0.87 | tok/s 41,200 | mfu 38.1% | elapsed 4.2m | eta 65m
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

# The fixed order of the step line; other keys follow in the order given.
_ORDER = ("loss", "lr", "grad_norm", "tok_per_s", "mfu")


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _fmt(key: str, v) -> str:
    if isinstance(v, float):
        if key == "lr":
            return f"lr {v:.1e}"
        if key == "tok_per_s":
            return f"tok/s {v:,.0f}"
        if key == "mfu":
            return f"mfu {100 * v:.1f}%"
        if key == "loss" or "loss" in key:
            return f"{key} {v:.4f}"
        return f"{key} {v:.4g}"
    return f"{key} {v}"


class StepLogger:
    """Prints one line per logged step and appends the same numbers to metrics.jsonl."""

    def __init__(self, metrics_path: str | Path | None, total_steps: int, start_step: int = 0,
                 stream=None, append: bool = True):
        self.path = Path(metrics_path) if metrics_path else None
        self.total = max(int(total_steps), 1)
        self.start_step = start_step
        self.t0 = time.time()
        self.stream = stream or sys.stdout
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not append and self.path.exists():
                self.path.unlink()

    def step(self, step: int, **metrics) -> dict:
        elapsed = time.time() - self.t0
        done = max(step - self.start_step, 1e-9)
        eta = elapsed / done * (self.total - step) if step > self.start_step else float("nan")
        record = {"step": step, **{k: (float(v) if hasattr(v, "item") else v) for k, v in metrics.items()},
                  "elapsed_s": round(elapsed, 3), "eta_s": round(eta, 1) if math.isfinite(eta) else None,
                  "time": time.time()}
        keys = [k for k in _ORDER if k in metrics] + [k for k in metrics if k not in _ORDER]
        width = len(str(self.total))
        parts = [f"step {step:0{max(width, 5)}d}/{self.total:0{max(width, 5)}d} ({100 * step / self.total:.1f}%)"]
        parts += [_fmt(k, record[k]) for k in keys]
        parts += [f"elapsed {_fmt_duration(elapsed)}", f"eta {_fmt_duration(eta)}"]
        print(" | ".join(parts), file=self.stream, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return record


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: invalid JSON: {e.msg}") from None
    return out


def plot_metrics(metrics_path: str | Path, out_png: str | Path, keys: Iterable[str] = ("loss",),
                 title: str = "") -> Path | None:
    """A PNG of each key against step (one panel per key) next to metrics.jsonl."""
    rows = read_metrics(metrics_path)
    keys = [k for k in keys if any(k in r for r in rows)]
    if not rows or not keys:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["step"], r[k]) for r in rows if k in r and r[k] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set_xlabel("step")
        ax.set_ylabel(k)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.stem}.tmp{out_png.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png


def progress(iterable: Iterable, total: int | None = None, desc: str = "") -> Iterator:
    """A rich progress bar with ETA; plain iteration when stdout is not a terminal or rich is absent."""
    try:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
    except ImportError:  # pragma: no cover
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  disable=not sys.stdout.isatty(), transient=False) as bar:
        task = bar.add_task(desc, total=total)
        for item in iterable:
            yield item
            bar.advance(task)
