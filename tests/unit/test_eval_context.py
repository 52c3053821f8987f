"""eval/context.py with a one-token-per-character tokenizer: where the context length comes from, the
order of the policy (fewer shots first, then a left cut that keeps the answer slot), the reserve for
generation; and the result contract's checks of the `context` field (core/results.py)."""
import json

import pytest

from core.config import ConfigError
from core.results import SchemaError, check_result, context_overflow
from eval.context import ContextFit, context_length, context_record, context_warning
from eval.protocols import Prompt


class CharTokenizer:
    """One token per character: token counts are string lengths, so expected cuts are computable."""
    def __init__(self, model_max_length=int(1e30)):
        self.model_max_length = model_max_length

    def encode(self, text, add_special_tokens=False):
        assert add_special_tokens is False
        return list(text)


def model_dir(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_context_length_sources(tmp_path):
    d = model_dir(tmp_path, max_position_embeddings=1024)
    assert context_length(d, CharTokenizer()) == (1024, "max_position_embeddings")   # 1e30: the tokenizer has none
    assert context_length(d, CharTokenizer(4096)) == (1024, "max_position_embeddings")
    assert context_length(d, CharTokenizer(512)) == (512, "model_max_length")        # the smaller one
    assert context_length(d, CharTokenizer(512), override=8192) == (8192, "max_len=")  # max_len= overrides both
    assert context_length(model_dir(tmp_path, n_positions=2048), CharTokenizer()) == (2048, "n_positions")
    assert context_length(model_dir(tmp_path, text_config={"max_position_embeddings": 300}), CharTokenizer()) == \
        (300, "max_position_embeddings")
    with pytest.raises(ConfigError, match="pass max_len="):
        context_length(model_dir(tmp_path, hidden_size=8), CharTokenizer())


def shots_prompt(k: int) -> Prompt:
    """A prompt with k examples of 10 characters after a 5-character header; the question is 5."""
    return Prompt("HEAD:" + "".join(f"example{i}|\n" for i in range(k)), "Q?答案：")


def test_fewer_shots_first_one_at_a_time():
    ctx = ContextFit(CharTokenizer(), max_len=40, reserve=1, bos=[0])
    built = []

    def build(k):
        built.append(k)
        return shots_prompt(k)
    full = ctx.fit(build, 5)             # bos + 5 + 50 + 5 = 61 tokens; 2 examples fit (1 + 5 + 20 + 5 + 1 <= 40)
    assert (full.how, full.shots, full.tokens) == ("shots_reduced", 2, 31) and built == [5, 4, 3, 2]
    assert full.prompt == shots_prompt(2)                     # exactly the 2-shot prompt, prefix kept for the cache
    fits = ContextFit(CharTokenizer(), max_len=61 + 1, reserve=1, bos=[0]).fit(shots_prompt, 5)
    assert (fits.how, fits.shots, fits.prompt) == ("fits", 5, shots_prompt(5))      # exactly at the limit: as built


def test_left_cut_at_zero_shots_keeps_the_answer_slot():
    ctx = ContextFit(CharTokenizer(), max_len=7, reserve=1, bos=[0])
    cut = ctx.fit(shots_prompt, 5)       # zero shots is 10 characters: the left 5 go, 5 stay (1 + 5 + 1 = 7)
    assert (cut.how, cut.shots, cut.tokens) == ("left_truncated", 0, 6)
    assert cut.prompt == Prompt("", "Q?答案：") and shots_prompt(0).text.endswith(cut.prompt.text)
    gen = ContextFit(CharTokenizer(), max_len=30, reserve=24, bos=[])   # generation: max_new_tokens reserved
    out = gen.fit(lambda k: Prompt("", "<user>a long question</user><assistant>"), 0)
    assert out.how == "left_truncated" and out.prompt.text == "<assistant>"[-6:] and out.tokens == 6
    with pytest.raises(ConfigError, match="leaves no room"):
        ContextFit(CharTokenizer(), max_len=24, reserve=24, bos=[])


def test_record_counts_each_prompt_once():
    ctx = ContextFit(CharTokenizer(), max_len=40, reserve=1, bos=[0], source="max_len=")
    fitted = [ctx.fit(lambda k, n=n: Prompt("", "x" * n), 0) for n in (10, 50, 20, 60)] + \
        [ctx.fit(shots_prompt, 5)]
    rec = context_record(ctx, ["a", "a", "b", "b", "b"], fitted)
    assert {k: rec[k] for k in ("max_len", "prompts", "shots_reduced", "left_truncated")} == \
        {"max_len": 40, "prompts": 5, "shots_reduced": 1, "left_truncated": 2}
    assert rec["per_subject"] == {"a": {"prompts": 2, "shots_reduced": 0, "left_truncated": 1},
                                  "b": {"prompts": 3, "shots_reduced": 1, "left_truncated": 1}}
    assert "3 of 5 prompts did not fit max_len 40" in context_warning(rec)
    clean = context_record(ctx, ["a"], fitted[:1])
    assert context_warning(clean) is None


def result(**context):
    d = {"schema_version": 1, "benchmark": "ceval", "benchmark_version": "1", "split": "val", "data_source": "x",
         "subset": "full", "n_questions": 5, "protocol": {"name": "base-5shot-logits", "version": 1},
         "model": {"name": "m"}, "acc_micro": 0.4, "acc_macro": 0.4, "ci95": {"micro": [0.1, 0.8]}, "date": "d"}
    if context:
        d["context"] = context
    return d


def test_result_contract_checks_context():
    assert context_overflow(check_result(result(), "old.json")) == (0, 0)          # optional: older files lack it
    per = {"a": {"prompts": 2, "shots_reduced": 1, "left_truncated": 0},
           "b": {"prompts": 3, "shots_reduced": 0, "left_truncated": 1}}
    ok = dict(max_len=1024, prompts=5, shots_reduced=1, left_truncated=1, per_subject=per)
    assert context_overflow(check_result(result(**ok), "r.json")) == (1, 1)
    bad = [({"max_len": 0}, "positive int 'max_len'"), ({"prompts": 4}, "is not n_questions 5"),
           ({"shots_reduced": -1}, "non-negative ints"), ({"left_truncated": 5}, "<= prompts"),
           ({"shots_reduced": 2}, "per_subject's shots_reduced add up to 1, not 2"),
           ({"per_subject": {"a": {"prompts": 5}}}, "must map subject")]
    for change, message in bad:
        with pytest.raises(SchemaError, match=message):
            check_result(result(**{**ok, **change}), "r.json")
