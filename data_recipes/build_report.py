"""The build's report.json tables and the short summary `make data` prints."""
from __future__ import annotations

from pathlib import Path


def operator_table(chain, p1) -> list[dict]:
    cur = sum(p["records"] for p in p1.per_input.values()) - sum(p1.errors.values())
    rows = []
    for name in chain.names + ["empty", "exact_dedupe", "near_dedupe"]:
        if name == "empty" and not p1.drops[name]:
            continue
        rows.append({"name": name, "docs_in": cur, "dropped": p1.drops[name], "modified": p1.modified.get(name, 0)})
        cur -= p1.drops[name]
    return rows


def print_summary(name: str, out: Path, report: dict, manifest: dict | None) -> None:
    r = report
    print(f"data {name}: {r['docs_in']:,} records in -> {r['docs_kept']:,} documents kept "
          f"({r['chars_kept']:,} of {r['chars_in']:,} chars)")
    if r["record_errors"]:
        print("  unreadable records (quarantined): " + ", ".join(f"{k} {v}" for k, v in r["record_errors"].items()))
    print(f"  {'operator':<28}{'in':>10}{'dropped':>10}{'modified':>10}")
    for row in r["operators"]:
        print(f"  {row['name']:<28}{row['docs_in']:>10,}{row['dropped']:>10,}{row['modified']:>10,}")
    for a, b in r["duplicate_files"]:
        print(f"  duplicate file: {a} == {b} ({r['duplicate_files_policy']})")
    for f in r["empty_files"]:
        print(f"  empty file: {f}")
    t = r.get("tokenizer", {})
    if t.get("ours", {}).get("tokens"):
        line = (f"  tokenizer ({t['source']}, vocab {t['vocab_size']:,}): {t['ours']['chars_per_token']:.2f} chars/token, "
                f"{t['ours']['bytes_per_token']:.2f} bytes/token on {t['heldout_docs']} held-out docs")
        base = t.get("gpt2_style_baseline")
        if base:
            line += (f"; GPT-2-style byte BPE, same vocab: {base['chars_per_token']:.2f} chars/token "
                     f"({t['token_ratio_baseline_over_ours']:.2f}x our token count)")
        print(line)
    if manifest:
        print(f"  tokens: {manifest['num_tokens']:,} in {len(manifest['shards'])} shard(s) ({manifest['dtype']}); "
              f"{r['seconds']:.1f}s with {r['num_workers']} worker(s)")
    print(f"  -> {out}  (quarantine.jsonl: every rejected record with operator and reason)")


def per_source(inputs, p1) -> dict:
    out: dict = {}
    for inp in inputs:
        s = out.setdefault(inp.source, {"inputs": 0, "records": 0, "kept": 0})
        s["inputs"] += 1
        s["records"] += p1.per_input[inp.index]["records"]
        s["kept"] += p1.per_input[inp.index]["kept"]
    return out
