"""Prompt sets for GRPO with verifiable answers: multiple-choice questions and Chinese arithmetic
word problems. Each row is TRL's conversational prompt plus the columns rl/rewards.py reads:

    {"prompt": [{"role": "user", "content": ...}], "task": "mcq" | "arith", "answer": "B" | "38",
     "choices": [four option texts] | [], "source": name, "where": "file:line" | "generated:<i>"}

Sources:
- `read_mcq_file`: training-side exam questions, as alpaca rows whose instruction carries the
  options ("...\\nA. x\\nB. y\\nC. z\\nD. w", output "答案：B") or as rows with question/A/B/C/D/answer
  (WanJuan-style exam dumps converted to that shape).
- `bench_dev_mcq`: the `dev` rows of a benchmark (C-Eval/CMMLU/demo) via core.benchmarks. They are few-shot
  material and allowed; the scored split (val/test) is refused here, so it can never leak into RL.
- `arithmetic_problems`: generated Chinese word problems (add, subtract, multiply, divide, two-step)
  with integer answers, seeded and reproducible.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from core.errors import UserError
from data_recipes.preference import PreferenceDataError, expand_path, read_records
from data_recipes.sources import read_utf8

LETTERS = ("A", "B", "C", "D")
MCQ_SUFFIX = "\n请选出正确答案，最后一行写“答案：”加选项字母。"
ARITH_SUFFIX = "\n请一步一步计算，最后一行写“答案：”加得数。"
_OPTION = re.compile(r"^\s*([A-D])\s*[.．、:：)）]\s*(.*)$")
_KEY = re.compile(r"([A-D])")


class PromptDataError(UserError, ValueError):
    """An MCQ row or prompt source that cannot be used; the message names the file and line."""
    kind = "data"


def mcq_row(question: str, choices: list[str], answer: str, source: str, where: str) -> dict:
    options = "\n".join(f"{l}. {c}" for l, c in zip(LETTERS, choices))
    return {"prompt": [{"role": "user", "content": f"{question.strip()}\n{options}{MCQ_SUFFIX}"}],
            "task": "mcq", "answer": answer, "choices": list(choices), "source": source, "where": where}


def _parse_mcq(rec: dict) -> tuple[str, list[str], str]:
    if all(k in rec for k in ("question", "A", "B", "C", "D", "answer")):
        q, choices, ans = rec["question"], [str(rec[l]) for l in LETTERS], str(rec["answer"]).strip().upper()
    elif "instruction" in rec and "output" in rec:
        text = f"{rec['instruction']}\n{rec.get('input') or ''}".strip()
        q_lines, opts = [], {}
        for line in text.splitlines():
            m = _OPTION.match(line)
            if m and m.group(1) not in opts:
                opts[m.group(1)] = m.group(2).strip()
            elif not opts:
                q_lines.append(line)
        if sorted(opts) != list(LETTERS):
            raise PromptDataError(f"options A-D not found in the instruction (found {sorted(opts) or 'none'})")
        q, choices = "\n".join(q_lines), [opts[l] for l in LETTERS]
        out = str(rec["output"])
        m = re.search(r"答案\s*[:：是为]?\s*([A-D])", out) or (_KEY.fullmatch(out.strip()))
        ans = m.group(1) if m else ""
    else:
        raise PromptDataError("expected question/A/B/C/D/answer or alpaca instruction/output with options")
    if ans not in LETTERS:
        raise PromptDataError(f"answer {ans!r} is not one of A-D")
    if not q.strip():
        raise PromptDataError("empty question")
    return q, choices, ans


def read_mcq_file(path: str | Path, source: str = "") -> list[dict]:
    """MCQ rows of a .jsonl file (or a .json array); a bad row raises with file and line."""
    path = Path(path)
    source = source or path.stem
    if path.suffix == ".jsonl":
        parsed = []
        for i, line in enumerate(read_utf8(path, PromptDataError).splitlines(), 1):
            if line.strip():
                try:
                    parsed.append((f"{path}:{i}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise PromptDataError(f"{path}:{i}: invalid JSON ({e.msg})") from None
    else:
        try:
            parsed = read_records(path)          # a .json array: where = file:line: row N
        except PreferenceDataError as e:
            raise PromptDataError(str(e)) from None
    out = []
    for where, rec in parsed:
        try:
            if not isinstance(rec, dict):
                raise PromptDataError("a row must be a JSON object")
            q, choices, ans = _parse_mcq(rec)
        except PromptDataError as e:
            raise PromptDataError(f"{where}: {e}") from None
        out.append(mcq_row(q, choices, ans, source, where))
    return out


def bench_dev_mcq(spec: str, data_dir: str | Path | None = None, split: str = "dev") -> list[dict]:
    """`dev` rows of a benchmark spec (ceval | cmmlu | demo | path) as MCQ prompts. Any other split is refused:
    the scored split must never be trained on."""
    from core.benchmarks import load_questions, load_spec
    bench = load_spec(spec)
    if split != bench.shot_split or split == bench.split:
        raise PromptDataError(f"{bench.name}: only the few-shot split '{bench.shot_split}' may be used for RL prompts, "
                              f"not '{split}' (the scored split is '{bench.split}')")
    qs = load_questions(bench, data_dir, splits=(split,))
    if not qs:
        raise PromptDataError(f"{bench.name}: no {split} questions found in {data_dir or 'the built-in/hub copy'}")
    return [mcq_row(q.question, list(q.choices), q.answer, f"{bench.name}_{split}", q.id) for q in qs]


# ---- generated arithmetic ------------------------------------------------------------------------
NAMES = ["小明", "小红", "小华", "小刚", "小丽", "王叔叔", "李老师", "张阿姨", "小芳", "小军"]
ITEMS = [("苹果", "个"), ("铅笔", "支"), ("故事书", "本"), ("糖果", "颗"), ("气球", "个"), ("邮票", "张")]


def _problem(rng: random.Random, max_operand: int) -> tuple[str, int]:
    n1, n2 = rng.sample(NAMES, 2)
    item, unit = rng.choice(ITEMS)
    kind = rng.randrange(6)
    a, b = rng.randint(2, max_operand), rng.randint(2, max_operand)
    small = rng.randint(2, 9)
    if kind == 0:
        return f"{n1}有{a}{unit}{item}，又买了{b}{unit}。{n1}现在一共有多少{unit}{item}？", a + b
    if kind == 1:
        a, b = max(a, b), min(a, b)
        return f"{n1}有{a}{unit}{item}，送给{n2}{b}{unit}，{n1}还剩多少{unit}？", a - b
    if kind == 2:
        return f"每盒有{small}{unit}{item}，{n1}买了{b}盒，一共有多少{unit}{item}？", small * b
    if kind == 3:
        return f"{small * b}{unit}{item}平均分给{small}个小朋友，每人分到多少{unit}？", b
    if kind == 4:
        price = rng.randint(2, 9)
        money = price * small + rng.randint(0, max_operand)
        return f"{n1}带了{money}元，买了{small}{unit}{item}，每{unit}{price}元，还剩多少元？", money - price * small
    c = rng.randint(2, max_operand)
    return f"{n1}有{a}{unit}{item}，{n2}比{n1}多{c}{unit}。两人一共有多少{unit}{item}？", a + (a + c)


def arithmetic_problems(n: int, seed: int = 0, max_operand: int = 50) -> list[dict]:
    """`n` Chinese arithmetic word problems with integer answers (seeded; distinct problem texts)."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        text, ans = _problem(rng, max_operand)
        if text in seen:
            if len(seen) > 50 * max(n, 1):
                raise PromptDataError(f"cannot make {n} distinct problems with max_operand={max_operand}")
            continue
        seen.add(text)
        out.append({"prompt": [{"role": "user", "content": text + ARITH_SUFFIX}], "task": "arith",
                    "answer": str(ans), "choices": [], "source": "arithmetic_zh", "where": f"generated:{len(out)}"})
    return out


def build_prompts(mcq_files: list[str], bench_dev: list[str], arithmetic_n: int, seed: int = 0,
                  max_operand: int = 50, data_root: str | Path | None = None, max_prompts: int = 0) -> list[dict]:
    """All prompt sources together, shuffled with `seed` (so a short run sees both tasks).

    `bench_dev` entries are "spec" (built-in or hub copy) or "spec:dir" (a local copy, may use {data_root})."""
    rows: list[dict] = []
    for f in mcq_files:
        p = expand_path(f, data_root)
        if not p.is_file():
            raise PromptDataError(f"MCQ prompt file not found: {p}")
        rows += read_mcq_file(p)
    for entry in bench_dev:
        spec, _, d = entry.partition(":")
        rows += bench_dev_mcq(spec, expand_path(d, data_root) if d else None)
    rows += arithmetic_problems(arithmetic_n, seed=seed, max_operand=max_operand)
    random.Random(seed).shuffle(rows)
    if max_prompts and len(rows) > max_prompts:
        rows = rows[:max_prompts]
    if not rows:
        raise PromptDataError("no GRPO prompts: set prompts.mcq_files, prompts.bench_dev or prompts.arithmetic_n")
    return rows
