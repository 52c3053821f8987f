"""What a published baseline entry (leaderboard/baselines.yaml) must contain before the leaderboard
shows it: the source it was read from, how it was measured, and, for an entry claiming one of our
protocols, exactly what our own results record. Checked at load time and by a test. The result
files' contract is core/results.py (shared with eval/, which writes them).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from core.results import PROTOCOL_NAMES, SUBSETS, SchemaError, is_int, is_number

BASELINES_SCHEMA_VERSION = 1
_BASELINE_KEYS = {"model", "params_b", "train_tokens_b", "ceval", "cmmlu", "protocol", "protocol_version",
                  "subset", "protocol_note", "source", "checked", "notes"}


def check_baseline(entry, where: str, known_protocols=PROTOCOL_NAMES) -> dict:
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
        if entry[k] is not None and (not is_number(entry[k]) or entry[k] <= 0):
            bad(f"{k} must be a positive number or null, got {entry[k]!r}")
    for k in ("ceval", "cmmlu"):
        if entry[k] is not None and (not is_number(entry[k]) or not 0 <= entry[k] <= 100):
            bad(f"{k} must be a percentage in [0, 100] or null, got {entry[k]!r}")
    if entry["ceval"] is None and entry["cmmlu"] is None:
        bad("an entry needs at least one of ceval, cmmlu")
    proto = entry["protocol"]
    if proto in known_protocols:
        # Ranked with our runs, so it must say exactly what we would record.
        if not is_int(entry.get("protocol_version")) or entry.get("subset") not in SUBSETS:
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


def load_baselines(path: str | Path, known_protocols=PROTOCOL_NAMES) -> list[dict]:
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
