"""The hf backend's greedy generations against a token-by-token loop by hand: batching, eos and
<|im_end|> stops, a tokenizer without eos, and a position-mixing FFN (no prefix cache). Part of the
eval_hf mutation module (benchmarks/mutation_bench.py) with test_mut_eval_hf.py."""
import pytest
import torch

from eval.backends.hf import HFBackend
from mut_eval_hf_support import (GEN_TEXTS, by_hand, close, greedy_by_hand, model, prompts,  # noqa: F401 (fixtures)
                                 tiny_tokenizer, varied_model)


def test_greedy_generation_equals_a_loop_by_hand(model, tiny_tokenizer):
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tiny_tokenizer, batch_size=2)
    texts = ["北京是中国的首都。", "问题：一加一等于几？答案：", "水", "下列说法正确的是"]
    got = be.generate(texts, 6)
    want = [greedy_by_hand(model, tiny_tokenizer, t, 6) for t in texts]
    assert got == want and len(set(want)) == len(want)


def first_token(model, tok, text):
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([tok.encode(text, add_special_tokens=False)])).logits[0, -1]
    return int(logits.argmax()), float(logits.max())


@pytest.fixture(scope="module")
def stopper(tiny_tokenizer):
    """The varied model made to answer <|endoftext|> (0) first to GEN_TEXTS[0] and <|im_end|> (2) first to
    GEN_TEXTS[1]: their (tied) embedding rows become 3x the row of the token it answered (a positive logit)."""
    m = varied_model(tiny_tokenizer)
    (a, la), (b, lb) = first_token(m, tiny_tokenizer, GEN_TEXTS[0]), first_token(m, tiny_tokenizer, GEN_TEXTS[1])
    assert a != b and la > 0 and lb > 0 and {a, b}.isdisjoint({0, 2})
    w = m.get_output_embeddings().weight
    with torch.no_grad():
        w[0], w[2] = 3 * w[a], 3 * w[b]
    assert first_token(m, tiny_tokenizer, GEN_TEXTS[0])[0] == 0 and first_token(m, tiny_tokenizer, GEN_TEXTS[1])[0] == 2
    return m


def backend_on(model, tok, **kw):
    import copy
    return HFBackend(None, device="cpu", model=copy.deepcopy(model), tokenizer=tok, **kw)


def test_generation_stops_at_eos_and_im_end_and_drops_them(tiny_tokenizer, stopper):
    """eos <|endoftext|> (id 0) and <|im_end|> both stop generation, are not in the text, and the model's
    generation config (sampling on) does not override greedy decoding; 2 prompts per generate call."""
    import copy
    tok = copy.deepcopy(tiny_tokenizer)
    tok.eos_token = "<|endoftext|>"
    assert tok.eos_token_id == 0 and tok.convert_tokens_to_ids("<|im_end|>") == 2
    be = backend_on(stopper, tok, batch_size=2)
    be.model.generation_config.do_sample, be.model.generation_config.temperature = True, 3.0
    be.model.generation_config.eos_token_id = None
    n_calls = count_generate_calls(be)
    torch.manual_seed(0)
    got = be.generate(GEN_TEXTS, 6)
    want = [greedy_by_hand(stopper, tok, t, 6) for t in GEN_TEXTS]
    assert got == want and want[0] == "" and want[1] == "" and n_calls == [2, 2]


def count_generate_calls(be) -> list[int]:
    """Wrap the backend's model.generate: the returned list gets each call's number of prompts."""
    n_calls, gen = [], be.model.generate

    def counted(**kw):
        n_calls.append(kw["input_ids"].shape[0])
        return gen(**kw)
    be.model.generate = counted
    return n_calls


def test_generation_with_a_tokenizer_without_eos(tiny_tokenizer, stopper):
    import copy
    tok = copy.deepcopy(tiny_tokenizer)
    tok.eos_token = None
    assert tok.eos_token_id is None
    be = backend_on(stopper, tok, batch_size=3)
    be.model.generation_config.pad_token_id = 100       # not special: rows that stopped must pad with the tokenizer's pad
    got = be.generate(GEN_TEXTS[1:], 4)
    assert got == [greedy_by_hand(stopper, tok, t, 4) for t in GEN_TEXTS[1:]] and got[0] == "" and got[2] != ""


def mixing_model(tok):
    """The varied model whose first FFN adds the causal running mean of its input over the row (a
    position-mixing FFN like soft_moe's, counted as one by position_local)."""
    from core.models import CausalSoftMoE

    class RunningMean(CausalSoftMoE):
        def __init__(self, mlp):
            torch.nn.Module.__init__(self)
            self.mlp = mlp

        def forward(self, x):
            return self.mlp(x) + x.cumsum(1) / torch.arange(1, x.shape[1] + 1).view(1, -1, 1)
    m = varied_model(tok)
    m.model.layers[0].mlp = RunningMean(m.model.layers[0].mlp)
    return m


def test_a_position_mixing_model_runs_plain_rows_and_uncached_generation(tiny_tokenizer, prompts):
    ref = mixing_model(tiny_tokenizer)
    be = backend_on(ref, tiny_tokenizer, batch_size=2)
    assert be.position_local is False and be.prefix_cache is False and be.packing is False
    ps = prompts[0][:3]
    prefix, suffixes = ps[0].prefix, [p.suffix for p in ps]
    assert close(be.score_subject(prefix, suffixes), by_hand(ref, tiny_tokenizer, prefix, suffixes))
    n_calls = count_generate_calls(be)
    texts = GEN_TEXTS[:3]
    assert be.generate(texts, 4) == [greedy_by_hand(ref, tiny_tokenizer, t, 4) for t in texts] and n_calls == [1, 1, 1]
