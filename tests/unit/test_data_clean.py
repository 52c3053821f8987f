"""Each cleaning operator, the chain's checks, and user operators registered by name."""
import pytest

from data_recipes import clean
from data_recipes.clean import Chain, OperatorError


def test_nfkc_folds_fullwidth_but_keeps_chinese_punctuation():
    assert clean.nfkc_normalize("ＡＢＣ１２３，你好！") == "ABC123，你好！"
    assert clean.nfkc_normalize("ＡＢ，", keep_fullwidth_punct=False) == "AB,"
    assert clean.nfkc_normalize("plain ascii") == "plain ascii"


def test_whitespace_normalize():
    text = "\ufeff 你好\u3000\u3000世界 \t！\u200b \r\n\r\n\r\n\r\n第二段  \n"
    assert clean.whitespace_normalize(text) == "你好 世界 ！\n\n第二段"
    assert clean.whitespace_normalize("a\n\n\n\nb", max_blank_lines=0) == "a\nb"


def test_traditional_to_simplified_builtin():
    assert clean.traditional_to_simplified("這是臺灣的學校，們說話。") == "这是台湾的学校，们说话。"
    simplified = "北京是中国的首都，著名的长城在这里。"
    assert clean.traditional_to_simplified(simplified) == simplified     # simplified text is untouched
    with pytest.raises(OperatorError):
        clean.traditional_to_simplified("體", backend="nope")


def test_length_filter():
    assert clean.length_filter("短", min_chars=2) == "1 chars < min_chars 2"
    assert clean.length_filter("长" * 11, max_chars=10).startswith("11 chars > max_chars")
    assert clean.length_filter("刚好", min_chars=2, max_chars=2) is None


def test_cjk_ratio_filter():
    assert clean.cjk_ratio("中文 ab") == pytest.approx(0.5)
    assert clean.cjk_ratio_filter("english only text", min_ratio=0.3).startswith("cjk ratio 0.00")
    assert clean.cjk_ratio_filter("这是中文，with a few words", min_ratio=0.2) is None


def test_repetition_filter_lines_and_ngrams():
    spam = "\n".join(["点击领取优惠券！"] * 10)
    assert "repeated line ratio 0.90" in clean.repetition_filter(spam)
    assert "10-gram" in clean.repetition_filter("广告" * 100, max_repeated_line_ratio=1.0)
    prose = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。床前明月光，疑是地上霜。"
    assert clean.repetition_filter(prose) is None
    assert clean.repeated_ngram_ratio("abcabcabc", 3) == pytest.approx(1 - 3 / 7)


def test_special_char_filter():
    assert clean.special_char_filter("@@@ ### $$$ %%% ^^^ &&&", max_ratio=0.25).startswith("special char ratio")
    assert clean.special_char_filter("他说：“你好！”（笑）——真的…", max_ratio=0.05) is None


def test_chain_applies_in_order_and_reports_the_rejecting_operator():
    chain = Chain([{"name": "nfkc_normalize"}, {"name": "traditional_to_simplified"},
                   {"name": "length_filter", "min_chars": 5}])
    text, op, reason, modified = chain("這是ＡＢ")
    assert (text, op) == ("这是AB", "length_filter") and "4 chars" in reason
    assert modified == ["nfkc_normalize", "traditional_to_simplified"]
    assert chain("這是一個句子。")[1] is None


def test_chain_rejects_unknown_operator_and_parameter():
    with pytest.raises(OperatorError, match="unknown operator 'nope'"):
        Chain([{"name": "nope"}])
    with pytest.raises(OperatorError, match=r"length_filter\): unknown parameter 'min_char'"):
        Chain([{"name": "length_filter", "min_char": 3}])


def test_user_operator_by_name():
    @clean.operator("test_no_digits", kind="filter")
    def no_digits(text, max_digits: int = 0):
        n = sum(c.isdigit() for c in text)
        return f"{n} digits" if n > max_digits else None
    try:
        chain = Chain([{"name": "test_no_digits", "max_digits": 1}])
        assert chain("第12章")[1:3] == ("test_no_digits", "2 digits")
        assert chain("第1章")[1] is None
    finally:
        clean.REGISTRY.pop("test_no_digits")
    with pytest.raises(OperatorError, match="cannot be imported"):
        clean.load_plugins(["no_such_module_xyz"])
