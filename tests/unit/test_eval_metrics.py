"""Metric math (eval/metrics.py) on inputs with known answers."""
import math

import pytest

from eval.metrics import accuracy, bootstrap_ci, group_accuracy, mcnemar, paired_bootstrap


def test_micro_macro_and_groups():
    correct = [1, 1, 1, 0, 1, 0]
    subj = ["a", "a", "a", "a", "b", "b"]
    micro, macro, per = accuracy(correct, subj)
    assert micro == pytest.approx(4 / 6) and macro == pytest.approx((0.75 + 0.5) / 2)
    g = group_accuracy(per, {"G": ["a", "b"], "H": ["b"], "empty": ["zzz"]})
    assert g["G"]["acc"] == pytest.approx(0.625) and g["G"]["acc_micro"] == pytest.approx(4 / 6)
    assert g["H"] == {"acc": 0.5, "acc_micro": 0.5, "n": 2, "n_subjects": 1} and "empty" not in g


def test_bootstrap_ci_brackets_and_shrinks():
    subj = ["s"] * 400
    ci = bootstrap_ci([i % 2 == 0 for i in range(400)], subj, n_samples=2000, seed=0)
    lo, hi = ci["micro"]
    # normal approximation: 0.5 +- 1.96 * sqrt(.25 / 400) = +- 0.049
    assert lo < 0.5 < hi and abs((hi - lo) / 2 - 0.049) < 0.01
    assert bootstrap_ci([True] * 50, ["s"] * 50)["micro"] == [1.0, 1.0]
    small = bootstrap_ci([i % 2 == 0 for i in range(40)], ["s"] * 40, n_samples=2000)
    assert small["micro"][1] - small["micro"][0] > hi - lo


def test_mcnemar_exact_values():
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    r = mcnemar(a, b)
    assert (r["a_only"], r["b_only"]) == (10, 2)
    want = 2 * sum(math.comb(12, i) for i in range(3)) / 2 ** 12      # = 0.0386
    assert r["p_value"] == pytest.approx(want)
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0


def test_paired_bootstrap():
    a = [False] * 100
    b = [True] * 30 + [False] * 70
    r = paired_bootstrap(a, b, n_samples=2000, seed=1)
    assert r["diff"] == pytest.approx(0.3) and r["ci95"][0] > 0.2 and r["p_value"] < 0.01
    same = paired_bootstrap(b, b)
    assert same["diff"] == 0 and same["p_value"] == 1.0
