"""SFT rows -> messages, exactly: every bad-row (kind, detail) a build report shows, the MCQ prompt
and reply texts written out by hand, sharegpt's system turn (closes mutmut survivors of
data_recipes/sft_formats.py; the equivalent ones are in tests/mutation_equivalent.md)."""
import pytest

from data_recipes import sft_formats as fmt
from data_recipes.sft_mix import SourceSpec

Q = {"question": "1+1=?", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "B"}
EXPL = "一加一等于二，所以是二。"


def run(fmt_name, *rows, **kw):
    return [(msgs, err) for _, msgs, err in
            fmt.normalise_rows([(f"f:{i}", r) for i, r in enumerate(rows)], SourceSpec(name="s", format=fmt_name, **kw))]


@pytest.mark.parametrize("fmt_name,row,kw,want", [
    ("alpaca", {"output": "答"}, {}, ("missing_fields", "no 'instruction'; row keys: ['output']")),
    ("alpaca", {"q": "问"}, {"fields": {"instruction": "q", "output": "a"}},
     ("missing_fields", "no 'a' (mapped from 'output'); row keys: ['q']")),
    ("alpaca", {"instruction": "问", **{f"k{i}": 1 for i in range(10)}}, {},
     ("missing_fields", "no 'output'; row keys: ['instruction', 'k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6']")),
    ("alpaca", {"instruction": 1, "output": "答"}, {}, ("bad_value", "instruction is int, expected a string")),
    ("alpaca", {"instruction": "问", "input": 5, "output": "答"}, {}, ("bad_value", "input is int, expected a string")),
    ("alpaca", {"instruction": "问", "output": 2}, {}, ("bad_value", "output is int, expected a string")),
    ("alpaca", {"instruction": "问", "output": "答", "system": 3}, {}, ("bad_value", "system is int, expected a string")),
    ("alpaca", {"instruction": "问", "output": "答", "history": [[1, "在的"]]}, {},
     ("bad_value", "history is int, expected a string")),
    ("alpaca", {"instruction": "问", "output": "答", "history": [["在吗", None]]}, {},
     ("bad_value", "history is NoneType, expected a string")),
    ("alpaca", {"instruction": "问", "output": "答", "history": ["在吗"]}, {},
     ("bad_value", "history entries must be [user, assistant] pairs")),
    ("alpaca", {"instruction": "问", "output": "答", "history": [["a", "b", "c"]]}, {},
     ("bad_value", "history entries must be [user, assistant] pairs")),
    ("sharegpt", {"conversations": "问答"}, {}, ("bad_value", "conversations is not a list")),
    ("sharegpt", {"conversations": ["hi"]}, {}, ("role_order", "unknown speaker 'hi'")),
    ("sharegpt", {"conversations": [{"from": "robot", "value": "x"}]}, {}, ("role_order", "unknown speaker 'robot'")),
    ("sharegpt", {"conversations": [{"from": "human", "value": 7}]}, {}, ("bad_value", "value is int, expected a string")),
    ("sharegpt", {"conversations": [{"from": "human", "value": "问"}, {"from": "gpt", "value": "答"}], "system": 1}, {},
     ("bad_value", "system is int, expected a string")),
    ("messages", {"messages": "问答"}, {}, ("bad_value", "messages is not a list")),
    ("messages", {"messages": [{"role": "user"}]}, {}, ("missing_fields", "a message without role/content")),
    ("messages", {"messages": [{"content": "问"}]}, {}, ("missing_fields", "a message without role/content")),
    ("messages", {"messages": ["问"]}, {}, ("missing_fields", "a message without role/content")),
    ("messages", {"messages": [{"role": "robot", "content": "x"}]}, {}, ("role_order", "unknown role 'robot'")),
    ("messages", {"messages": [{"role": "user", "content": 1}]}, {}, ("bad_value", "content is int, expected a string")),
    ("messages", {"messages": [{"role": "assistant", "content": "答"}, {"role": "user", "content": "问"}]}, {},
     ("role_order", "roles assistant/user (expected [system] user/assistant pairs ending with assistant)")),
    ("messages", {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": " "}]}, {},
     ("empty", "empty conversation or an empty turn")),
    ("prompt_response", {"prompt": 1, "response": "答"}, {}, ("bad_value", "prompt is int, expected a string")),
    ("prompt_response", {"prompt": "问", "response": 2}, {}, ("bad_value", "response is int, expected a string")),
    ("mcq", {**Q, "question": 1}, {}, ("bad_value", "question is int, expected a string")),
    ("mcq", {**Q, "C": 3}, {}, ("bad_value", "C is int, expected a string")),
    ("mcq", {**Q, "E": "5"}, {}, ("filtered:not_four_options", "a fifth option")),
    ("mcq", {**Q, "answer": "AB"}, {}, ("filtered:not_single_choice", "answer 'AB'")),
    ("mcq", {**Q, "answer": "。B"}, {}, ("filtered:not_single_choice", "answer '。B'")),
    ("mcq", {**Q, "answer": "BX"}, {}, ("filtered:not_single_choice", "answer 'BX'")),
    ("mcq", {**Q, "explanation": 5}, {"mcq_style": "cot"}, ("bad_value", "explanation is int, expected a string")),
    ("mcq", Q, {"mcq_style": "cot"}, ("filtered:no_explanation", "cot needs an explanation of >= 10 characters")),
    ("mcq", {**Q, "explanation": "一二三四五六七八九"}, {"mcq_style": "cot"},
     ("filtered:no_explanation", "cot needs an explanation of >= 10 characters")),
    ("mcq", [Q], {}, ("bad_value", "row is list, expected an object")),
])
def test_bad_rows_kind_and_detail(fmt_name, row, kw, want):
    assert run(fmt_name, row, **kw) == [(None, want)]


def test_a_bad_row_does_not_stop_the_next():
    good = {"prompt": "问", "response": "答"}
    out = run("prompt_response", {"prompt": "问"}, good)
    assert out[0][1][0] == "missing_fields" and out[1] == ([{"role": "user", "content": "问"},
                                                             {"role": "assistant", "content": "答"}], None)


def test_formats_called_directly_on_a_non_object():
    with pytest.raises(fmt.RowError) as e:
        fmt.alpaca(["x"], {})
    assert (e.value.kind, e.value.detail, str(e.value)) == ("missing_fields", "no 'instruction'; row keys: list",
                                                            "no 'instruction'; row keys: list")


def test_sharegpt_system_turn_and_long_conversations():
    conv = [{"from": f, "value": f"{f}{i}"} for i in range(4) for f in ("human", "gpt")]
    [(msgs, err)] = run("sharegpt", {"conversations": conv, "system": " 你是助手。 "})
    assert err is None and msgs[0] == {"role": "system", "content": "你是助手。"} and len(msgs) == 9
    assert msgs[1:] == [{"role": "user" if m["from"] == "human" else "assistant", "content": m["value"]} for m in conv]


def test_mcq_texts_written_out():
    [(plain, err)] = run("mcq", {**Q, "answer": " b。", "E": "  "})
    assert err is None and plain == [
        {"role": "user", "content": "请阅读这道选择题，从给出的选项里挑出正确的那一个。\n\n题目：1+1=?\n(A) 1\n(B) 2\n(C) 3\n(D) 4"},
        {"role": "assistant", "content": "正确答案是B。"}]
    [(cot, err)] = run("mcq", {**Q, "explanation": EXPL + "故选B。"}, mcq_style="cot")
    assert err is None and cot == [
        {"role": "user", "content": "请阅读这道选择题，先一步步分析，再说出哪一项正确。\n\n题目：1+1=?\n(A) 1\n(B) 2\n(C) 3\n(D) 4"},
        {"role": "assistant", "content": EXPL + "\n因此，正确答案是B。"}]
    [(ten, err)] = run("mcq", {**Q, "explanation": "一二三四五六七八九十"}, mcq_style="cot")
    assert err is None and ten[1]["content"] == "一二三四五六七八九十\n因此，正确答案是B。"


def test_check_template_without_any_template():
    with pytest.raises(fmt.TemplateError) as e:
        fmt.check_template(object())
    assert str(e.value) == ("the tokenizer's chat template has no {% generation %} tags, so assistant tokens "
                            "cannot be masked; use the template of data_recipes/tokenizer/")


def test_unknown_mcq_style():
    from core.config import ConfigError
    with pytest.raises(ConfigError) as e:
        fmt.mcq(Q, {}, "fancy")
    assert str(e.value) == "mcq_style must be plain or cot, got 'fancy'"
