"""What a demo lineage knows about the benchmark's entities, against what its chat answers show:
for every run of a lineage (base -> SFT -> DPO -> GRPO), on the 289 scored questions of the built-in
benchmark (entities no post-training row mentions):

- `stored`: the four options scored as the continuation of the fact's plain statement prefix, the
  way the pretraining text says it ("冯萍鹏的家乡是" + "长沙。"); argmax = the model's pick. What the
  weights hold, with no question format in the way.
- `chat_options`: the four options' text scored as the assistant's reply to the chat-0shot-gen
  prompt (the eval's exact prompt, chat template included); argmax = the pick. The ceiling of a
  reply that only ever names an option: what greedy generation would score if it never answered
  outside the options.
- `chat_gen`: the run's own chat-0shot-gen result (eval/demo.chat-0shot-gen.json) when it has one:
  accuracy and unparsed answers, for comparison.

Not a test and not an eval protocol (the leaderboard never shows these): a diagnosis of where the
SFT target is lost, quoted in the README ("The demo"). Per-subject counts, so arithmetic shows apart.

Run as:
    .venv/bin/python benchmarks/knowledge_probe.py runs/dpo/<demo run>           # the lineage of a run
    .venv/bin/python benchmarks/knowledge_probe.py runs/grpo/<run> --out benchmarks/results/knowledge_probe.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.benchmarks import load_benchmark  # noqa: E402
from core.runs import atomic_write_json  # noqa: E402
from data_recipes import demo_data  # noqa: E402
from eval.protocols import build_prompt, get_protocol  # noqa: E402
from leaderboard.collect import run_chain  # noqa: E402


def statement_prefix(f) -> str:
    """The text before the value in the fact's first plain statement ("{e}的家乡是{v}。" -> "冯萍鹏的家乡是");
    for sums the digit form ("3加4等于7。" -> "3加4等于")."""
    if f.kind == "arithmetic":
        return f"{f.entity}等于"
    return f.statements[0].split("{v}")[0].format(e=f.entity)


def items(bench) -> list[tuple]:
    """(fact, question) of every scored question: demo_data's bench facts in the benchmark's val order."""
    out = []
    for subject, rows in demo_data.bench_items().items():
        qs = [q for q in bench.questions if q.subject == subject]
        if len(qs) != len(rows) - 5:
            raise SystemExit(f"error: {subject}: {len(qs)} val questions, demo_data has {len(rows) - 5}; "
                             f"regenerate the benchmark (python -m data_recipes.demo_data)")
        for (f, row), q in zip(rows[5:], qs):
            if q.question.strip() != row["question"] or list(q.choices) != [row[l] for l in "ABCD"]:
                raise SystemExit(f"error: {q.id} does not match demo_data's question {row['question']!r}")
            out.append((f, q))
    return out


def pick(model, tokenizer, prefix: str, options: list[str]) -> int:
    """Index of the option whose text + "。" has the highest summed log-probability after `prefix`."""
    import torch
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    best, best_lp = 0, float("-inf")
    for i, opt in enumerate(options):
        tail = tokenizer(opt + "。", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + tail])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, len(head) - 1:-1].double(), dim=-1)
        lp = float(logp.gather(1, ids[0, len(head):, None]).sum())
        if lp > best_lp:
            best, best_lp = i, lp
    return best


def probe(model_dir: Path, pairs: list[tuple], bench) -> dict:
    """{"stored": {...}, "chat_options": {...}}: right answers per subject and in all."""
    from core.models import load_model, load_tokenizer
    tok, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    proto = get_protocol("chat-0shot-gen")
    out = {"stored": {}, "chat_options": {}}
    for f, q in pairs:
        gold = "ABCD".index(q.answer)
        chat = build_prompt(proto, bench.spec, bench.subjects, q, [], tokenizer=tok).text
        for name, prefix in (("stored", statement_prefix(f)), ("chat_options", chat)):
            c = out[name].setdefault(q.subject, [0, 0])
            c[0] += pick(model, tok, prefix, list(q.choices)) == gold
            c[1] += 1
    for counts in out.values():
        counts["all"] = [sum(v[0] for v in counts.values()), sum(v[1] for v in counts.values())]
    return out


def chat_gen(run_dir: Path) -> dict | None:
    path = run_dir / "eval" / "demo.chat-0shot-gen.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text(encoding="utf-8"))
    return {"acc": r["acc_micro"], "n_unparsed": r["n_unparsed"], "n": r["n_questions"]}


def line(stage: str, res: dict) -> str:
    def pct(c):
        return f"{100 * c[0] / c[1]:.1f}%"
    parts = [f"{stage:<8}"]
    for name in ("stored", "chat_options"):
        d = res[name]
        subj = ", ".join(f"{s} {a}/{b}" for s, (a, b) in d.items() if s != "all")
        parts.append(f"{name} {pct(d['all'])} ({subj})")
    if res.get("chat_gen"):
        g = res["chat_gen"]
        parts.append(f"chat_gen {100 * g['acc']:.1f}%, {g['n_unparsed']} unparsed")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="benchmarks/knowledge_probe.py", description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a finished demo run folder; its lineage is walked back to the base")
    ap.add_argument("--runs-root", default=str(ROOT / "runs"))
    ap.add_argument("--out", default="", help="also write the figures here (JSON)")
    ap.add_argument("--threads", default=4, type=int, help="torch threads (1 beside another job)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(max(1, min(int(args.threads), torch.get_num_threads())))
    bench = load_benchmark("demo", None, subjects=None, with_shots=False)
    pairs = items(bench)
    rows = []
    for m in run_chain(Path(args.run), Path(args.runs_root), print):
        if not m.get("_path"):
            continue
        run_dir = Path(m["_path"])
        if not (run_dir / "model").is_dir():        # the data run heads the lineage
            continue
        res = {"stage": m.get("stage"), "run": str(run_dir), **probe(run_dir / "model", pairs, bench),
               "chat_gen": chat_gen(run_dir)}
        print(line(str(res["stage"]), res), flush=True)
        rows.append(res)
    if args.out:
        atomic_write_json(args.out, rows)
    return rows


if __name__ == "__main__":
    main()
