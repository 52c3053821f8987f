"""Eval metrics against independent computations: accuracies by hand, the stratified bootstrap CI
against a direct loop over resamples, McNemar against scipy's exact binomial test, the paired
bootstrap against a direct loop (closes mutmut survivors of eval/metrics.py; the equivalent ones
are in tests/mutation_equivalent.md)."""
import numpy as np
import pytest
from scipy.stats import binomtest

from eval.metrics import accuracy, bootstrap_ci, group_accuracy, mcnemar, paired_bootstrap

def flat(d: dict) -> list[float]:
    return [float(x) for k in sorted(d) for x in (d[k] if isinstance(d[k], list) else [d[k]])]


CORRECT = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1]
SUBJ = ["a"] * 5 + ["b"] * 9 + ["c"] * 4


def test_accuracy_and_groups_by_hand():
    micro, macro, per = accuracy(CORRECT, SUBJ)
    acc = {"a": 3 / 5, "b": 5 / 9, "c": 3 / 4}
    assert micro == pytest.approx(11 / 18) and macro == pytest.approx(sum(acc.values()) / 3)
    assert per == {s: {"acc": pytest.approx(v), "n": n} for (s, v), n in zip(acc.items(), (5, 9, 4))}
    g = group_accuracy(per, {"ab": ["a", "b", "zz"], "c": ["c"]})
    assert g["ab"] == {"acc": pytest.approx((3 / 5 + 5 / 9) / 2), "acc_micro": pytest.approx(8 / 14), "n": 14,
                       "n_subjects": 2}
    assert g["c"] == {"acc": pytest.approx(0.75), "acc_micro": pytest.approx(0.75), "n": 4, "n_subjects": 1}
    assert accuracy([], []) == (0.0, 0.0, {})


def direct_bootstrap(correct, subjects, n_samples, seed, level):
    """One resample at a time: within each subject (in first-seen order) draw its size with
    replacement; micro = all right / all questions, macro = mean of the subjects' accuracies."""
    rng = np.random.default_rng(seed)
    by = {}
    for c, s in zip(correct, subjects):
        by.setdefault(s, []).append(float(bool(c)))
    draws = {s: rng.integers(0, len(v), size=(n_samples, len(v))) for s, v in by.items()}
    micro, macro = [], []
    for r in range(n_samples):
        sums = {s: sum(v[i] for i in draws[s][r]) for s, v in by.items()}
        micro.append(sum(sums.values()) / len(correct))
        macro.append(np.mean([sums[s] / len(v) for s, v in by.items()]))
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    return {"micro": [np.percentile(micro, lo), np.percentile(micro, hi)],
            "macro": [np.percentile(macro, lo), np.percentile(macro, hi)]}


@pytest.mark.parametrize("seed,level", [(0, 0.95), (7, 0.8)])
def test_bootstrap_ci_equals_a_direct_bootstrap(seed, level):
    got = bootstrap_ci(CORRECT, SUBJ, n_samples=300, seed=seed, level=level)
    want = direct_bootstrap(CORRECT, SUBJ, 300, seed, level)
    for k in ("micro", "macro"):
        assert [float(x) for x in got[k]] == pytest.approx(want[k], abs=1e-12)
        assert got[k][0] < got[k][1]
    assert bootstrap_ci([], []) == {"micro": [0.0, 0.0], "macro": [0.0, 0.0]}


def test_default_bootstrap_settings():
    assert flat(bootstrap_ci(CORRECT, SUBJ)) == pytest.approx(flat(direct_bootstrap(CORRECT, SUBJ, 1000, 0, 0.95)))
    a, b = CORRECT, [1] * 6 + CORRECT[6:]
    assert flat(paired_bootstrap(a, b)) == pytest.approx(flat(direct_paired(a, b, 10000, 0)))


@pytest.mark.parametrize("a_only,b_only,both", [(10, 2, 5), (3, 3, 1), (0, 4, 2), (7, 0, 0), (1, 2, 0)])
def test_mcnemar_equals_the_exact_binomial_test(a_only, b_only, both):
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * 3
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * 3
    r = mcnemar(a, b)
    assert (r["a_only"], r["b_only"]) == (a_only, b_only)
    assert r["p_value"] == pytest.approx(binomtest(a_only, a_only + b_only, 0.5).pvalue)


def direct_paired(a, b, n_samples, seed):
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_samples, len(d)))
    diffs = [d[i].mean() for i in idx]
    obs = d.mean()
    other_side = sum(x <= 0 for x in diffs) if obs > 0 else sum(x >= 0 for x in diffs)
    p = 1.0 if obs == 0 else min(1.0, 2 * other_side / n_samples)
    return {"diff": obs, "ci95": [np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)], "p_value": p}


@pytest.mark.parametrize("shift", [2, 6])
def test_paired_bootstrap_equals_a_direct_loop(shift):
    a = CORRECT
    b = [1] * shift + CORRECT[shift:]                  # B right on a few more questions than A
    for x, y in ((a, b), (b, a)):                      # both signs of the difference
        got, want = paired_bootstrap(x, y, n_samples=500, seed=3), direct_paired(x, y, 500, 3)
        assert flat(got) == pytest.approx(flat(want), abs=1e-12) and got["diff"] != 0
        assert got["ci95"][0] < got["ci95"][1] and 0 < got["p_value"] <= 1


def test_edges():
    assert mcnemar([True, False], [True, False]) == {"a_only": 0, "b_only": 0, "p_value": 1.0}
    assert mcnemar([True, True], [False, True]) == {"a_only": 1, "b_only": 0, "p_value": 1.0}
    per = accuracy(CORRECT, SUBJ)[2]
    assert list(group_accuracy(per, {"none": ["zz"], "c": ["c"]})) == ["c"]
    a, b = [False] * 10, [True] * 10                   # B right everywhere A is wrong
    assert paired_bootstrap(a, b, n_samples=200) == {"diff": 1.0, "ci95": [1.0, 1.0], "p_value": 0.0}
    bools = [bool(c) for c in CORRECT]                 # the callers pass lists of bools
    assert flat(paired_bootstrap(bools, bools[::-1], n_samples=300, seed=2)) == pytest.approx(
        flat(direct_paired(bools, bools[::-1], 300, 2)))
