"""Accuracy (micro = per question, macro = mean of per-subject accuracies), per-group accuracy,
95% bootstrap confidence intervals. The paired tests between two evaluations of the same questions
(exact McNemar, paired bootstrap) are core/stats.py's, re-exported here."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from core.stats import mcnemar, paired_bootstrap  # noqa: F401  the paired tests live in core (shared with the leaderboard)


def accuracy(correct: list[bool], subjects: list[str]) -> tuple[float, float, dict[str, dict]]:
    """(micro, macro, {subject: {"acc", "n"}})."""
    by: dict[str, list[bool]] = defaultdict(list)
    for c, s in zip(correct, subjects):
        by[s].append(bool(c))
    per = {s: {"acc": sum(v) / len(v), "n": len(v)} for s, v in by.items()}
    micro = sum(map(bool, correct)) / len(correct) if correct else 0.0
    macro = float(np.mean([v["acc"] for v in per.values()])) if per else 0.0
    return micro, macro, per


def group_accuracy(per_subject: dict[str, dict], groups: dict[str, list[str]]) -> dict[str, dict]:
    """Per group: `acc` = mean of its subjects' accuracies (how C-Eval and CMMLU report categories),
    `acc_micro` = over its questions, `n` questions, `n_subjects`."""
    out = {}
    for g, members in groups.items():
        rows = [per_subject[s] for s in members if s in per_subject]
        if not rows:
            continue
        n = sum(r["n"] for r in rows)
        out[g] = {"acc": float(np.mean([r["acc"] for r in rows])),
                  "acc_micro": sum(r["acc"] * r["n"] for r in rows) / n, "n": n, "n_subjects": len(rows)}
    return out


def bootstrap_ci(correct: list[bool], subjects: list[str], n_samples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, list[float]]:
    """Percentile CIs. Questions are resampled within each subject (stratified), so every subject
    keeps its size and the macro average stays defined."""
    if not correct:
        return {"micro": [0.0, 0.0], "macro": [0.0, 0.0]}
    rng = np.random.default_rng(seed)
    by: dict[str, list[bool]] = defaultdict(list)
    for c, s in zip(correct, subjects):
        by[s].append(bool(c))
    arrays = [np.asarray(v, dtype=np.float64) for v in by.values()]
    sizes = np.array([len(a) for a in arrays], dtype=np.float64)
    sums = np.empty((n_samples, len(arrays)))
    for j, a in enumerate(arrays):
        idx = rng.integers(0, len(a), size=(n_samples, len(a)))
        sums[:, j] = a[idx].sum(axis=1)
    micro = sums.sum(axis=1) / sizes.sum()
    macro = (sums / sizes).mean(axis=1)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {"micro": [float(np.percentile(micro, lo)), float(np.percentile(micro, hi))],
            "macro": [float(np.percentile(macro, lo)), float(np.percentile(macro, hi))]}
