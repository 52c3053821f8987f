"""GRPO rewards (rl/rewards.py) on hand-written completions: correct, wrong, unparsable, format violations."""
from __future__ import annotations

import pytest

from rl.rewards import (answer_format, completion_text, final_number, get_rewards, mcq_correct, numeric_answer,
                        parse_number, zh_to_number)


def chat(text: str) -> list[dict]:
    """A completion as TRL passes it for conversational prompts."""
    return [{"role": "assistant", "content": text}]


def test_mcq_correct_on_correct_wrong_unparsable():
    comps = ["答案：B", "分析一下，C不对。\n答案：B", "答案：C", "我不知道", "答案是A和B", chat("故选B。")]
    got = mcq_correct(comps, answer=["B"] * 6, task=["mcq"] * 6)
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_mcq_correct_uses_option_text_and_skips_other_tasks():
    # Rule 4 of the extractor: the reply quotes exactly one option's text.
    got = mcq_correct(["应该是广州吧", "答案：38"], answer=["B", "38"], task=["mcq", "arith"],
                      choices=[["成都", "广州", "武汉", "长沙"], []])
    assert got == [1.0, None]


def test_answer_format_scores_and_violations():
    comps = ["答案：B", "想一想……\n答案：B", "答案：B\n还有一些废话", "答案：A 答案：B", "B", "答案：三十八", ""]
    got = answer_format(comps, task=["mcq"] * 5 + ["arith", "mcq"])
    assert got == [1.0, 1.0, 0.75, 0.75, 0.0, 1.0, 0.0]
    # A letter where a number is expected (and vice versa) is a format violation.
    assert answer_format(["答案：B", "答案：12"], task=["arith", "mcq"]) == [0.0, 0.0]


def test_numeric_answer_exact_partial_and_unparsable():
    comps = ["23+15=38\n答案：38", "答案：三十八", "答案：37", "答案：1000", "我算不出来", "一共有38个苹果。",
             chat("答案：38。"), "先算12，再算\n答案：３８"]
    got = numeric_answer(comps, answer=["38"] * 8, task=["arith"] * 8)
    assert got[0] == got[1] == got[5] == got[6] == got[7] == 1.0
    assert 0.1 < got[2] < 1.0 and got[3] == pytest.approx(0.1)   # near miss > far miss > nothing
    assert got[2] > got[3] > got[4] == 0.0
    assert numeric_answer(["答案：B"], answer=["B"], task=["mcq"]) == [None]


def test_numeric_answer_gives_different_rewards_within_a_group():
    # Equal rewards for a whole group give GRPO zero gradient: wrong answers must still be told apart.
    group = ["答案：40", "答案：45", "答案：90", "没有答案"]
    got = numeric_answer(group, answer=["41"] * 4, task=["arith"] * 4)
    assert len(set(got)) == 4


def test_number_parsing():
    assert parse_number("1,000") == 1000 and parse_number("-3/4") == -0.75 and parse_number("２５") == 25
    assert zh_to_number("一百零五") == 105 and zh_to_number("十二万三千") == 123000 and zh_to_number("两千") == 2000
    assert zh_to_number("abc") is None and parse_number("x") is None
    assert final_number("先得10，再加5，答案为15，检查：15") == 15
    assert final_number("结果是 7 个") == 7 and final_number("无") is None
    assert completion_text(None) == "" and completion_text(chat("答案：1")) == "答案：1"


def test_get_rewards_names():
    assert [f.__name__ for f in get_rewards(["answer_format", "mcq_correct"])] == ["answer_format", "mcq_correct"]
    with pytest.raises(ValueError, match="unknown reward"):
        get_rewards(["length_bonus"])
