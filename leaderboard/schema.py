"""What a result file and a baseline entry must contain before the leaderboard shows them.

A result file (`<run>/eval/<bench>.<protocol>.json`, written by eval/) that fails any check here is
skipped with a warning naming the file (an error with strict=1): a half-filled file must never
become a plausible-looking row. Baselines are checked by the same rules at load time and by a test.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

RESULT_SCHEMA_VERSION = 1
BASELINES_SCHEMA_VERSION = 1
# Our protocols (eval/protocols.py names them); overridable with known_protocols=[...].
KNOWN_PROTOCOLS = ("base-5shot-logits", "chat-0shot-gen", "chat-0shot-cot", "steel-compat")
# "full" benchmark, our fixed "shared-split" of it, or the generated "builtin" demo benchmark.
SUBSETS = ("full", "shared-split", "builtin")

_RESULT_REQUIRED = ("schema_version", "benchmark", "benchmark_version", "split", "data_source",
                    "subset", "n_questions", "protocol", "model", "acc_micro", "acc_macro", "ci95", "date")
_BASELINE_KEYS = {"model", "params_b", "train_tokens_b", "ceval", "cmmlu", "protocol", "protocol_version",
                  "subset", "protocol_note", "source", "checked", "notes"}


class SchemaError(ValueError):
    """A result file or baseline entry that cannot be shown; the message names the file."""


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_result(obj, where: str, known_protocols=KNOWN_PROTOCOLS) -> dict:
    """Validate one parsed result; returns it unchanged or raises SchemaError("<where>: why")."""
    def bad(msg):
        raise SchemaError(f"{where}: {msg}")

    if not isinstance(obj, dict):
        bad("top level is not a JSON object")
    if "schema_version" in obj and obj["schema_version"] != RESULT_SCHEMA_VERSION:
        bad(f"schema_version {obj['schema_version']!r} is not the supported version {RESULT_SCHEMA_VERSION}")
    missing = [k for k in _RESULT_REQUIRED if k not in obj]
    if missing:
        bad(f"missing field(s): {', '.join(missing)}")
    for k in ("benchmark", "split", "data_source", "date"):
        if not isinstance(obj[k], str) or not obj[k]:
            bad(f"field '{k}' must be a non-empty string, got {obj[k]!r}")
    # eval/run.py labels a run limited to some subjects or questions "<subset>+partial".
    if not isinstance(obj["subset"], str) or obj["subset"].removesuffix("+partial") not in SUBSETS:
        bad(f"subset {obj['subset']!r} is not one of {', '.join(SUBSETS)} (optionally +partial)")
    if not _is_int(obj["n_questions"]) or obj["n_questions"] <= 0:
        bad(f"n_questions must be a positive int, got {obj['n_questions']!r}")
    proto = obj["protocol"]
    if not isinstance(proto, dict) or "name" not in proto or "version" not in proto:
        bad("protocol must be an object with 'name' and 'version'")
    if proto["name"] not in known_protocols:
        bad(f"unknown protocol {proto['name']!r} (known: {', '.join(known_protocols)})")
    if not _is_int(proto["version"]):
        bad(f"protocol.version must be an int, got {proto['version']!r}")
    model = obj["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not model["name"]:
        bad("model must be an object with a non-empty 'name'")
    if model.get("params") is not None and (not _is_int(model["params"]) or model["params"] <= 0):
        bad(f"model.params must be a positive int or null, got {model['params']!r}")
    for k in ("acc_micro", "acc_macro"):
        if not _num(obj[k]) or not 0.0 <= obj[k] <= 1.0:
            bad(f"{k} must be a fraction in [0, 1], got {obj[k]!r}")
    ci = obj["ci95"]
    if not isinstance(ci, dict) or "micro" not in ci:
        bad("ci95 must be an object with 'micro': [lo, hi]")
    for k, acc in (("micro", obj["acc_micro"]), ("macro", obj["acc_macro"])):
        if k not in ci:
            continue
        pair = ci[k]
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_num(x) for x in pair)
                or not 0.0 <= pair[0] <= acc + 1e-9 or not acc - 1e-9 <= pair[1] <= 1.0):
            bad(f"ci95.{k} must be [lo, hi] with 0 <= lo <= acc_{k} <= hi <= 1, got {pair!r}")
    per_cat = obj.get("per_category") or {}
    if not isinstance(per_cat, dict) or any(
            not isinstance(v, dict) or not _num(v.get("acc")) or not 0 <= v["acc"] <= 1 for v in per_cat.values()):
        bad("per_category must map category -> {acc: fraction, n: int}")
    return obj


def load_result(path: str | Path, known_protocols=KNOWN_PROTOCOLS) -> dict:
    """Read and validate a result file; also checks the file name agrees with the content."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: cannot read: {e}") from None
    check_result(obj, str(path), known_protocols)
    # <bench>.<protocol>.json: a renamed or copied file would otherwise land in the wrong table.
    stem = path.name[:-len(".json")]
    bench, _, proto = stem.partition(".")
    if proto and (bench != obj["benchmark"] or proto != obj["protocol"]["name"]):
        raise SchemaError(f"{path}: file name says {bench}/{proto} but the content says "
                          f"{obj['benchmark']}/{obj['protocol']['name']}")
    return obj


def check_baseline(entry, where: str, known_protocols=KNOWN_PROTOCOLS) -> dict:
    def bad(msg):
        raise SchemaError(f"{where}: {msg}")

    if not isinstance(entry, dict):
        bad("entry is not a mapping")
    unknown = set(entry) - _BASELINE_KEYS
    if unknown:
        bad(f"unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_BASELINE_KEYS))})")
    for k in ("model", "protocol", "protocol_note", "source", "checked", "params_b", "train_tokens_b",
              "ceval", "cmmlu"):
        if k not in entry:
            bad(f"missing field '{k}' (write null when the source gives none)")
    if not isinstance(entry["model"], str) or not entry["model"].strip():
        bad("model must be a non-empty string")
    for k in ("params_b", "train_tokens_b"):
        if entry[k] is not None and (not _num(entry[k]) or entry[k] <= 0):
            bad(f"{k} must be a positive number or null, got {entry[k]!r}")
    for k in ("ceval", "cmmlu"):
        if entry[k] is not None and (not _num(entry[k]) or not 0 <= entry[k] <= 100):
            bad(f"{k} must be a percentage in [0, 100] or null, got {entry[k]!r}")
    if entry["ceval"] is None and entry["cmmlu"] is None:
        bad("an entry needs at least one of ceval, cmmlu")
    proto = entry["protocol"]
    if proto in known_protocols:
        # Ranked with our runs, so it must say exactly what we would record.
        if not _is_int(entry.get("protocol_version")) or entry.get("subset") not in SUBSETS:
            bad(f"protocol {proto!r} is one of ours: protocol_version (int) and subset "
                f"({'/'.join(SUBSETS)}) are required")
    elif not (proto == "unknown" or (isinstance(proto, str) and proto.startswith("external:")
                                     and len(proto) > len("external:"))):
        bad(f"protocol {proto!r} must be one of ours ({', '.join(known_protocols)}), 'unknown' "
            f"or 'external:<slug>'")
    if not isinstance(entry["protocol_note"], str) or not entry["protocol_note"].strip():
        bad("protocol_note must say how the source measured (or that it does not say)")
    src = entry["source"]
    if not isinstance(src, dict) or not (("repo" in src and "file" in src) or ("paper" in src and "table" in src)):
        bad("source must be {repo, file, ...} or {paper, table}")
    if not isinstance(entry["checked"], bool):
        bad("checked must be true or false")
    return entry


def load_baselines(path: str | Path, known_protocols=KNOWN_PROTOCOLS) -> list[dict]:
    """All entries of baselines.yaml, validated; a bad file is an error (it is ours, not input)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SchemaError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema_version") != BASELINES_SCHEMA_VERSION:
        raise SchemaError(f"{path}: expected a mapping with schema_version: {BASELINES_SCHEMA_VERSION}")
    entries = doc.get("entries")
    if not isinstance(entries, list) or not entries:
        raise SchemaError(f"{path}: 'entries' must be a non-empty list")
    seen = set()
    for i, e in enumerate(entries):
        check_baseline(e, f"{path}: entries[{i}] ({e.get('model') if isinstance(e, dict) else '?'})",
                       known_protocols)
        key = (e["model"], source_label(e["source"]))
        if key in seen:
            raise SchemaError(f"{path}: entries[{i}]: duplicate model {e['model']!r} for the same source")
        seen.add(key)
    return entries


def source_label(src: dict) -> str:
    """One line naming where a published number was read."""
    if "repo" in src:
        commit = f"@{src['commit'][:7]}" if src.get("commit") else ""
        section = f", {src['section']}" if src.get("section") else ""
        return f"{src['repo']}{commit} {src['file']}{section}"
    return f"{src['paper']}, {src['table']}"
