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
import json
from pathlib import Path

from core.errors import UserError, entrypoint
from core.results import load_result
from core.runs import atomic_write_json
from eval.metrics import mcnemar, paired_bootstrap


class CompareError(UserError, ValueError):
    """Two results that cannot be compared, or a missing or broken predictions file."""
    kind = "compare"


def load_with_predictions(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """(result JSON, {question id: predictions line})."""
    path = Path(path)
    if not path.is_file():
        raise CompareError(f"result not found: {path}")
    result = load_result(path)
    pred = path.parent / result.get("predictions", "")
    if not pred.is_file():
        raise CompareError(f"{path}: its predictions file {pred} is missing")
    rows = {}
    for i, line in enumerate(pred.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise CompareError(f"{pred}:{i}: invalid JSON: {e.msg}") from None
            rows[r["id"]] = r
    return result, rows


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
    shared = sorted(set(pa) & set(pb))
    bad = [q for q in shared if pa[q]["gold"] != pb[q]["gold"]]
    if bad:
        raise CompareError(f"{len(bad)} shared questions have different gold answers (e.g. {bad[0]}): "
                           f"different benchmark data")
    if not shared:
        raise CompareError("the two results share no questions")
    a = [bool(pa[q]["correct"]) for q in shared]
    b = [bool(pb[q]["correct"]) for q in shared]
    return {"benchmark": ra["benchmark"], "a": str(a_path), "b": str(b_path),
            "a_protocol": ra["protocol"]["name"], "b_protocol": rb["protocol"]["name"],
            "n_shared": len(shared), "n_only_a": len(set(pa) - set(pb)), "n_only_b": len(set(pb) - set(pa)),
            "acc_a": sum(a) / len(a), "acc_b": sum(b) / len(b),
            "same_prediction": sum(pa[q].get("pred") == pb[q].get("pred") for q in shared) / len(shared),
            "mcnemar": mcnemar(a, b), "paired_bootstrap": paired_bootstrap(a, b, samples, seed)}


def report(c: dict) -> str:
    bs, mc = c["paired_bootstrap"], c["mcnemar"]
    verdict = "significant" if mc["p_value"] < 0.05 else "not significant"
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
