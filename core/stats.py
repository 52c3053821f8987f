"""Paired significance tests shared by the stages' held-out checks, eval.compare and the leaderboard
(stage deltas, tied ranks). Pure Python + numpy: no torch and no stage imports, so the leaderboard,
which only reads files, computes exactly what eval.compare prints.

    mcnemar(a, b)                 exact McNemar on two paired lists of right/wrong
    paired_bootstrap(a, b)        mean difference B - A with a 95% CI (bools or floats)
    sign_test(k, n)               one-sided binomial P(X >= k) under p = 1/2
    paired_comparison(pa, pb)     two {question id: prediction row} maps -> accuracies + both tests
    indistinguishable(...)        can two scores not be told apart (paired test, else CI overlap)?
"""
from __future__ import annotations

import math

import numpy as np

ALPHA = 0.05          # the significance level of every "significant" / "tied" verdict in this kit


def mcnemar(a: list[bool], b: list[bool]) -> dict:
    """Exact (binomial) McNemar test. a_only: A right, B wrong; b_only: A wrong, B right."""
    b01 = sum(1 for x, y in zip(a, b) if x and not y)
    b10 = sum(1 for x, y in zip(a, b) if y and not x)
    n = b01 + b10
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0}
    k = min(b01, b10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"a_only": b01, "b_only": b10, "p_value": min(1.0, 2 * tail)}


def paired_bootstrap(a, b, n_samples: int = 10000, seed: int = 0) -> dict:
    """Mean difference B - A with a 95% CI from resampling the paired items, and a two-sided
    p-value (share of resamples on the other side of zero, doubled). `a`, `b`: bools or numbers."""
    d = np.subtract(b, a, dtype=np.float64)         # float64 also for two bool lists (bool - bool is an error)
    idx = np.random.default_rng(seed).integers(len(d), size=(n_samples, len(d)))    # items drawn from [0, n)
    diffs = d[idx].mean(axis=1)
    obs = float(d.mean())
    # on the other side of zero, or on it: diffs <= 0 for obs > 0, diffs >= 0 for obs < 0; for obs == 0
    # every resample counts, so p = 1
    p = float(min(1.0, 2 * np.mean(diffs * np.sign(obs) <= 0)))
    return {"diff": obs, "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
            "p_value": p}


def sign_test(successes: int, n: int) -> float:
    """One-sided exact binomial test: P(X >= successes) for X ~ Binomial(n, 1/2)."""
    # sum of C(n, i) for i = successes..n, written by symmetry (C(n, i) = C(n, n - i)) as i = 0..n - successes;
    # n = 0 gives 1.0, successes > n gives 0.0
    return sum(math.comb(n, i) for i in range(n - successes + 1)) / 2 ** n


def paired_comparison(pa: dict[str, dict], pb: dict[str, dict], samples: int = 10000, seed: int = 0) -> dict:
    """Two evaluations of the same questions ({id: {"gold", "correct", "pred"?}}), joined on id.
    Raises ValueError when they share no question or a shared question has two gold answers."""
    shared = sorted(set(pa) & set(pb))
    if not shared:
        raise ValueError("the two results share no questions")
    bad = [q for q in shared if pa[q].get("gold") != pb[q].get("gold")]
    if bad:
        raise ValueError(f"{len(bad)} shared questions have different gold answers (e.g. {bad[0]}): "
                         f"different benchmark data")
    a = [bool(pa[q]["correct"]) for q in shared]
    b = [bool(pb[q]["correct"]) for q in shared]
    return {"n_shared": len(shared), "n_only_a": len(set(pa) - set(pb)), "n_only_b": len(set(pb) - set(pa)),
            "acc_a": sum(a) / len(a), "acc_b": sum(b) / len(b),
            "same_prediction": sum(pa[q].get("pred") == pb[q].get("pred") for q in shared) / len(shared),
            "mcnemar": mcnemar(a, b), "paired_bootstrap": paired_bootstrap(a, b, samples, seed)}


def cis_overlap(ci_a, ci_b) -> bool:
    """Two [lo, hi] intervals share a point."""
    return ci_a[0] <= ci_b[1] and ci_b[0] <= ci_a[1]


def indistinguishable(p_value: float | None = None, ci_a=None, ci_b=None) -> bool:
    """Cannot tell two scores apart: the paired test's p >= ALPHA when there is one (same questions,
    per-question results on both sides), else the two 95% CIs overlap (the conservative fallback)."""
    if p_value is not None:
        return p_value >= ALPHA
    if ci_a is None or ci_b is None:
        return False
    return cis_overlap(ci_a, ci_b)
