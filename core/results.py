"""The eval result contract: what `<run>/eval/<bench>.<protocol>.json` holds, written by eval/run.py
and read by leaderboard/ (and eval/compare.py). One module so the writer and the readers cannot
drift: the schema version, the protocol names, the subset labels, the required fields and the
checks. It imports no torch and no stage, so the leaderboard stays a reader of files.

A result that fails a check here is never written by eval (the check runs before the atomic write)
and is skipped by the leaderboard with a warning naming the file (an error with strict=1): a
half-filled file must never become a plausible-looking row.

    from core.results import check_result, load_result, result_file_names
    result = load_result("runs/sft/x/eval/cmmlu.base-5shot-logits.json")   # SchemaError names the file
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from core.errors import UserError

RESULT_SCHEMA_VERSION = 1
# The evaluation protocols (eval/protocols.py defines each one; its PROTOCOLS has exactly these names).
PROTOCOL_NAMES = ("base-5shot-logits", "chat-0shot-gen", "chat-0shot-cot", "steel-compat")
# "full" benchmark, our fixed "shared-split" of it, or the generated "builtin" demo benchmark.
SUBSETS = ("full", "shared-split", "builtin")
# Appended to the subset of a run limited to some subjects or questions: it stays off like-for-like tables.
PARTIAL = "+partial"
REQUIRED_FIELDS = ("schema_version", "benchmark", "benchmark_version", "split", "data_source",
                   "subset", "n_questions", "protocol", "model", "acc_micro", "acc_macro", "ci95", "date")
# The optional `context` field (eval/context.py; results written before it lack it): how many prompts
# were over the model's context and fitted, in total and per subject. Each over-long prompt counts once.
CONTEXT_COUNTS = ("prompts", "shots_reduced", "left_truncated")


class SchemaError(UserError, ValueError):
    """A result file or baseline entry that cannot be shown; the message names the file."""
    kind = "schema"


def result_file_names(benchmark: str, protocol: str) -> tuple[str, str]:
    """(`<bench>.<protocol>.json`, the name load_result checks against the content; the per-question
    `<bench>.<protocol>.predictions.jsonl` beside it, named in the result's `predictions` field)."""
    return f"{benchmark}.{protocol}.json", f"{benchmark}.{protocol}.predictions.jsonl"


def subset_label(subset: str, partial: bool) -> str:
    return subset + PARTIAL if partial else subset


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_result(obj, where: str, known_protocols=PROTOCOL_NAMES) -> dict:
    """Validate one parsed result; returns it unchanged or raises SchemaError("<where>: why")."""
    def bad(msg):
        raise SchemaError(f"{where}: {msg}")

    if not isinstance(obj, dict):
        bad("top level is not a JSON object")
    if "schema_version" in obj and obj["schema_version"] != RESULT_SCHEMA_VERSION:
        bad(f"schema_version {obj['schema_version']!r} is not the supported version {RESULT_SCHEMA_VERSION}")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        bad(f"missing field(s): {', '.join(missing)}")
    for k in ("benchmark", "split", "data_source", "date"):
        if not isinstance(obj[k], str) or not obj[k]:
            bad(f"field '{k}' must be a non-empty string, got {obj[k]!r}")
    if not isinstance(obj["subset"], str) or obj["subset"].removesuffix(PARTIAL) not in SUBSETS:
        bad(f"subset {obj['subset']!r} is not one of {', '.join(SUBSETS)} (optionally {PARTIAL})")
    if not is_int(obj["n_questions"]) or obj["n_questions"] <= 0:
        bad(f"n_questions must be a positive int, got {obj['n_questions']!r}")
    proto = obj["protocol"]
    if not isinstance(proto, dict) or "name" not in proto or "version" not in proto:
        bad("protocol must be an object with 'name' and 'version'")
    if proto["name"] not in known_protocols:
        bad(f"unknown protocol {proto['name']!r} (known: {', '.join(known_protocols)})")
    if not is_int(proto["version"]):
        bad(f"protocol.version must be an int, got {proto['version']!r}")
    model = obj["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not model["name"]:
        bad("model must be an object with a non-empty 'name'")
    if model.get("params") is not None and (not is_int(model["params"]) or model["params"] <= 0):
        bad(f"model.params must be a positive int or null, got {model['params']!r}")
    for k in ("acc_micro", "acc_macro"):
        if not is_number(obj[k]) or not 0.0 <= obj[k] <= 1.0:
            bad(f"{k} must be a fraction in [0, 1], got {obj[k]!r}")
    ci = obj["ci95"]
    if not isinstance(ci, dict) or "micro" not in ci:
        bad("ci95 must be an object with 'micro': [lo, hi]")
    for k, acc in (("micro", obj["acc_micro"]), ("macro", obj["acc_macro"])):
        if k not in ci:
            continue
        pair = ci[k]
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(is_number(x) for x in pair)
                or not 0.0 <= pair[0] <= acc + 1e-9 or not acc - 1e-9 <= pair[1] <= 1.0):
            bad(f"ci95.{k} must be [lo, hi] with 0 <= lo <= acc_{k} <= hi <= 1, got {pair!r}")
    if "context" in obj:
        _check_context(obj["context"], obj["n_questions"], bad)
    per_cat = obj.get("per_category") or {}
    if not isinstance(per_cat, dict) or any(
            not isinstance(v, dict) or not is_number(v.get("acc")) or not 0 <= v["acc"] <= 1 for v in per_cat.values()):
        bad("per_category must map category -> {acc: fraction, n: int}")
    return obj


def _check_context(ctx, n_questions: int, bad) -> None:
    """{"max_len": int, "prompts": n_questions, "shots_reduced": k, "left_truncated": m,
    "per_subject": {subject: {prompts, shots_reduced, left_truncated}}} with k + m <= prompts and
    the subjects adding up to the totals."""
    def counts_ok(c) -> bool:
        return (isinstance(c, dict) and all(is_int(c.get(k)) and c[k] >= 0 for k in CONTEXT_COUNTS)
                and c["shots_reduced"] + c["left_truncated"] <= c["prompts"])

    if not isinstance(ctx, dict) or not is_int(ctx.get("max_len")) or ctx["max_len"] <= 0:
        bad("context must be an object with a positive int 'max_len'")
    if not counts_ok(ctx):
        bad(f"context needs non-negative ints {', '.join(CONTEXT_COUNTS)} with shots_reduced + "
            f"left_truncated <= prompts, got {ctx!r}")
    if ctx["prompts"] != n_questions:
        bad(f"context.prompts {ctx['prompts']} is not n_questions {n_questions}")
    per = ctx.get("per_subject")
    if per is None:
        return
    if not isinstance(per, dict) or not all(counts_ok(c) for c in per.values()):
        bad("context.per_subject must map subject -> {prompts, shots_reduced, left_truncated}")
    for k in CONTEXT_COUNTS:
        if sum(c[k] for c in per.values()) != ctx[k]:
            bad(f"context.per_subject's {k} add up to {sum(c[k] for c in per.values())}, not {ctx[k]}")


def context_overflow(result: dict) -> tuple[int, int]:
    """(shots_reduced, left_truncated) of a checked result; (0, 0) for a result without `context`."""
    ctx = result.get("context") or {}
    return ctx.get("shots_reduced", 0), ctx.get("left_truncated", 0)


def load_result(path: str | Path, known_protocols=PROTOCOL_NAMES) -> dict:
    """Read and validate a result file; also checks the file name agrees with the content."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: cannot read: {e}") from None
    check_result(obj, str(path), known_protocols)
    # A renamed or copied file would otherwise land in the wrong table.
    bench, _, proto = path.name[:-len(".json")].partition(".")
    if proto and (bench != obj["benchmark"] or proto != obj["protocol"]["name"]):
        raise SchemaError(f"{path}: file name says {bench}/{proto} but the content says "
                          f"{obj['benchmark']}/{obj['protocol']['name']}")
    return obj


def load_predictions(path: str | Path, result: dict) -> dict[str, dict]:
    """{question id: line} of the per-question predictions file a checked result names (`predictions`,
    beside the result); the rows carry `gold`, `pred` and `correct` (what paired tests need)."""
    path = Path(path)
    pred = path.parent / str(result.get("predictions") or "")
    if not result.get("predictions") or not pred.is_file():
        raise SchemaError(f"{path}: its predictions file {pred} is missing")
    rows = {}
    for i, line in enumerate(pred.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise SchemaError(f"{pred}:{i}: invalid JSON: {e.msg}") from None
        if not isinstance(r, dict) or not {"id", "gold", "correct"} <= set(r):
            raise SchemaError(f"{pred}:{i}: a predictions line needs id, gold and correct")
        rows[r["id"]] = r
    return rows
