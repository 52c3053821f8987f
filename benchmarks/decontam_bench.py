"""Decontamination benchmark: recall on planted benchmark items, false positives on clean SFT rows,
and throughput (rows/s) of the current matcher against the single-process baseline, in one run.

Recall: every C-Eval/CMMLU item in ../shared/data (all splits; or `--items` drawn with the seed) is
planted as an SFT row (user turn + a short answer) in every kind: `verbatim` (question, then A-D on
their own lines), `punct_ws` (punctuation and letters switched between full and half width, spaces
added and removed except inside latin words, options on one line, another label style, the blank
written another way),
`reordered` (options shuffled and relabelled A-D), `embedded` (the verbatim item inside a longer
instruction with text from a clean row before and after, and a long answer), and `reordered_punct`
(both at once; informative, no target). A planted row counts as caught when its own item is among
the hits. Items the matcher skips as too short count as misses.
False positives: every row of the zh_mix_small recipe (the clean SFT files in ../shared/data/sft:
alpaca_zh_demo, belle, ruozhiba, identity) that is flagged; they are listed for inspection.
Targets: >= 95% recall on each of the four kinds, <= 0.5% false positives.

Throughput: proxy rows in the shape of the full zh_mix (data_recipes/sft_mixes/zh_mix.yaml), whose
sources are not in ../shared/data: multi-turn conversations for Infinity-Instruct, MCQ rows (plain,
and with an explanation) for WanJuan, built from the clean SFT rows; rows of each shape in the
proportion of the mix. The same rows go through the baseline (data_recipes/decontam.py as of
commit BASELINE_COMMIT, read with `git show`: one process, one text at a time) and the current code
with 1 process and with --workers processes (pool start-up included). Minutes for the full mix =
its row count (the recipe's caps x weights; identity from its templates) / rows per second (and
per CPU second: on a shared machine the wall time depends on the other jobs); the
proxy's mean characters per row are recorded, and chars/s with it, to rescale for real rows. A
proxy conversation averages --conv-chars (1,000) characters: a 3.46M-row copy of Infinity-Instruct
(jrahn/Infinity-Instruct) holds 7.43 GB of text, ~2,150 bytes a row, i.e. ~700 characters of
Chinese (3 bytes each) to ~2,000 of English.
Index build time is reported apart. Not a test: the figures are not asserted.

Run as:
    .venv/bin/python benchmarks/decontam_bench.py          # writes benchmarks/results/decontam.json
    .venv/bin/python benchmarks/decontam_bench.py --items 500 --proxy-rows 4000   # quicker
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.errors import UserError, entrypoint  # noqa: E402
from core.runs import atomic_write_json, shared_data_root  # noqa: E402
from data_recipes import decontam, identity, sft_mix  # noqa: E402

BASELINE_COMMIT = "1afa983"      # the n-gram matcher over question + options as one text (issue 15)
KINDS = ("verbatim", "punct_ws", "reordered", "embedded", "reordered_punct")
TARGET_KINDS = KINDS[:4]
LETTERS = "ABCD"
LABEL_STYLES = ("{L}. {o}", "({L}){o}", "{L}、{o}", "{L}：{o}", "{L}) {o}", "（{L}）{o}", "{W}．{o}")
_WIDE = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}   # ASCII -> full width
_NARROW = {v: k for k, v in _WIDE.items()} | {"、": ",", "。": "."}


def load_baseline():
    """data_recipes/decontam.py at BASELINE_COMMIT as a module, or None without git history."""
    try:
        src = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:data_recipes/decontam.py"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("decontam_baseline")
    sys.modules[mod.__name__] = mod                 # dataclasses look their module up there
    exec(compile(src, f"decontam@{BASELINE_COMMIT}", "exec"), mod.__dict__)
    return mod


# ---- planting -----------------------------------------------------------------------------------------
def layout(q: str, opts: list[str], style: str = "{L}. {o}", sep: str = "\n") -> str:
    lines = [style.format(L=LETTERS[i], W=_WIDE[LETTERS[i]], o=o) for i, o in enumerate(opts)]
    return q + sep + sep.join(lines)


def reword(text: str, rng: random.Random) -> str:
    """Punctuation, letters and digits switched to full width (or back), spaces removed and added,
    blanks rewritten. Spaces between two latin letters/digits stay as they are: removing or adding one
    there would change a word, not the layout."""
    table = _WIDE if rng.random() < 0.5 else _NARROW
    text = text.replace("____", rng.choice(["（ ）", "(  )", "___", "（　　）"]))
    word = lambda c: c.isascii() and c.isalnum()  # noqa: E731
    out = []
    for i, ch in enumerate(text):
        inside = 0 < i < len(text) - 1 and word(text[i - 1]) and word(text[i + 1])
        if ch == " " and not inside:
            continue
        out.append(table.get(ch, ch) if rng.random() < 0.8 else ch)
        if i < len(text) - 1 and not (word(ch) and word(text[i + 1])) and rng.random() < 0.08:
            out.append(rng.choice([" ", "  ", "\u3000"]))
    return "".join(out)


def plant(kind: str, it, rng: random.Random, filler: list[str]) -> str:
    q, opts = it.question, list(it.options)
    answer = f"答案：{rng.choice(LETTERS)}"
    if kind in ("reordered", "reordered_punct"):
        order = list(range(len(opts)))
        while order == sorted(order) and len(set(opts)) > 1:
            rng.shuffle(order)
        opts = [opts[i] for i in order]
    if kind == "verbatim" or kind == "reordered":
        return f"{layout(q, opts)}\n{answer}"
    if kind in ("punct_ws", "reordered_punct"):
        text = layout(reword(q, rng), [reword(o, rng) for o in opts], rng.choice(LABEL_STYLES),
                      rng.choice([" ", "；", "\n", "  "]))
        return f"{text}\n{answer}"
    before, after, explain = rng.sample(filler, 3)
    return (f"{before}\n下面是一道练习题，请先逐一分析每个选项，再给出正确答案，并说明理由。\n{layout(q, opts)}\n"
            f"要求：先写分析，最后单独一行写出答案。{after}\n{explain}\n{answer}")


def recall(decon, items, kinds, n_items: int, seed: int, filler: list[str]) -> dict:
    rng = random.Random(seed)
    sample = rng.sample(range(len(items)), min(n_items or len(items), len(items)))
    out = {}
    for kind in kinds:
        krng = random.Random(f"{seed}:{kind}")
        caught, missed = 0, []
        for idx in sample:
            text = plant(kind, items[idx], krng, filler)
            if any(h.id == items[idx].id and h.benchmark == items[idx].benchmark for h in decon.check(text)):
                caught += 1
            elif len(missed) < 5:
                missed.append({"id": f"{items[idx].benchmark}:{items[idx].id}", "text": text[:160]})
        out[kind] = {"n": len(sample), "caught": caught, "recall": round(caught / len(sample), 4),
                     "first_missed": missed}
    return out


def false_positives(decon, rows: list[tuple[str, str, str]]) -> dict:
    flagged = []
    for source, where, text in rows:
        hits = decon.check(text)
        if hits:
            flagged.append({"where": where, "text": text[:160], "id": f"{hits[0].benchmark}:{hits[0].id}",
                            "question": hits[0].question[:120], "score": hits[0].score})
    return {"n": len(rows), "flagged": len(flagged), "rate": round(len(flagged) / len(rows), 5),
            "rows": flagged[:20]}


# ---- throughput ------------------------------------------------------------------------------------------
def mix_rows() -> dict[str, int]:
    """Rows of the full zh_mix per source: caps x weight (file rows x weight when uncapped)."""
    recipe = sft_mix.load_recipe("zh_mix")
    rows = {}
    for s in recipe.sources:
        if s.format == "identity":
            n = len(identity.identity_conversations(recipe.identity.name, recipe.identity.author,
                                                    recipe.identity.langs, seed=recipe.seed))
        elif s.max_samples:
            n = s.max_samples
        else:
            n = 1475      # ruozhiba_qa.json in ../shared/data/sft
        rows[s.name] = round(n * s.weight)
    return rows


def proxy_rows(clean: list[tuple[str, str, str]], counts: dict[str, int], n_rows: int, seed: int,
               conv_chars: int) -> list[str]:
    """Clean text in the shapes of the mix's sources, in the mix's proportions. A conversation joins
    clean rows up to a length drawn from [0.5, 1.5] x conv_chars."""
    rng = random.Random(seed)
    texts = [t for _, _, t in clean]
    total = sum(counts.values())
    out = []
    for name, n in counts.items():
        for _ in range(max(1, round(n_rows * n / total))):
            if name == "infinity_instruct":       # a multi-turn conversation
                turns, goal = [], rng.uniform(0.5, 1.5) * conv_chars
                while sum(map(len, turns)) < goal:
                    turns.append(rng.choice(texts))
                out.append("\n".join(turns))
            elif name.startswith("wanjuan"):      # an exam MCQ made of clean text, + explanation for cot
                q, *opts = rng.sample(texts, 5)
                mcq = layout(q[:120], [o[:30] for o in opts]) + f"\n答案：{rng.choice(LETTERS)}"
                out.append(mcq + ("\n" + rng.choice(texts) if name.endswith("cot") else ""))
            else:
                out.append(rng.choice(texts))
    rng.shuffle(out)
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers): on a shared machine
    wall time depends on the other jobs, CPU time much less."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def rate(fn, texts: list[str]) -> dict:
    t0, c0 = time.perf_counter(), _cpu_seconds()
    keep, report = fn([("proxy", str(i), t) for i, t in enumerate(texts)])
    dt, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {"seconds": round(dt, 2), "cpu_seconds": round(cpu, 2), "rows_per_s": round(len(texts) / dt, 1),
            "rows_per_cpu_s": round(len(texts) / cpu, 1), "chars_per_s": round(sum(map(len, texts)) / dt),
            "flagged": report["n_flagged"]}


def throughput(new, old, texts: list[str], workers: int, full_rows: int) -> dict:
    runs = {}
    if old is not None:
        runs["baseline_1_process"] = rate(lambda r: old[0].decontaminate(r, old[1]), texts)
    runs["current_1_process"] = rate(lambda r: decontam.decontaminate(r, new, workers=1), texts)
    runs[f"current_{workers}_processes"] = rate(lambda r: decontam.decontaminate(r, new, workers=workers), texts)
    for r in runs.values():
        r["full_mix_minutes"] = round(full_rows / r["rows_per_s"] / 60, 1)
        r["full_mix_cpu_minutes"] = round(full_rows / r["rows_per_cpu_s"] / 60, 1)   # all processes together
    base = runs.get("baseline_1_process")
    for name, r in runs.items():
        if base and name != "baseline_1_process":
            r["speedup_vs_baseline"] = round(r["rows_per_s"] / base["rows_per_s"], 2)
    return runs


@entrypoint
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=0, help="benchmark items planted per kind (0: every item)")
    ap.add_argument("--proxy-rows", type=int, default=20000, help="rows timed for throughput")
    ap.add_argument("--conv-chars", type=int, default=1000,
                    help="mean characters of a proxy Infinity-Instruct conversation (see the docstring)")
    ap.add_argument("--workers", type=int, default=decontam.auto_workers(10**9), help="processes (default: all CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "decontam.json"))
    args = ap.parse_args(argv)
    root = shared_data_root()
    if not (root / "ceval").is_dir() or not (root / "cmmlu").is_dir() or not (root / "sft").is_dir():
        raise UserError(f"needs ceval/, cmmlu/ and sft/ under {root} (set ZHLLM_SHARED_DATA)")
    benches = {"ceval": root / "ceval", "cmmlu": root / "cmmlu"}
    t0 = time.perf_counter()
    new = decontam.Decontaminator.from_benchmarks(benches)
    build_new = time.perf_counter() - t0
    base_mod = load_baseline()
    old, build_old = None, None
    if base_mod is not None:
        t0 = time.perf_counter()
        old = base_mod.Decontaminator.from_benchmarks(benches)
        build_old = time.perf_counter() - t0
    mix = sft_mix.load_mix(sft_mix.load_recipe("zh_mix_small"))
    clean = [(e.source, e.where, e.text()) for e in mix.examples]
    filler = [t for _, _, t in clean if len(t) >= 60]
    print(f"{len(new.items)} benchmark items ({new.n_skipped_short} too short); {len(clean)} clean rows")

    result = {"cpus": decontam.auto_workers(10**9), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
              "items_per_kind": args.items, "seed": args.seed, "n_benchmark_items": len(new.items),
              "n_items_skipped_short": new.n_skipped_short, "method": decontam.METHOD,
              "threshold": new.threshold, "ngram_tokens": new.n, "baseline": f"git {BASELINE_COMMIT}",
              "targets": {"recall_each_kind": 0.95, "false_positive_rate": 0.005, "kinds": list(TARGET_KINDS)}}
    result["recall"] = recall(new, new.items, KINDS, args.items, args.seed, filler)
    result["false_positives"] = false_positives(new, clean)
    if old is not None:
        result["baseline_recall"] = {k: v["recall"] for k, v in
                                     recall(old, old.items, KINDS, args.items, args.seed, filler).items()}
        result["baseline_false_positives"] = {k: v for k, v in false_positives(old, clean).items() if k != "rows"}
    result["meets_targets"] = (all(result["recall"][k]["recall"] >= 0.95 for k in TARGET_KINDS)
                               and result["false_positives"]["rate"] <= 0.005)
    for k, v in result["recall"].items():
        base = result.get("baseline_recall", {}).get(k, float("nan"))
        print(f"recall {k:16s} {v['recall']:.3f}  baseline {base:.3f}")
    print(f"false positives {result['false_positives']['flagged']} of {len(clean)}")

    counts = mix_rows()
    texts = proxy_rows(clean, counts, args.proxy_rows, args.seed, args.conv_chars)
    full = sum(counts.values())
    result["throughput"] = {
        "full_mix_rows": counts, "full_mix_rows_total": full, "proxy_rows": len(texts),
        "proxy_mean_chars": round(sum(map(len, texts)) / len(texts), 1), "proxy_conv_chars": args.conv_chars,
        "workers": args.workers,
        "index_build_seconds": {"baseline": build_old and round(build_old, 2), "current": round(build_new, 2)},
        "runs": throughput(new, (base_mod, old) if old else None, texts, args.workers, full)}
    for name, r in result["throughput"]["runs"].items():
        print(f"{name:24s} {r['rows_per_s']:9.1f} rows/s ({r['rows_per_cpu_s']:9.1f} per CPU s)  full zh_mix "
              f"{r['full_mix_minutes']:6.1f} min ({r['full_mix_cpu_minutes']:6.1f} CPU min)  "
              f"{r.get('speedup_vs_baseline', '')}")
    result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]   # other jobs skew the rows/s
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
