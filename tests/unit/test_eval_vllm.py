"""vLLM backend request building and output parsing, on CPU with stand-in output objects."""
from types import SimpleNamespace

import pytest

from eval.backends.vllm import (generation_sampling_kwargs, logit_requests, logit_sampling_kwargs,
                                parse_generation, parse_letter_logprobs)


def test_requests_share_prefix_tokens(tiny_tokenizer):
    reqs = logit_requests(tiny_tokenizer, "以下是题目。\n\n", ["问题一\n答案：", "问题二\n答案："])
    ids = [r["prompt_token_ids"] for r in reqs]
    pre = tiny_tokenizer.encode("以下是题目。\n\n", add_special_tokens=False)
    assert all(x[:len(pre)] == pre for x in ids) and ids[0] != ids[1]
    assert ids[0] == tiny_tokenizer.encode("以下是题目。\n\n问题一\n答案：", add_special_tokens=False)


def test_sampling_kwargs():
    kw = logit_sampling_kwargs([10, 11, 12, 13])
    assert kw == {"max_tokens": 1, "temperature": 0.0, "logprobs": 4, "allowed_token_ids": [10, 11, 12, 13]}
    g = generation_sampling_kwargs(64, [2])
    assert g["max_tokens"] == 64 and g["temperature"] == 0.0 and g["stop_token_ids"] == [2]


def _out(logprobs, text="B"):
    lp = {t: SimpleNamespace(logprob=v) for t, v in (logprobs or {}).items()}
    return SimpleNamespace(outputs=[SimpleNamespace(text=text, logprobs=[lp] if logprobs is not None else None)])


def test_parse_letter_logprobs():
    scores = parse_letter_logprobs(_out({10: -2.0, 11: -0.1, 13: -3.0}), [10, 11, 12, 13])
    assert scores[:2] == [-2.0, -0.1] and scores[2] == float("-inf") and scores[3] == -3.0
    assert parse_generation(_out({}, "答案是C")) == "答案是C"
    with pytest.raises(Exception, match="no logprobs"):
        parse_letter_logprobs(_out(None), [10])
