"""GRPO reward values against the documented formulas computed by hand (closes mutmut survivors of
rl/rewards.py; the equivalent ones are in tests/mutation_equivalent.md)."""
import pytest

from rl.rewards import answer_format, completion_text, mcq_correct, numeric_answer, parse_number, zh_to_number


def near_miss(got: float, want: float) -> float:
    """The docstring's partial credit: 0.1 + 0.4 * max(0, 1 - |err| / max(|key|, 1))."""
    return 0.1 + 0.4 * max(0.0, 1.0 - abs(got - want) / max(abs(want), 1.0))


@pytest.mark.parametrize("got,want,reward", [
    ("0.000001", "0", 1.0),                     # |err| = 1e-6 * max(1, |key|): still exact
    ("0.0000015", "0", near_miss(1.5e-6, 0)),   # just past the tolerance
    ("1000.0005", "1000", 1.0),                 # the tolerance is relative for |key| > 1
    ("8", "10", near_miss(8, 10)),              # = 0.42
    ("1.5", "1", near_miss(1.5, 1)),            # = 0.30
    ("0.5", "0", near_miss(0.5, 0)),            # = 0.30
    ("-30", "10", 0.1),                         # far off: only the floor
])
def test_numeric_answer_values(got, want, reward):
    assert numeric_answer([f"答案：{got}"], [want], ["arith"]) == [pytest.approx(reward, abs=1e-12)]


def test_off_task_rows_keep_their_place():
    comps = ["答案：B", "答案：7", "答案：C", "答案：8"]
    tasks = ["mcq", "arith", "mcq", "arith"]
    answers = ["B", "7", "D", "7"]
    assert mcq_correct(comps, answers, tasks) == [1.0, None, 0.0, None]
    assert numeric_answer(comps, answers, tasks) == [None, 1.0, None, near_miss(8, 7)]
    assert numeric_answer(comps[1:], answers[1:], tasks[1:]) == [1.0, None, near_miss(8, 7)]


def test_unreadable_key_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'seven' is not a number"):
        numeric_answer(["答案：7"], ["seven"], ["arith"])


@pytest.mark.parametrize("letter", ["A", "B", "C", "D", "Ａ", "Ｂ", "Ｃ", "Ｄ"])
def test_answer_format_reads_every_letter_half_and_full_width(letter):
    assert answer_format([f"分析……\n答案：{letter}"], ["mcq"]) == [1.0]
    assert answer_format([f"答案：{letter}"], ["arith"]) == [0.0]      # a letter is not an arithmetic answer


def test_completion_text_joins_messages():
    msgs = [{"role": "assistant", "content": "答案："}, {"role": "assistant", "content": None},
            {"role": "assistant", "content": "C"}]
    assert completion_text(msgs) == "答案：C"
    assert completion_text([]) == "" and completion_text(None) == "" and completion_text(42) == ""


@pytest.mark.parametrize("token,value", [
    ("3.5.", 3.5), (".5", 0.5), ("3/1", 3.0), ("3/0", None), ("12X", None), ("1,000，", 1000.0), ("１２", 12.0),
])
def test_parse_number(token, value):
    assert parse_number(token) == value


@pytest.mark.parametrize("text,value", [("一千二百", 1200), ("十万", 100000), ("三十八万零五", 380005),
                                        ("两千", 2000), ("十二万三千", 123000)])
def test_zh_numbers(text, value):
    assert zh_to_number(text) == value
