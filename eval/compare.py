"""Paired significance test between two eval results on the questions both answered.

Reads the two result JSONs (checked against core/results.py) and their predictions files, joins on question id (the gold answer
must agree), and reports both accuracies on the shared questions, an exact McNemar test on the
questions only one of them got right, and a paired bootstrap CI of the accuracy difference.

Run as (CPU or GPU, no model needed):
    python -m eval.compare runs/sft/a/eval/cmmlu.base-5shot-logits.json runs/sft/b/eval/cmmlu.base-5shot-logits.json
    python -m eval.compare A.json B.json --samples 10000 --json out.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import UserError, entrypoint
from core.results import load_predictions, load_result
from core.runs import atomic_write_json
from core.stats import ALPHA, paired_comparison


class CompareError(UserError, ValueError):
    """Two results that cannot be compared, or a missing or broken predictions file."""
    kind = "compare"


def load_with_predictions(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """(result JSON, {question id: predictions line})."""
    path = Path(path)
    if not path.is_file():
        raise CompareError(f"result not found: {path}")
    result = load_result(path)
    return result, load_predictions(path, result)


def compare(a_path, b_path, samples: int = 10000, seed: int = 0, ids: set[str] | None = None) -> dict:
    """`ids`: restrict to these questions (a predictions file may hold more, e.g. from a run
    without LIMIT)."""
    ra, pa = load_with_predictions(a_path)
    rb, pb = load_with_predictions(b_path)
    if ids is not None:
        pa = {k: v for k, v in pa.items() if k in ids}
        pb = {k: v for k, v in pb.items() if k in ids}
    if ra["benchmark"] != rb["benchmark"]:
        raise CompareError(f"different benchmarks: {ra['benchmark']} vs {rb['benchmark']}")
    try:
        paired = paired_comparison(pa, pb, samples, seed)
    except ValueError as e:
        raise CompareError(str(e)) from None
    return {"benchmark": ra["benchmark"], "a": str(a_path), "b": str(b_path),
            "a_protocol": ra["protocol"]["name"], "b_protocol": rb["protocol"]["name"], **paired}


def report(c: dict) -> str:
    bs, mc = c["paired_bootstrap"], c["mcnemar"]
    verdict = "significant" if mc["p_value"] < ALPHA else "not significant"
    return "\n".join([
        f"{c['benchmark']}: {c['n_shared']} shared questions (only in A: {c['n_only_a']}, only in B: {c['n_only_b']})",
        f"  A {c['a_protocol']:<18} acc {100 * c['acc_a']:.2f}   {c['a']}",
        f"  B {c['b_protocol']:<18} acc {100 * c['acc_b']:.2f}   {c['b']}",
        f"  B - A = {100 * bs['diff']:+.2f} points, 95% CI [{100 * bs['ci95'][0]:+.2f}, {100 * bs['ci95'][1]:+.2f}], "
        f"paired bootstrap p = {bs['p_value']:.4f}",
        f"  McNemar (exact): A only right {mc['a_only']}, B only right {mc['b_only']}, p = {mc['p_value']:.4f} "
        f"-> {verdict} at 0.05",
        f"  same prediction on {100 * c['same_prediction']:.1f}% of shared questions"])


@entrypoint
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m eval.compare", description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--samples", type=int, default=10000, help="paired bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="also write the comparison here")
    args = ap.parse_args(argv)
    c = compare(args.a, args.b, args.samples, args.seed)
    print(report(c))
    if args.json:
        atomic_write_json(args.json, c)
    return c


if __name__ == "__main__":
    main()
