"""Golden prompt text for every protocol (eval/protocols.py)."""
import pytest

from core.benchmarks import Question, load_spec
from core.config import ConfigError
from core.results import PROTOCOL_NAMES
from eval.protocols import PROTOCOLS, build_prompt, get_protocol

Q = Question("law", "Humanities", "law/val/0", "下列说法正确的是____。", ("甲", "乙", "丙", "丁"), "B", "val")
SHOTS = [Question("law", "Humanities", f"law/dev/{i}", f"题{i}", ("a", "b", "c", "d"), "ABCD"[i % 4], "dev")
         for i in range(5)]
SUBJECTS = {"law": ["Law", "法学", "Humanities"]}
OPTS = "A. 甲\nB. 乙\nC. 丙\nD. 丁"


def test_base_5shot_logits_golden():
    p = build_prompt(get_protocol("base-5shot-logits"), load_spec("ceval"), SUBJECTS, Q, SHOTS)
    want_prefix = ("以下是中国关于法学考试的单项选择题，请选出其中的正确答案。\n\n" +
                   "".join(f"题{i}\nA. a\nB. b\nC. c\nD. d\n答案：{'ABCD'[i % 4]}\n\n" for i in range(5)))
    assert p.prefix == want_prefix
    assert p.suffix == f"下列说法正确的是____。\n{OPTS}\n答案："
    cm = build_prompt(get_protocol("base-5shot-logits"), load_spec("cmmlu"), SUBJECTS, Q, SHOTS)
    assert cm.prefix.startswith("以下是关于法学的单项选择题，请直接给出正确答案的选项。\n\n题0\n")
    with pytest.raises(ValueError, match="5 shots needed"):
        build_prompt(get_protocol("base-5shot-logits"), load_spec("ceval"), SUBJECTS, Q, SHOTS[:3])


def test_chat_protocols_golden(tiny_tokenizer):
    spec = load_spec("ceval")
    gen = build_prompt(get_protocol("chat-0shot-gen"), spec, SUBJECTS, Q, [], tokenizer=tiny_tokenizer)
    assert gen.prefix == "" and gen.text == (
        "<|im_start|>user\n以下是关于法学的单项选择题，请直接给出正确答案的选项。\n\n"
        f"下列说法正确的是____。\n{OPTS}<|im_end|>\n<|im_start|>assistant\n")
    cot = build_prompt(get_protocol("chat-0shot-cot"), spec, SUBJECTS, Q, [], tokenizer=tiny_tokenizer)
    assert cot.text == (
        "<|im_start|>user\n以下是关于法学的单项选择题，请逐步分析，最后一行以“答案：X”的格式给出正确选项"
        f"（X 为 A、B、C 或 D）。\n\n下列说法正确的是____。\n{OPTS}<|im_end|>\n<|im_start|>assistant\n")
    steel = build_prompt(get_protocol("steel-compat"), spec, SUBJECTS, Q, [], tokenizer=tiny_tokenizer)
    assert steel.text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n以下是一道单选题:\n"
        f"下列说法正确的是( )\n\n{OPTS}\n请给出答案。\n<|im_end|>\n<|im_start|>assistant\n")
    assert len({gen.sha256, cot.sha256, steel.sha256}) == 3


def test_protocol_registry():
    assert set(PROTOCOLS) == {"base-5shot-logits", "chat-0shot-gen", "chat-0shot-cot", "steel-compat"}
    assert tuple(PROTOCOLS) == PROTOCOL_NAMES    # the result contract names exactly these, in this order
    assert get_protocol("steel-compat").label.startswith("STEEL-COMPAT")
    rec = get_protocol("base-5shot-logits").record()
    assert rec["version"] == 1 and rec["scoring"] == "logits" and rec["averaging"] == "micro+macro"
    with pytest.raises(ConfigError, match="unknown protocol"):   # a config value: `config error: ...`
        get_protocol("zero-shot")
