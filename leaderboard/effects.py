"""Each stage's effect against its parent, on items it never trained on, with a test of significance:
what the report card shows per lineage and what `make demo` prints at the end.

| stage    | measured on held-out items (where it comes from)                                    | check            |
|----------|-------------------------------------------------------------------------------------|------------------|
| pretrain | loss vs the same documents token-shuffled (manifest `heldout`, pretrain/heldout.py) | CI of diff < 0   |
| any      | eval accuracy vs the parent run, same protocol and questions (predictions files,   | paired: McNemar, |
|          | core.stats.paired_comparison = eval.compare)                                        | bootstrap CI     |
| SFT      | chat-0shot-gen accuracy and unparsed share; better than the base                    | >= 60%, <= 5%, p < 0.01 |
| DPO      | implicit-reward accuracy on held-out pairs (manifest `heldout`, rl/heldout.py);     | >= 0.8; not      |
|          | chat accuracy against the SFT parent                                                | significantly below |
| GRPO     | greedy reward on held-out prompts, init vs trained (manifest `heldout`); the reward | CI > 0; < half   |
|          | trace's zero_std_frac (metrics.jsonl)                                               | the steps at 1   |

The thresholds are the kit's definition of "the stage did its job" (issue #11), the same for the demo
and for real runs. Reads run folders and result files only: no torch, no stage imports.

Run as:
    python -m leaderboard.effects runs/grpo/<run>        # the lineage of a run, closing summary
    python -m leaderboard.effects runs/grpo/<run> --json effects.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import entrypoint
from core.log import read_metrics
from core.results import SchemaError, load_predictions, load_result
from core.runs import atomic_write_json
from core.stats import ALPHA, paired_comparison
from leaderboard.collect import run_chain

SFT_MIN_ACC, SFT_MAX_UNPARSED, SFT_MAX_P = 0.60, 0.05, 0.01
DPO_MIN_REWARD_ACC = 0.80
GRPO_MAX_ZERO_STD_STEPS = 0.5          # share of logged steps whose every group had one reward
CHAT = "chat-0shot-gen"


def run_results(run_dir: Path) -> dict[tuple, tuple[Path, dict]]:
    """{(benchmark, protocol, version, subset): (result path, result)} of a run's eval/ folder."""
    out = {}
    for p in sorted((Path(run_dir) / "eval").glob("*.json")):
        try:
            d = load_result(p)
        except SchemaError:
            continue   # the leaderboard warns about it; an effect needs a valid result
        out[(d["benchmark"], d["protocol"]["name"], d["protocol"]["version"], d["subset"])] = (p, d)
    return out


def result_delta(parent: tuple[Path, dict], child: tuple[Path, dict]) -> dict:
    """Child minus parent on the questions both answered: accuracies, McNemar p, bootstrap CI."""
    (pp, pd), (cp, cd) = parent, child
    try:
        c = paired_comparison(load_predictions(pp, pd), load_predictions(cp, cd))
    except (SchemaError, ValueError) as e:
        return {"error": str(e), "acc_parent": pd["acc_micro"], "acc": cd["acc_micro"]}
    return {"acc_parent": c["acc_a"], "acc": c["acc_b"], "n": c["n_shared"], "diff": c["paired_bootstrap"]["diff"],
            "ci95": c["paired_bootstrap"]["ci95"], "p_value": c["mcnemar"]["p_value"],
            "unparsed": cd.get("n_unparsed"), "n_questions": cd["n_questions"]}


def zero_std_steps(run_dir: Path) -> dict | None:
    """How many logged GRPO steps had zero_std_frac == 1 (no group with two different rewards)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    vals = [r["zero_std_frac"] for r in read_metrics(path) if "zero_std_frac" in r]
    if not vals:
        return None
    return {"steps": len(vals), "all_zero_std": sum(v >= 1.0 for v in vals), "mean": sum(vals) / len(vals)}


def _check(name: str, met: bool | None, detail: str) -> dict:
    return {"check": name, "met": met, "detail": detail}


def stage_effects(chain: list[dict]) -> list[dict]:
    """One entry per run of the lineage (oldest first, manifests with `_path`): its stage, the
    held-out measurements against its parent and the checks they pass or miss."""
    out, parent_results = [], {}
    for m in chain:
        run_dir, stage = Path(m["_path"]), m.get("stage")
        results = run_results(run_dir)
        deltas = {k: result_delta(parent_results[k], v) for k, v in results.items() if k in parent_results}
        entry = {"stage": stage, "run": str(run_dir), "deltas": deltas, "heldout": m.get("heldout"), "checks": []}
        entry["checks"] = _checks(stage, m, deltas, run_dir)
        out.append(entry)
        parent_results = results
    return out


def _chat(deltas: dict) -> dict | None:
    return next((d for k, d in sorted(deltas.items()) if k[1] == CHAT and "error" not in d), None)


def _own_ranking(h: dict) -> str:
    """The models' own ranking of the held-out pairs (rl/heldout.py; absent from runs before it): the
    parent's is the knowledge DPO starts from, which its implicit reward can hardly exceed."""
    if "reference_pref_acc" not in h:
        return ""
    return f" (own ranking: parent {h['reference_pref_acc']:.3f}, this {h['policy_pref_acc']:.3f})"


def _checks(stage: str, m: dict, deltas: dict, run_dir: Path) -> list[dict]:
    h, chat, checks = m.get("heldout") or {}, _chat(deltas), []
    if stage == "pretrain" and h:
        hi = h["per_doc_diff"]["ci95"][1]
        checks.append(_check("held-out loss below token-shuffled", hi < 0,
                             f"{h['loss']:.3f} vs {h['loss_shuffled']:.3f}, diff CI upper {hi:+.3f}"))
    if stage == "sft" and chat:
        unp = (chat.get("unparsed") or 0) / chat["n_questions"]
        checks.append(_check(f"chat accuracy >= {SFT_MIN_ACC:.0%}, unparsed <= {SFT_MAX_UNPARSED:.0%}",
                             chat["acc"] >= SFT_MIN_ACC and unp <= SFT_MAX_UNPARSED,
                             f"{100 * chat['acc']:.1f}%, unparsed {100 * unp:.1f}%"))
        checks.append(_check(f"better than the base, McNemar p < {SFT_MAX_P}",
                             chat["diff"] > 0 and chat["p_value"] < SFT_MAX_P, f"p = {chat['p_value']:.2g}"))
    if stage == "dpo":
        if h:
            checks.append(_check(f"held-out implicit-reward accuracy >= {DPO_MIN_REWARD_ACC}",
                                 h["reward_acc"] >= DPO_MIN_REWARD_ACC,
                                 f"{h['reward_acc']:.3f} on {h['n_pairs']} pairs, sign test p = {h['sign_test_p']:.2g}"
                                 + _own_ranking(h)))
        if chat:
            worse = chat["diff"] < 0 and chat["p_value"] < ALPHA
            checks.append(_check("chat accuracy not significantly below the parent", not worse,
                                 f"{100 * chat['diff']:+.1f} points, McNemar p = {chat['p_value']:.2g}"))
    if stage == "grpo":
        if h:
            bs = h["paired_bootstrap"]
            checks.append(_check("held-out reward above the init model's (95% CI > 0)", bs["ci95"][0] > 0,
                                 f"{h['reward_init']:.3f} -> {h['reward_trained']:.3f}, diff CI "
                                 f"[{bs['ci95'][0]:+.3f}, {bs['ci95'][1]:+.3f}]"))
        z = zero_std_steps(run_dir)
        if z:
            checks.append(_check("reward varies within groups on most steps",
                                 z["all_zero_std"] < GRPO_MAX_ZERO_STD_STEPS * z["steps"],
                                 f"zero_std_frac = 1 on {z['all_zero_std']} of {z['steps']} logged steps"))
    return checks


def render_summary(effects: list[dict]) -> str:
    lines = ["Stage effects on held-out items (each stage against its parent):"]
    for e in effects:
        lines.append(f"  {str(e['stage']).upper():<9} {e['run']}")
        for (bench, proto, _, _), d in sorted(e["deltas"].items()):
            if "error" in d:
                lines.append(f"      {bench} {proto}: {100 * d['acc_parent']:.1f} -> {100 * d['acc']:.1f} "
                             f"(no paired test: {d['error']})")
                continue
            lines.append(f"      {bench} {proto}: {100 * d['acc_parent']:.1f} -> {100 * d['acc']:.1f} "
                         f"({100 * d['diff']:+.1f} points, 95% CI [{100 * d['ci95'][0]:+.1f}, "
                         f"{100 * d['ci95'][1]:+.1f}], McNemar p = {d['p_value']:.2g}, n = {d['n']})")
        for c in e["checks"]:
            mark = "met   " if c["met"] else "MISSED"
            lines.append(f"      [{mark}] {c['check']}: {c['detail']}")
    return "\n".join(lines)


@entrypoint
def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m leaderboard.effects", description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a finished run folder; its lineage is walked back to the base")
    ap.add_argument("--runs-root", default="runs", help="where parents named relative to the repo are found")
    ap.add_argument("--json", default="", help="also write the effects here")
    args = ap.parse_args(argv)
    chain = [m for m in run_chain(Path(args.run), Path(args.runs_root), print) if m.get("_path")]
    effects = stage_effects(chain)
    print(render_summary(effects))
    if args.json:
        atomic_write_json(args.json, [{**e, "deltas": [{"benchmark": k[0], "protocol": k[1], "version": k[2],
                                                        "subset": k[3], **d} for k, d in e["deltas"].items()]}
                                      for e in effects])
    return effects


if __name__ == "__main__":
    main()
