"""leaderboard/effects.py: each stage's checks on synthetic measurements at and around every threshold,
the GRPO zero_std trace read from metrics.jsonl, and stage_effects/render_summary/main end to end on a
pretrain -> sft -> dpo -> grpo chain of run folders written here (result files checked by core/results.py,
predictions whose right/wrong pattern the test sets, so every expected number is counted here).

Red when: a threshold comparison moves (>= to >, < to <=), a check is dropped, parent and child are
swapped, a delta is taken against the wrong ancestor, or zero_std steps are mis-counted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binomtest

from core import stats
from leaderboard import effects
from leaderboard.collect import run_chain

CHAT_KEY = ("demo", "chat-0shot-gen", 1, "builtin")


def _chat(acc=0.7, diff=0.1, p=0.001, unparsed=0, n_questions=100, protocol="chat-0shot-gen") -> dict:
    return {("demo", protocol, 1, "builtin"): {"acc_parent": acc - diff, "acc": acc, "n": n_questions,
                                               "diff": diff, "ci95": [diff - 0.05, diff + 0.05],
                                               "p_value": p, "unparsed": unparsed, "n_questions": n_questions}}


def _checks(stage, tmp_path, heldout=None, deltas=None) -> dict:
    """{check name: met} of one stage; also asserts the names are distinct (no check hidden by another)."""
    out = effects._checks(stage, {"stage": stage, "heldout": heldout}, deltas or {}, tmp_path)
    assert len({c["check"] for c in out}) == len(out)
    return {c["check"]: c["met"] for c in out}


def test_thresholds_are_the_documented_ones():
    """The kit's definition of "did its job" (module docstring, issue #11); red if a constant drifts."""
    assert (effects.SFT_MIN_ACC, effects.SFT_MAX_UNPARSED, effects.SFT_MAX_P) == (0.60, 0.05, 0.01)
    assert (effects.DPO_MIN_REWARD_ACC, effects.GRPO_MAX_ZERO_STD_STEPS, effects.ALPHA) == (0.80, 0.5, 0.05)


@pytest.mark.parametrize("hi,met", [(-0.2, True), (-1e-6, True), (0.0, False), (0.03, False)])
def test_pretrain_loss_below_shuffled_needs_ci_upper_below_zero(tmp_path, hi, met):
    """Met only when the whole CI of (loss - shuffled loss) is below 0; red if `hi < 0` becomes `<=`."""
    h = {"loss": 3.1, "loss_shuffled": 4.2, "per_doc_diff": {"ci95": [-1.5, hi]}}
    assert _checks("pretrain", tmp_path, h) == {"held-out loss below token-shuffled": met}
    assert _checks("pretrain", tmp_path, None) == {}      # no held-out record: no check, not a missed one


@pytest.mark.parametrize("acc,unparsed,n,met", [
    (0.60, 5, 100, True), (0.5999, 0, 100, False), (0.60, 6, 100, False), (0.95, 50, 1000, True),
    (0.95, 51, 1000, False), (0.61, None, 100, True), (1.0, 100, 100, False)])
def test_sft_accuracy_and_unparsed(tmp_path, acc, unparsed, n, met):
    """>= 60% chat accuracy and <= 5% unparsed, both boundaries inclusive; None unparsed counts as 0."""
    got = _checks("sft", tmp_path, None, _chat(acc=acc, unparsed=unparsed, n_questions=n))
    assert got["chat accuracy >= 60%, unparsed <= 5%"] is met


@pytest.mark.parametrize("diff,p,met", [(0.2, 0.0099, True), (0.2, 0.01, False), (0.2, 0.0101, False),
                                        (0.001, 1e-9, True), (0.0, 1e-9, False), (-0.2, 1e-9, False)])
def test_sft_better_than_base(tmp_path, diff, p, met):
    """Better than the base: diff > 0 and McNemar p < 0.01 strictly; a significant drop is not better."""
    got = _checks("sft", tmp_path, None, _chat(acc=0.7, diff=diff, p=p))
    assert got["better than the base, McNemar p < 0.01"] is met


def test_sft_reads_only_a_valid_chat_delta(tmp_path):
    """No chat-0shot-gen delta (another protocol, or one whose paired test failed): no SFT checks."""
    assert _checks("sft", tmp_path, None, _chat(protocol="base-5shot-logits")) == {}
    errored = {CHAT_KEY: {"error": "the two results share no questions", "acc_parent": 0.1, "acc": 0.9}}
    assert _checks("sft", tmp_path, None, errored) == {}
    assert len(_checks("sft", tmp_path, None, {**errored, **_chat(protocol="base-5shot-logits")})) == 0


@pytest.mark.parametrize("acc,met", [(0.8, True), (0.7999, False), (0.95, True), (0.5, False)])
def test_dpo_reward_accuracy(tmp_path, acc, met):
    """Held-out implicit-reward accuracy >= 0.8, the boundary included."""
    h = {"reward_acc": acc, "n_pairs": 64, "sign_test_p": 0.003}
    assert _checks("dpo", tmp_path, h) == {"held-out implicit-reward accuracy >= 0.8": met}


@pytest.mark.parametrize("diff,p,met", [(-0.1, 0.0499, False), (-0.1, 0.05, True), (-0.1, 0.3, True),
                                        (0.0, 0.0, True), (0.1, 0.001, True)])
def test_dpo_chat_not_significantly_below_parent(tmp_path, diff, p, met):
    """Missed only for a drop with p < ALPHA (0.05); a drop at p = 0.05 or any gain is met."""
    got = _checks("dpo", tmp_path, None, _chat(acc=0.5, diff=diff, p=p))
    assert got == {"chat accuracy not significantly below the parent": met}


def test_dpo_detail_shows_own_ranking_when_recorded(tmp_path):
    """The models' own ranking follows the sign test in the detail for new manifests, absent for old ones;
    red if parent/this are swapped or the keys are read for an old manifest (KeyError)."""
    old = {"reward_acc": 0.8125, "n_pairs": 64, "sign_test_p": 0.00042}
    new = {**old, "reference_pref_acc": 0.81875, "policy_pref_acc": 0.84}
    (c_new,) = effects._checks("dpo", {"heldout": new}, {}, tmp_path)
    (c_old,) = effects._checks("dpo", {"heldout": old}, {}, tmp_path)
    assert c_old["detail"] == "0.812 on 64 pairs, sign test p = 0.00042"
    assert c_new["detail"] == "0.812 on 64 pairs, sign test p = 0.00042 (own ranking: parent 0.819, this 0.840)"
    assert effects._own_ranking(old) == ""


@pytest.mark.parametrize("lo,met", [(0.001, True), (0.0, False), (-0.05, False)])
def test_grpo_heldout_reward_ci_above_zero(tmp_path, lo, met):
    """The paired bootstrap CI's lower bound must be strictly above 0 (tmp_path has no metrics.jsonl)."""
    h = {"reward_init": 0.2, "reward_trained": 0.3, "paired_bootstrap": {"diff": 0.1, "ci95": [lo, 0.2]}}
    assert _checks("grpo", tmp_path, h) == {"held-out reward above the init model's (95% CI > 0)": met}


def _metrics(run: Path, fracs: list, extra_rows: int = 2) -> Path:
    rows = [{"step": i, "loss": 1.0} for i in range(extra_rows)]        # rows without the key are skipped
    rows += [{"step": 10 + i, "zero_std_frac": f} for i, f in enumerate(fracs)]
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return run


def test_zero_std_steps_counts_steps_at_one(tmp_path):
    """Steps = rows with zero_std_frac; at 1 = the ones equal to 1.0 (0.999 is not); red if `>=` becomes `>`
    or rows without the key are counted."""
    fracs = [1.0, 0.5, 0.999, 1, 0.0, 1.0]
    assert effects.zero_std_steps(_metrics(tmp_path / "a", fracs)) == {
        "steps": 6, "all_zero_std": 3, "mean": pytest.approx((1 + 0.5 + 0.999 + 1 + 0 + 1) / 6)}
    assert effects.zero_std_steps(_metrics(tmp_path / "b", [], extra_rows=3)) is None     # none logged
    assert effects.zero_std_steps(tmp_path / "missing") is None


@pytest.mark.parametrize("fracs,met", [([1, 1, 1, 0.2, 0.0, 0.5, 0.9], True), ([1, 1, 0.5, 0.0], False),
                                       ([1, 1, 1, 1, 0.3], False), ([0.0], True), ([1.0], False)])
def test_grpo_reward_varies_on_most_steps(tmp_path, fracs, met):
    """Met when fewer than half of the logged steps are at 1; exactly half is missed; the detail counts them."""
    (c,) = effects._checks("grpo", {}, {}, _metrics(tmp_path, fracs))
    at_one = sum(f == 1 for f in fracs)
    assert (c["check"], c["met"]) == ("reward varies within groups on most steps", met)
    assert c["detail"] == f"zero_std_frac = 1 on {at_one} of {len(fracs)} logged steps"


# ---- end to end: a chain of run folders ---------------------------------------------------------
N = 40
GOLD = ["ABCD"[i % 4] for i in range(N)]


def _pattern(right: set[int], n: int = N) -> list[bool]:
    return [i in right for i in range(n)]


def _write_result(run: Path, proto: str, correct: list[bool], n_unparsed=0, extra_ids=0) -> None:
    """A valid result (core.results.check_result) and its predictions; `extra_ids` questions only here."""
    correct = correct + [True] * extra_ids
    rows = [{"id": f"demo/q{i}", "gold": GOLD[i % N], "pred": GOLD[i % N] if c else "Z", "correct": c}
            for i, c in enumerate(correct)]
    acc = sum(correct) / len(correct)
    res = {"schema_version": 1, "benchmark": "demo", "benchmark_version": "1", "split": "test",
           "data_source": "builtin", "subset": "builtin", "n_questions": len(rows), "n_unparsed": n_unparsed,
           "protocol": {"name": proto, "version": 1}, "model": {"name": run.name, "params": None},
           "acc_micro": acc, "acc_macro": acc, "ci95": {"micro": [0.0, 1.0]}, "date": "2026-03-01T10:00:00Z",
           "predictions": f"demo.{proto}.predictions.jsonl"}
    (run / "eval").mkdir(parents=True, exist_ok=True)
    (run / "eval" / f"demo.{proto}.json").write_text(json.dumps(res))
    (run / "eval" / res["predictions"]).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(root: Path, stage: str, parent: Path | None, heldout=None) -> Path:
    run = root / stage / f"{stage}-1"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"stage": stage, "run": run.name, "heldout": heldout,
                                                   "parent": str(parent) if parent else None}))
    return run


BASE_RIGHT = set(range(10))                       # 10 / 40
SFT_RIGHT = set(range(2, 32))                     # 30 / 40: loses q0, q1, gains q10..q31 (22)
DPO_RIGHT = set(range(2, 16)) | {35}              # 15 / 40: loses q16..q31 (16) against SFT, gains q35


@pytest.fixture
def chain(tmp_path):
    base = _run(tmp_path, "pretrain", None, {"loss": 3.0, "loss_shuffled": 4.5,
                                             "per_doc_diff": {"ci95": [-1.7, -1.3]}})
    _write_result(base, "chat-0shot-gen", _pattern(BASE_RIGHT))
    _write_result(base, "base-5shot-logits", _pattern(set(range(20))))
    sft = _run(tmp_path, "sft", base)
    _write_result(sft, "chat-0shot-gen", _pattern(SFT_RIGHT), n_unparsed=1, extra_ids=3)
    _write_result(sft, "base-5shot-logits", _pattern(set(range(20))))
    (sft / "eval" / "demo.chat-0shot-cot.json").write_text("{not json")      # skipped, not fatal
    dpo = _run(tmp_path, "dpo", sft, {"reward_acc": 0.75, "n_pairs": 200, "sign_test_p": 1e-12,
                                      "reference_pref_acc": 0.7, "policy_pref_acc": 0.72})
    _write_result(dpo, "chat-0shot-gen", _pattern(DPO_RIGHT))
    _write_result(dpo, "chat-0shot-cot", _pattern(DPO_RIGHT))           # no counterpart in the SFT run
    grpo = _run(tmp_path, "grpo", dpo, {"reward_init": 0.1, "reward_trained": 0.4,
                                        "paired_bootstrap": {"diff": 0.3, "ci95": [0.2, 0.4]}})
    _metrics(grpo, [1.0, 0.2, 0.0, 1.0])                                # 2 of 4 at 1: missed
    return tmp_path, [base, sft, dpo, grpo]


def _expected(parent: set[int], child: set[int], n=N) -> dict:
    """The delta counted here from the two right/wrong patterns, McNemar's p from scipy's binomial test."""
    a_only, b_only = len(parent - child), len(child - parent)
    return {"acc_parent": len(parent) / n, "acc": len(child) / n, "diff": (len(child) - len(parent)) / n,
            "n": n, "p_value": binomtest(a_only, a_only + b_only, 0.5).pvalue}


def test_stage_effects_deltas_against_the_direct_parent(chain):
    """Each run is compared with its own parent, child minus parent, on shared questions only (the SFT
    run's 3 extra ones left out); results with no counterpart give no delta; red on a parent/child swap."""
    root, (base, sft, dpo, grpo) = chain
    eff = effects.stage_effects(run_chain(grpo, root, pytest.fail))
    assert [(e["stage"], e["run"]) for e in eff] == [("pretrain", str(base)), ("sft", str(sft)),
                                                     ("dpo", str(dpo)), ("grpo", str(grpo))]
    assert eff[0]["deltas"] == {} and eff[3]["deltas"] == {}
    assert set(eff[1]["deltas"]) == {CHAT_KEY, ("demo", "base-5shot-logits", 1, "builtin")}
    assert set(eff[2]["deltas"]) == {CHAT_KEY}                   # not chat-0shot-cot, not base-5shot
    for e, parent, child in ((eff[1], BASE_RIGHT, SFT_RIGHT), (eff[2], SFT_RIGHT, DPO_RIGHT)):
        d, want = e["deltas"][CHAT_KEY], _expected(parent, child)
        assert {k: d[k] for k in want} == pytest.approx(want)
        order = sorted(range(N), key=lambda i: f"demo/q{i}")      # the bootstrap draws in id order
        a, b = [i in parent for i in order], [i in child for i in order]
        assert d["p_value"] == stats.mcnemar(a, b)["p_value"]
        assert d["ci95"] == stats.paired_bootstrap(a, b)["ci95"]
    assert (eff[1]["deltas"][CHAT_KEY]["unparsed"], eff[1]["deltas"][CHAT_KEY]["n_questions"]) == (1, N + 3)
    same = eff[1]["deltas"][("demo", "base-5shot-logits", 1, "builtin")]
    assert (same["diff"], same["p_value"], same["acc"]) == (0.0, 1.0, 0.5)
    assert eff[2]["heldout"]["reward_acc"] == 0.75


def test_stage_effects_checks_along_the_chain(chain):
    """pretrain met; SFT 75% on the shared questions, 1 of 43 unparsed, better than the base (both met);
    DPO reward 0.75 and a significant chat drop (both missed); GRPO CI met, 2 of 4 steps at 1 missed.
    Red if any check is dropped or a stage reads the wrong run folder."""
    root, runs = chain
    eff = effects.stage_effects(run_chain(runs[-1], root, pytest.fail))
    got = [{c["check"]: c["met"] for c in e["checks"]} for e in eff]
    assert got == [{"held-out loss below token-shuffled": True},
                   {"chat accuracy >= 60%, unparsed <= 5%": True, "better than the base, McNemar p < 0.01": True},
                   {"held-out implicit-reward accuracy >= 0.8": False,
                    "chat accuracy not significantly below the parent": False},
                   {"held-out reward above the init model's (95% CI > 0)": True,
                    "reward varies within groups on most steps": False}]


def test_a_result_that_cannot_be_paired_gives_an_error_delta(tmp_path):
    """A delta that cannot be paired (predictions file missing: SchemaError; other gold answers:
    ValueError) carries the error and the files' own accuracies, and renders as such."""
    a, b = _run(tmp_path, "pretrain", None), _run(tmp_path, "sft", None)
    _write_result(a, "chat-0shot-gen", _pattern(BASE_RIGHT))
    _write_result(b, "chat-0shot-gen", _pattern(SFT_RIGHT))
    (b / "eval" / "demo.chat-0shot-gen.predictions.jsonl").unlink()
    _write_result(a, "base-5shot-logits", _pattern(BASE_RIGHT))
    _write_result(b, "base-5shot-logits", _pattern(BASE_RIGHT))
    pred = b / "eval" / "demo.base-5shot-logits.predictions.jsonl"
    pred.write_text(pred.read_text().replace('"gold": "A"', '"gold": "B"'))
    eff = effects.stage_effects([{"stage": "pretrain", "_path": str(a)}, {"stage": "sft", "_path": str(b)}])
    other = eff[1]["deltas"][("demo", "base-5shot-logits", 1, "builtin")]
    assert "different gold answers" in other["error"] and (other["acc_parent"], other["acc"]) == (0.25, 0.25)
    d = eff[1]["deltas"][CHAT_KEY]
    assert (d["acc_parent"], d["acc"]) == (0.25, 0.75) and "predictions file" in d["error"]
    assert eff[1]["checks"] == []                           # an errored delta is no chat measurement
    assert f"demo chat-0shot-gen: 25.0 -> 75.0 (no paired test: {d['error']})" in effects.render_summary(eff)


def test_main_prints_the_summary_and_writes_json(chain, capsys, tmp_path):
    """`python -m leaderboard.effects <run> --json`: the printed summary has a line per run and delta and
    the met / MISSED marks with their details; the JSON lists the same deltas with their keys."""
    root, (base, sft, dpo, grpo) = chain
    out = tmp_path / "effects.json"
    effects.main([str(grpo), "--runs-root", str(root), "--json", str(out)])
    text = capsys.readouterr().out
    w = _expected(SFT_RIGHT, DPO_RIGHT)
    for line in ["Stage effects on held-out items (each stage against its parent):",
                 f"  PRETRAIN  {base}", f"  SFT       {sft}", f"  DPO       {dpo}", f"  GRPO      {grpo}",
                 "      [met   ] held-out loss below token-shuffled: 3.000 vs 4.500, diff CI upper -1.300",
                 "      [met   ] chat accuracy >= 60%, unparsed <= 5%: 75.0%, unparsed 2.3%",
                 "      [MISSED] held-out implicit-reward accuracy >= 0.8: 0.750 on 200 pairs, sign test p = 1e-12"
                 " (own ranking: parent 0.700, this 0.720)",
                 f"      [MISSED] chat accuracy not significantly below the parent: -37.5 points, McNemar p = "
                 f"{w['p_value']:.2g}",
                 "      [met   ] held-out reward above the init model's (95% CI > 0): 0.100 -> 0.400, diff CI "
                 "[+0.200, +0.400]",
                 "      [MISSED] reward varies within groups on most steps: zero_std_frac = 1 on 2 of 4 logged steps"]:
        assert line in text.splitlines()
    chat_lines = [s for s in text.splitlines() if s.startswith("      demo chat-0shot-gen: ")]
    assert [s.split(" (")[0] for s in chat_lines] == ["      demo chat-0shot-gen: 25.0 -> 75.0",
                                                      "      demo chat-0shot-gen: 75.0 -> 37.5"]
    assert chat_lines[1].endswith(f"McNemar p = {w['p_value']:.2g}, n = 40)") and "-37.5 points" in chat_lines[1]
    saved = json.loads(out.read_text())
    assert [len(e["deltas"]) for e in saved] == [0, 2, 1, 0]
    assert {k: saved[2]["deltas"][0][k] for k in ("benchmark", "protocol", "version", "subset", "n")} == {
        "benchmark": "demo", "protocol": "chat-0shot-gen", "version": 1, "subset": "builtin", "n": 40}
