"""The hf backend's letter scores and greedy generations against the model computed by hand: one
plain forward pass per prompt (letter logits at its last token), a token-by-token greedy loop per
prompt. The tiny model has a large init std, so its answers vary and a wrong letter mapping, a
wrong row or a wrong position changes them (closes mutmut survivors of eval/backends/hf.py; the
equivalent ones are in tests/mutation_equivalent.md)."""
from types import SimpleNamespace

import pytest
import torch

import mut_support
from conftest import make_tiny_model
from core.runs import RunError
from eval.backends.hf import HFBackend, bos_ids, letter_token_ids


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return mut_support.load_tokenizer()


def varied_model(tok):
    """The tiny Qwen2 with SDPA attention and weights of std 0.3 (0.02 answers one letter to everything)."""
    m = make_tiny_model(tok, seed=3)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3, generator=g)
    m.set_attn_implementation("sdpa")
    return m.eval()


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    """The reference; each backend gets its own copy (the backend switches its model's attention)."""
    return varied_model(tiny_tokenizer)


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer):
    from core.benchmarks import load_benchmark
    from eval.protocols import build_prompt, get_protocol
    bench, proto = load_benchmark("demo"), get_protocol("base-5shot-logits")
    out = {}
    for q in bench.questions:
        if len(out.setdefault(q.subject, [])) < 7:
            out[q.subject].append(build_prompt(proto, bench.spec, bench.subjects, q, bench.shots[q.subject],
                                               tokenizer=tiny_tokenizer))
    return list(out.values())[:2]


def by_hand(model, tok, prefix: str, suffixes: list[str]) -> list[list[float]]:
    letters = [tok.encode(x, add_special_tokens=False)[0] for x in "ABCD"]
    with torch.inference_mode():
        return [model(input_ids=torch.tensor([tok.encode(prefix + s, add_special_tokens=False)])).logits[0, -1, letters]
                .tolist() for s in suffixes]


def close(a, b, tol=1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for ra, rb in zip(a, b) for x, y in zip(ra, rb))


@pytest.mark.parametrize("prefix_cache,packing,row_tokens,batch_size", [
    (False, False, 0, 2), (True, False, 0, 2), (True, True, 0, 3), (True, True, 40, 1), (True, True, 0, 8)])
def test_letter_scores_equal_the_model_by_hand(model, tiny_tokenizer, prompts, prefix_cache, packing, row_tokens,
                                               batch_size):
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tiny_tokenizer, batch_size=batch_size,
                   prefix_cache=prefix_cache, packing=packing, pack_row_tokens=row_tokens)
    assert be.bos == [] and be.packing == packing and be.prefix_cache == prefix_cache
    preds = []
    for ps in prompts + prompts[:1]:              # back to the first subject: its prefix state is rebuilt
        prefix, suffixes = ps[0].prefix, [p.suffix for p in ps]
        want = by_hand(model, tiny_tokenizer, prefix, suffixes)
        assert close(be.score_subject(prefix, suffixes), want)
        preds += [max(range(4), key=lambda i: w[i]) for w in want]
    assert len(set(preds)) >= 3                   # the model's answers vary: a wrong mapping shows


def test_no_prefix_and_a_suffix_that_does_not_extend_the_prefix(model, tiny_tokenizer, prompts):
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tiny_tokenizer, batch_size=2)
    ps = prompts[0]
    full = [p.prefix + p.suffix for p in ps]
    assert close(be.score_subject("", full), by_hand(model, tiny_tokenizer, "", full))
    cut = ps[0].prefix[:-1]                       # the prefix's last character moves into every suffix
    sufs = [ps[0].prefix[-1] + p.suffix for p in ps] + [""]
    assert close(be.score_subject(cut, sufs), by_hand(model, tiny_tokenizer, cut, sufs))


def greedy_by_hand(model, tok, prompt: str, max_new: int) -> str:
    stop = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    ids = tok.encode(prompt, add_special_tokens=False)
    new = []
    with torch.inference_mode():
        for _ in range(max_new):
            nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(nxt)
            if nxt in stop:
                break
    return tok.decode(new, skip_special_tokens=True)


def test_greedy_generation_equals_a_loop_by_hand(model, tiny_tokenizer):
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tiny_tokenizer, batch_size=2)
    texts = ["北京是中国的首都。", "问题：一加一等于几？答案：", "水", "下列说法正确的是"]
    got = be.generate(texts, 6)
    want = [greedy_by_hand(model, tiny_tokenizer, t, 6) for t in texts]
    assert got == want and len(set(want)) == len(want)


def test_letter_ids_and_bos():
    class Tok:
        bos_token_id = 7

        def encode(self, text, add_special_tokens=False):
            return [1, 2] if text == "C" else [ord(text)]

        def __call__(self, text):
            return SimpleNamespace(input_ids=self.ids)
    tok = Tok()
    with pytest.raises(RunError) as e:
        letter_token_ids(tok)
    assert str(e.value) == "the tokenizer splits 'C' into 2 tokens; logit scoring needs one"
    tok.ids = [7, 65]
    assert bos_ids(tok) == [7]
    tok.ids = [65]
    assert bos_ids(tok) == []
    tok.ids = []
    assert bos_ids(tok) == []
    tok.bos_token_id = None
    assert bos_ids(tok) == []
