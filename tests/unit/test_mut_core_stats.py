"""The paired tests of core/stats.py (stage deltas, eval.compare, leaderboard ties) against
independent computations: scipy's exact binomial tests, a direct paired bootstrap, comparisons
written out by hand (closes mutmut survivors of core/stats.py; McNemar and the paired bootstrap are
also checked through eval.metrics in test_mut_eval_metrics.py)."""
import numpy as np
import pytest
from scipy.stats import binomtest

from core import stats


@pytest.mark.parametrize("k,n", [(0, 0), (0, 5), (3, 5), (5, 5), (9, 12), (6, 6), (2, 1)])
def test_sign_test_equals_scipy(k, n):
    want = 1.0 if n <= 0 else min(1.0, binomtest(k, n, 0.5, alternative="greater").pvalue) if k <= n else 0.0
    assert stats.sign_test(k, n) == pytest.approx(want)


@pytest.mark.parametrize("a_only,b_only", [(10, 2), (3, 3), (0, 4), (7, 0), (1, 0), (1, 2)])
def test_mcnemar_equals_scipy(a_only, b_only):
    a = [True] * a_only + [False] * b_only + [True, False]
    b = [False] * a_only + [True] * b_only + [True, False]
    r = stats.mcnemar(a, b)
    assert (r["a_only"], r["b_only"]) == (a_only, b_only)
    assert r["p_value"] == pytest.approx(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    assert stats.mcnemar([True], [True]) == {"a_only": 0, "b_only": 0, "p_value": 1.0}


def test_paired_bootstrap_of_floats_equals_a_direct_loop():
    a = [0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.6]
    b = [0.3, 0.4, 1.0, 0.6, 0.9, 0.2, 0.5]
    d = np.subtract(b, a)
    idx = np.random.default_rng(4).integers(0, len(d), size=(400, len(d)))
    diffs = [d[i].mean() for i in idx]
    p = min(1.0, 2 * sum(x <= 0 for x in diffs) / 400)
    r = stats.paired_bootstrap(a, b, n_samples=400, seed=4)
    assert r["diff"] == pytest.approx(d.mean()) and r["p_value"] == pytest.approx(p)
    assert r["ci95"] == pytest.approx([np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)])
    assert stats.paired_bootstrap(b, b, n_samples=10)["p_value"] == 1.0


def test_paired_comparison_by_hand():
    pa = {"q1": {"gold": "A", "correct": True, "pred": "A"}, "q2": {"gold": "B", "correct": False, "pred": "C"},
          "q3": {"gold": "C", "correct": True, "pred": "C"}, "qa": {"gold": "D", "correct": True}}
    pb = {"q1": {"gold": "A", "correct": False, "pred": "B"}, "q2": {"gold": "B", "correct": True, "pred": "B"},
          "q3": {"gold": "C", "correct": True, "pred": "C"}, "qb": {"gold": "A", "correct": 1},
          "qc": {"gold": "A", "correct": 0}}
    r = stats.paired_comparison(pa, pb, samples=300, seed=2)
    a, b = [True, False, True], [False, True, True]           # q1, q2, q3 in id order
    assert {k: r[k] for k in ("n_shared", "n_only_a", "n_only_b", "acc_a", "acc_b")} == {
        "n_shared": 3, "n_only_a": 1, "n_only_b": 2, "acc_a": 2 / 3, "acc_b": 2 / 3}
    assert r["same_prediction"] == pytest.approx(1 / 3)
    assert r["mcnemar"] == stats.mcnemar(a, b) and r["paired_bootstrap"] == stats.paired_bootstrap(a, b, 300, 2)
    assert stats.paired_comparison(pa, pb)["paired_bootstrap"] == stats.paired_bootstrap(a, b, 10000, 0)
    with pytest.raises(ValueError) as e:
        stats.paired_comparison({"x": {"gold": "A", "correct": True}}, {"y": {"gold": "A", "correct": True}})
    assert str(e.value) == "the two results share no questions"
    pb["q3"]["gold"] = "D"
    pb["q2"]["gold"] = "D"
    with pytest.raises(ValueError) as e:
        stats.paired_comparison(pa, pb)
    assert str(e.value) == "2 shared questions have different gold answers (e.g. q2): different benchmark data"


def test_ties():
    assert stats.ALPHA == 0.05
    assert stats.indistinguishable(0.05) and not stats.indistinguishable(0.049999)
    assert stats.indistinguishable(0.5, [0, 1], [5, 6])          # the paired test wins over the CIs
    assert stats.indistinguishable(None, [40.0, 45.0], [45.0, 50.0])     # touching CIs overlap
    assert not stats.indistinguishable(None, [40.0, 44.9], [45.0, 50.0])
    assert not stats.indistinguishable(None, [45.0, 50.0], [40.0, 44.9])
    assert not stats.indistinguishable(None, None, [1, 2]) and not stats.indistinguishable(None, [1, 2], None)
    assert stats.cis_overlap([1, 3], [2, 2.5]) and stats.cis_overlap([2, 2.5], [1, 3])


def direct_paired(a, b, n_samples, seed):
    """The paired bootstrap written out: resample item indices, mean the differences, count the
    resamples on the other side of zero (or on it)."""
    d = [float(y) - float(x) for x, y in zip(a, b)]
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_samples, len(d)))
    diffs = [sum(d[i] for i in row) / len(d) for row in idx]
    obs = sum(d) / len(d)
    if obs == 0:
        p = 1.0
    else:
        p = min(1.0, 2 * sum((x <= 0) if obs > 0 else (x >= 0) for x in diffs) / n_samples)
    return {"diff": obs, "ci95": [np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)], "p_value": p}


def _flat(r):
    return [r["diff"], *r["ci95"], r["p_value"]]


def test_paired_comparison_bootstrap_settings():
    """The default samples/seed (10000, 0) and the passed ones reach the bootstrap: checked on a
    difference that is not zero (a zero one gives p = 1 whatever the draws)."""
    ok_a = [i % 3 != 0 for i in range(24)]
    ok_b = [i % 4 != 0 for i in range(24)]
    pa = {f"q{i:02d}": {"gold": "A", "correct": x} for i, x in enumerate(ok_a)}
    pb = {f"q{i:02d}": {"gold": "A", "correct": x} for i, x in enumerate(ok_b)}
    want = direct_paired(ok_a, ok_b, 10000, 0)
    assert want["diff"] != 0 and 0 < want["p_value"] < 1
    assert _flat(stats.paired_comparison(pa, pb)["paired_bootstrap"]) == pytest.approx(_flat(want), abs=1e-12)
    for seed in (5, 11):
        got = stats.paired_comparison(pa, pb, samples=3000, seed=seed)["paired_bootstrap"]
        assert _flat(got) == pytest.approx(_flat(direct_paired(ok_a, ok_b, 3000, seed)), abs=1e-12)


@pytest.mark.parametrize("a,b", [
    ([True, False, True, True, False], [False, False, True, False, False]),        # bools, B below A
    ([0.9, 0.2, 0.4, 0.7, 0.1, 0.5], [0.3, 0.2, 0.6, 0.1, 0.0, 0.4]),               # floats, B below A
    ([1, 0, 2, 0], [0, 1, 0, 2]),                                                  # ints, zero difference
    ([True, False, False], [False, True, False]),                                  # bools, zero difference
])
def test_paired_bootstrap_signs_and_types(a, b):
    got, want = stats.paired_bootstrap(a, b, n_samples=500, seed=9), direct_paired(a, b, 500, 9)
    assert _flat(got) == pytest.approx(_flat(want), abs=1e-12)
    assert isinstance(got["p_value"], float) and got["p_value"] <= 1.0


def test_cis_overlap_touching_both_orders():
    assert stats.cis_overlap([45.0, 50.0], [40.0, 45.0]) and stats.cis_overlap([40.0, 45.0], [45.0, 50.0])
    assert not stats.cis_overlap([45.0, 50.0], [40.0, 44.9]) and not stats.cis_overlap([40.0, 44.9], [45.0, 50.0])
