"""GRPO prompt sets (data_recipes/rl_prompts.py): MCQ files, benchmark dev rows only, generated arithmetic."""
from __future__ import annotations

import json
import re

import pytest

from data_recipes.rl_prompts import (PromptDataError, arithmetic_problems, bench_dev_mcq, build_prompts,
                                     read_mcq_file)
from rl.rewards import numeric_answer


def solve(text: str) -> int:
    """An independent reading of each generated problem shape (not the generator's own arithmetic)."""
    n = [int(x) for x in re.findall(r"\d+", text)]
    if "平均分给" in text:
        return n[0] // n[1]
    if "每盒" in text:
        return n[0] * n[1]
    if "带了" in text:
        return n[0] - n[1] * n[2]
    if "送给" in text:
        return n[0] - n[1]
    if "比" in text:
        return n[0] + n[0] + n[1]
    return n[0] + n[1]


def test_arithmetic_problems_are_correct_distinct_and_seeded():
    rows = arithmetic_problems(200, seed=3, max_operand=30)
    texts = [r["prompt"][0]["content"] for r in rows]
    assert len(set(texts)) == 200
    assert all(int(r["answer"]) == solve(t.split("\n")[0]) for r, t in zip(rows, texts))
    assert all(int(r["answer"]) >= 0 and r["task"] == "arith" and r["choices"] == [] for r in rows)
    assert rows == arithmetic_problems(200, seed=3, max_operand=30)
    assert rows != arithmetic_problems(200, seed=4, max_operand=30)
    # The rows plug straight into the reward: the key itself scores 1.
    assert numeric_answer([f"答案：{r['answer']}" for r in rows[:5]], [r["answer"] for r in rows[:5]],
                          [r["task"] for r in rows[:5]]) == [1.0] * 5


def test_read_mcq_file_alpaca_and_columns(tmp_path):
    f = tmp_path / "exam.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"instruction": "河南省的省会是____。\nA. 济南\nB. 郑州\nC. 成都\nD. 兰州", "input": "", "output": "答案：B"},
        {"question": "1加1等于几？", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "b"},
    ]) + "\n", encoding="utf-8")
    rows = read_mcq_file(f)
    assert [r["answer"] for r in rows] == ["B", "B"]
    assert rows[0]["choices"] == ["济南", "郑州", "成都", "兰州"] and rows[0]["where"] == f"{f}:1"
    assert "河南省的省会是____。\nA. 济南" in rows[0]["prompt"][0]["content"]
    f.write_text(json.dumps({"instruction": "没有选项的问题", "output": "答案：A"}, ensure_ascii=False) + "\n")
    with pytest.raises(PromptDataError, match=rf"{f}:1: options A-D not found"):
        read_mcq_file(f)


def test_bench_dev_rows_only_never_the_scored_split():
    rows = bench_dev_mcq("demo")
    assert rows and all("/dev/" in r["where"] and r["source"] == "demo_dev" for r in rows)
    with pytest.raises(PromptDataError, match="only the few-shot split 'dev'"):
        bench_dev_mcq("demo", split="val")


def test_build_prompts_mixes_and_shuffles():
    rows = build_prompts(["data_recipes/demo/grpo/train_mcq.jsonl"], ["demo"], arithmetic_n=10, seed=1)
    tasks = {r["task"] for r in rows}
    assert tasks == {"mcq", "arith"}
    assert len(rows) == 269 + 20 + 10   # the demo's GRPO training MCQs, its dev rows, generated problems
    assert len({r["source"] for r in rows[:10]}) > 1       # shuffled: a short run sees every source
    with pytest.raises(PromptDataError, match="not found"):
        build_prompts(["nope.jsonl"], [], 0)
