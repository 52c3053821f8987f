"""Each SFT format normaliser, the bad-row kinds, and our MCQ wording versus the eval prompts."""
import pytest

from data_recipes import sft_formats as fmt
from data_recipes.sft_mix import SourceSpec


def _one(fmt_name, row, **kw):
    [(where, msgs, err)] = list(fmt.normalise_rows([("f.jsonl:7", row)], SourceSpec(name="s", format=fmt_name, **kw)))
    assert where == "f.jsonl:7"
    return msgs, err


def test_alpaca_with_input_system_and_history():
    msgs, err = _one("alpaca", {"instruction": "翻译成英文", "input": "你好", "output": "Hello",
                                "system": "你是翻译。", "history": [["在吗", "在的"]]})
    assert err is None
    assert msgs == [{"role": "system", "content": "你是翻译。"}, {"role": "user", "content": "在吗"},
                    {"role": "assistant", "content": "在的"}, {"role": "user", "content": "翻译成英文\n你好"},
                    {"role": "assistant", "content": "Hello"}]
    msgs, _ = _one("alpaca", {"instruction": "只有问题", "output": "只有回答"})  # ruozhiba has no input
    assert msgs == [{"role": "user", "content": "只有问题"}, {"role": "assistant", "content": "只有回答"}]


def test_sharegpt_messages_prompt_response():
    msgs, err = _one("sharegpt", {"conversations": [{"from": "human", "value": "问"}, {"from": "gpt", "value": "答"},
                                                    {"from": "human", "value": "再问"}, {"from": "gpt", "value": "再答"}]})
    assert err is None and [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    msgs, err = _one("messages", {"messages": [{"role": "system", "content": "系统"}, {"role": "user", "content": "问"},
                                               {"role": "assistant", "content": "答"}]})
    assert err is None and msgs[0] == {"role": "system", "content": "系统"}
    msgs, err = _one("prompt_response", {"q": "问", "a": "答"}, fields={"prompt": "q", "response": "a"})
    assert err is None and msgs == [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]


def test_mcq_plain_and_cot_with_wanjuan_fields():
    fields = {"question": "q_main", "A": "option_a", "B": "option_b", "C": "option_c", "D": "option_d",
              "E": "option_e", "answer": "std_ans", "explanation": "answer_detail"}
    row = {"q_main": "水的化学式是( )", "option_a": "H2O", "option_b": "CO2", "option_c": "O2", "option_d": "NaCl",
           "option_e": "", "std_ans": "A", "answer_detail": "水由氢和氧组成，一个水分子含两个氢原子。故选A。"}
    plain, err = _one("mcq", row, fields=fields, mcq_style="plain")
    assert err is None
    assert "(A) H2O\n(B) CO2" in plain[0]["content"] and plain[1]["content"] == "正确答案是A。"
    cot, err = _one("mcq", row, fields=fields, mcq_style="cot")
    assert err is None and cot[1]["content"].startswith("水由氢和氧组成") and "故选" not in cot[1]["content"]
    assert cot[1]["content"].endswith("正确答案是A。")
    _, err = _one("mcq", {**row, "std_ans": "AB"}, fields=fields)
    assert err[0] == "filtered:not_single_choice"
    _, err = _one("mcq", {**row, "answer_detail": "略"}, fields=fields, mcq_style="cot")
    assert err[0] == "filtered:no_explanation"


@pytest.mark.parametrize("fmt_name,row,kind", [
    ("alpaca", {"instruction": "问"}, "missing_fields"),
    ("alpaca", {"instruction": "  ", "output": "答"}, "missing_fields"),
    ("messages", {"messages": []}, "empty"),
    ("messages", {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": ""}]}, "empty"),
    ("messages", {"messages": [{"role": "assistant", "content": "答"}, {"role": "user", "content": "问"}]}, "role_order"),
    ("messages", {"messages": [{"role": "user", "content": "问"}, {"role": "user", "content": "再问"},
                               {"role": "assistant", "content": "答"}]}, "role_order"),
    ("messages", {"messages": [{"role": "user", "content": "问"}]}, "role_order"),
    ("sharegpt", {"conversations": [{"from": "alien", "value": "x"}]}, "role_order"),
    ("alpaca", ["not", "an", "object"], "bad_value"),
])
def test_bad_rows_are_classified(fmt_name, row, kind):
    msgs, err = _one(fmt_name, row)
    assert msgs is None and err[0] == kind


def _ngrams(s, n=6):
    return {s[i:i + n] for i in range(len(s) - n + 1)}


def test_mcq_prompts_differ_from_eval_prompts():
    """Steel-LLM's SFT MCQ prompt was its eval prompt; ours share no 6-character run with any eval prompt."""
    protocols = pytest.importorskip("eval.protocols")
    from core.benchmarks import Question, load_spec
    spec = load_spec("demo")
    q = Question("geography", "Social Science", "geography/val/0", "QQQ", ("W", "X", "Y", "Z"), "A", "val")
    names = {"subject_zh": "地理", "subject_en": "Geography"}
    eval_texts = [spec.instruction.format(**names) + spec.answer_prefix]
    for name in ("chat-0shot-gen", "chat-0shot-cot", "steel-compat"):
        proto = protocols.PROTOCOLS[name] if hasattr(protocols, "PROTOCOLS") else name
        eval_texts += [m["content"] for m in protocols.chat_messages(proto, spec, names, q)]
    ours = [fmt.MCQ_PLAIN_PROMPT, fmt.MCQ_COT_PROMPT, fmt.MCQ_PLAIN_ANSWER, fmt.MCQ_COT_ANSWER]
    ours = [t.replace("{question}", "").replace("{options}", "").replace("{letter}", "").replace("{explanation}", "")
            for t in ours]
    for e in eval_texts:
        for o in ours:
            assert not (_ngrams(o) & _ngrams(e)), (o, e)
