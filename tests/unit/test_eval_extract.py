"""Answer extraction (eval/extract.py) and Steel-LLM's forced-choice extraction (eval/steel.py)."""
import pytest

from eval.extract import extract_choice
from eval.steel import extract_cmmlu, extract_qwen_ceval, user_message

CASES = [
    ("答案是C", "C"), ("答案：B", "B"), ("答案: D", "D"), ("选 B。", "B"), ("故选D", "D"), ("所以选A。", "A"),
    ("正确答案为（A）", "A"), ("正确选项是 C", "C"), ("答案应该是 D 。", "D"), ("我选择A", "A"),
    ("选项B正确", "B"), ("C项正确", "C"), ("B", "B"), ("(C)", "C"), ("【A】", "A"), ("Ｂ", "B"),
    ("B. 广州", "B"), ("D：因为三加四等于七", "D"), ("The answer is (B).", "B"), ("Answer: C", "C"),
    ("I would choose D", "D"), ("The correct option is A", "A"), ("A cat sat here. The answer is B", "B"),
    # chain of thought: the last marker wins
    ("分析：A错误，B错误，C正确。所以答案是C。", "C"), ("答案可能是A，但仔细想想，最终答案是B", "B"),
    # several letters / nothing readable -> None, never a guess
    ("答案是AB", None), ("A和B都对", None), ("广州", None), ("", None), ("无法确定", None), ("ＢB", None),
    ("A cat and a dog", None),
]


@pytest.mark.parametrize("text,want", CASES)
def test_extract_choice(text, want):
    assert extract_choice(text) == want


def test_full_option_text_needs_choices():
    choices = ["南宁", "台北", "广州", "西安"]
    assert extract_choice("广东的省会是广州", choices) == "C"
    assert extract_choice("广东的省会是广州") is None
    # one option contained in another: the longer text wins; two equally long hits are ambiguous
    assert extract_choice("等于120", ["12", "120", "7", "8"]) == "B"
    assert extract_choice("不是南宁就是广州", choices) is None


def test_steel_cmmlu_random_fallback_is_seeded_and_labelled():
    a = extract_cmmlu("我不知道", seed=1234, qid="x/test/1")
    b = extract_cmmlu("我不知道", seed=1234, qid="x/test/1")
    assert a == b and a[1] == "random" and a[0] in "ABCD"
    letters = {extract_cmmlu("我不知道", seed=1234, qid=f"x/test/{i}")[0] for i in range(40)}
    assert len(letters) > 1            # a real random letter, not a constant
    assert extract_cmmlu("答案是：C", 0, "q") == ("C", None)
    assert extract_cmmlu("B选项正确", 0, "q") == ("B", None)
    assert extract_cmmlu("D", 0, "q") == ("D", None)


def test_steel_ceval_option_text_and_closest_fallback():
    q = "广东省的省会是____。"
    ch = ("南宁", "台北", "广州", "西安")
    assert extract_qwen_ceval("应该选A选项。", q, ch) == ("A", None)
    assert extract_qwen_ceval("广东省的省会是广州。", q, ch)[0] == "C"
    assert extract_qwen_ceval("广州市", q, ch) == ("C", None)      # option text replaced by its letter
    letter, fb = extract_qwen_ceval("不晓得", q, ch)
    assert fb == "closest" and letter in "ABCD"


def test_steel_prompt_rewrites_blank():
    assert user_message("省会是____。", ("a", "b", "c", "d"), ["____。", "( )"]) == \
        "以下是一道单选题:\n省会是( )\n\nA. a\nB. b\nC. c\nD. d\n请给出答案。\n"
    assert "____" not in user_message("省会是____", ("a", "b", "c", "d"), ["____", ""])
