"""The hf backend's letter scores against the model computed by hand: one plain forward pass per
prompt (letter logits at its last token), across batching, packing, prefix caches, GQA attention and a
bos token (generation: test_mut_eval_hf_generate.py; shared helpers: mut_eval_hf_support.py). The tiny model has a large init std, so its answers vary and a wrong letter mapping, a
wrong row or a wrong position changes them (closes mutmut survivors of eval/backends/hf.py; the
equivalent ones are in tests/mutation_equivalent.md)."""
from types import SimpleNamespace

import pytest
import torch

from core.runs import RunError
from eval.backends.hf import HFBackend, bos_ids, letter_token_ids
from mut_eval_hf_support import (GEN_TEXTS, by_hand, close, greedy_by_hand, model, prompts,  # noqa: F401 (fixtures)
                                 tiny_tokenizer, varied_model)


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


# ---- the attention switch, the cache copy, batching and the model variants -------------------------------------

def attention_by_hand(q, k, v, mask, scale, causal):
    """Plain softmax attention; K/V heads repeated up to the query heads; mask True = may attend."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    return (s.softmax(-1) @ v).transpose(1, 2)


def test_sdpa_gqa_attention_against_attention_by_hand():
    from eval.backends.hf import sdpa_gqa_attention
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 5, 8, generator=g) for h in (4, 2, 2))
    mask = torch.rand(2, 1, 5, 5, generator=g) > 0.4
    mask[..., 0] = True                                   # no all-masked rows
    grouped = SimpleNamespace(num_key_value_groups=2, is_causal=True, training=False)
    plain = SimpleNamespace(num_key_value_groups=1, is_causal=True, training=False)
    bare = SimpleNamespace(is_causal=True, training=False)          # no num_key_value_groups: counts as 1

    def ok(out, want):
        assert out[1] is None and out[0].shape == want.shape and torch.allclose(out[0], want, atol=1e-5)
    # grouped heads, sdpa_gqa: K/V as they are, the given scale, the mask, never causal, no dropout by default
    ok(sdpa_gqa_attention(grouped, q, k, v, mask, sdpa_gqa=True, scaling=0.3), attention_by_hand(q, k, v, mask, 0.3, False))
    ok(sdpa_gqa_attention(grouped, q, k, v, None, sdpa_gqa=True, scaling=0.3), attention_by_hand(q, k, v, None, 0.3, False))
    # dropout 1 drops every weight: the output is zero
    out = sdpa_gqa_attention(grouped, q, k, v, mask, sdpa_gqa=True, scaling=0.3, dropout=1.0)[0]
    assert torch.count_nonzero(out) == 0
    # transformers' own path (its is_causal applies without a mask) for no sdpa_gqa, one group, or no group count
    causal = attention_by_hand(q, k, v, None, 0.3, True)
    ok(sdpa_gqa_attention(grouped, q, k, v, None, scaling=0.3), causal)
    kq, vq = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    ok(sdpa_gqa_attention(plain, q, kq, vq, None, sdpa_gqa=True, scaling=0.3), causal)
    ok(sdpa_gqa_attention(bare, q, kq, vq, None, sdpa_gqa=True, scaling=0.3), causal)


def test_use_sdpa_gqa_switches_only_sdpa_models_on_cpu(tiny_tokenizer, monkeypatch):
    from eval.backends.hf import SDPA_GQA, use_sdpa_gqa
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tiny_tokenizer)
    assert be._gqa is True and be.model.config._attn_implementation == SDPA_GQA
    eager = varied_model(tiny_tokenizer)
    eager.set_attn_implementation("eager")
    be = HFBackend(None, device="cpu", model=eager, tokenizer=tiny_tokenizer)
    assert be._gqa is False and be.packing is False and eager.config._attn_implementation == "eager"
    # a model that cannot take it (no attention registry, a config without the field)
    assert use_sdpa_gqa(SimpleNamespace(config=SimpleNamespace(), set_attn_implementation=lambda name: None)) is False


def test_packed_rows_hand_the_grouped_heads_to_sdpa(tiny_tokenizer, prompts, monkeypatch):
    """On CPU the packed forward runs SDPA on the grouped K/V heads (enable_gqa) with its 4D mask."""
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tiny_tokenizer)
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append((q.shape[1], k.shape[1], kw.get("attn_mask") is not None, kw.get("enable_gqa", False)))
        return sdpa(q, k, v, *a, **kw)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    ps = prompts[0]
    be.score_subject(ps[0].prefix, [p.suffix for p in ps])
    assert (4, 2, True, True) in seen


class CharTok:
    """One token per character (ids 3..), except "xy" -> one token (300): a BPE merge across the prefix boundary."""
    bos_token_id, eos_token_id, pad_token_id = None, 2, 0

    def encode(self, text, add_special_tokens=True):
        ids, i = [], 0
        while i < len(text):
            if text[i:i + 2] == "xy":
                ids.append(300)
                i += 2
            else:
                ids.append(3 + ord(text[i]) % 250)
                i += 1
        return ids

    def __call__(self, text, add_special_tokens=True):
        if isinstance(text, list):
            return SimpleNamespace(input_ids=[self.encode(t) for t in text])
        return SimpleNamespace(input_ids=self.encode(text))


def logits_of(model, rows):
    letters = [3 + ord(x) % 250 for x in "ABCD"]
    with torch.inference_mode():
        return [model(input_ids=torch.tensor([r])).logits[0, -1, letters].tolist() for r in rows]


def spy_calls(be):
    """[(kind, [question rows...]), ...] of every forward over questions, in call order."""
    calls = []
    packed, batched, last = be._packed_logits, be._batched_logits, be._last_logits

    def p(rows, cache, n):
        calls.append(("packed", [tuple(r) for r in rows]))
        return packed(rows, cache, n)

    def b(rows, cache):
        calls.append(("batched", [tuple(r) for r in rows]))
        return batched(rows, cache)

    def ll(ids, cache=None):
        if cache is None:
            calls.append(("plain", [tuple(r) for r in ids]))
        return last(ids, cache)
    be._packed_logits, be._batched_logits, be._last_logits = p, b, ll
    return calls


@pytest.mark.parametrize("packing", [True, False])
def test_questions_are_chunked_by_the_token_budget(tiny_tokenizer, model, packing):
    """batch_size=1: a chunk holds as many question tokens as the longest full prompt (prefix 9 + 9 = 18),
    longest first (ties in input order); both chunks here fill the budget exactly. Questions whose tokens
    do not extend the prefix's (the "xy" merge), or that are empty, run plain, longest first. A config
    with use_cache off changes nothing (the prefix forward asks for its cache)."""
    tok = CharTok()
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tok, batch_size=1,
                   packing=packing)
    be.model.config.use_cache = False
    assert be.bos == [] and be.batch_size == 1 and be.packing == packing
    prefix = "ppppppppx"                                                 # 9 tokens, ends in x
    sufs = ["yqqqqq", "d", "dd", "bbbbbbb", "", "ee", "yq", "aaaaaaaaa"] + ["f" + c for c in "ghijklm"] + ["e"]
    calls = spy_calls(be)
    got = be.score_subject(prefix, sufs)
    full = [tok.encode(prefix + s) for s in sufs]
    assert close(got, logits_of(model, full))
    n = 9
    q = [tuple(f[n:]) for f in full]
    budget = 1 * len(full[7])
    chunk1 = [q[7], q[3], q[2]]                                          # 9 + 7 + 2
    chunk2 = [q[5]] + q[8:15] + [q[1], q[15]]                           # 2 x 8 + 1 + 1
    assert budget == 18 and sum(map(len, chunk1)) == budget and sum(map(len, chunk2)) == budget
    kind = "packed" if packing else "batched"
    assert calls == [(kind, chunk1), (kind, chunk2), ("plain", [tuple(full[0])]), ("plain", [tuple(full[6])]),
                     ("plain", [tuple(full[4])])]
    # the prefix state is kept while the prefix stays, and rebuilt for another one
    state = be._prefix
    assert state[0] == prefix and state[1] == tok.encode(prefix)
    be.score_subject(prefix, ["zz"])
    assert be._prefix is state
    assert close(be.score_subject("pp", ["zz", ""]), logits_of(model, [tok.encode("ppzz"), tok.encode("pp")]))
    assert be._prefix[0] == "pp"
    # nothing extends the prefix: all plain
    calls.clear()
    assert close(be.score_subject(prefix, [""]), logits_of(model, [tok.encode(prefix)])) and calls == [
        ("plain", [tuple(tok.encode(prefix))])]


def test_plain_rows_go_longest_first_in_batches(tiny_tokenizer, model):
    tok = CharTok()
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tok, batch_size=2,
                   prefix_cache=False)
    calls = spy_calls(be)
    sufs = ["a", "bbbbb", "ccc", "dddd", "ee"]
    assert close(be.score_subject("p", sufs), logits_of(model, [tok.encode("p" + s) for s in sufs]))
    e = [tuple(tok.encode("p" + s)) for s in sufs]
    assert calls == [("plain", [e[1], e[3]]), ("plain", [e[2], e[4]]), ("plain", [e[0]])]


class FakeCache:
    """A cache without per-layer tensors: copied, and repeated per row by its own method."""
    def __init__(self, layers=None):
        self.calls = []
        if layers is not None:             # None: no `layers` attribute at all
            self.layers = layers

    def batch_repeat_interleave(self, rows):
        self.calls.append(rows)


def test_cache_for_broadcasts_tensor_layers_and_repeats_the_rest(model):
    from transformers import DynamicCache
    cache_for = HFBackend._cache_for
    with torch.inference_mode():
        real = model.model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True).cache
    assert isinstance(real, DynamicCache)
    keys0 = [l.keys.clone() for l in real.layers]
    c = cache_for(None, real, 3)
    assert c is not real and len(c.layers) == len(real.layers)
    for l, l0, k0 in zip(c.layers, real.layers, keys0):
        assert l.keys.shape[0] == 3 and l.values.shape[0] == 3
        assert l.keys.stride(0) == 0 and l.values.stride(0) == 0           # a broadcast view, not a copy
        assert torch.equal(l.keys[2], k0[0]) and torch.equal(l.values[1], l0.values[0])
        assert l0.keys.shape[0] == 1 and torch.equal(l0.keys, k0)           # the prefix cache is untouched
    for layers in (None, [], [SimpleNamespace(keys=torch.zeros(1, 2))], [SimpleNamespace(values=torch.zeros(1, 2))]):
        fake = FakeCache(layers)
        two, one = cache_for(None, fake, 2), cache_for(None, fake, 1)
        assert two.calls == [2] and one.calls == [] and fake.calls == []


def test_models_without_a_separate_base_or_head(tiny_tokenizer, model, prompts):
    """The plain forward path: a model with no decoder stack under base_model_prefix (a wrapper module,
    a prefix that names the model itself) or no output embeddings: same scores, batched on the cache."""
    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, SimpleNamespace()      # a config without _attn_implementation

        def forward(self, input_ids=None, cache=None, use_cache=None):
            return self.inner(input_ids=input_ids, cache=cache, use_cache=use_cache)

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()
    selfish = varied_model(tiny_tokenizer)
    selfish.base_model_prefix = "me"
    object.__setattr__(selfish, "me", selfish)
    headless = varied_model(tiny_tokenizer)
    headless.get_output_embeddings = lambda: None
    ps = prompts[0]
    prefix, suffixes = ps[0].prefix, [p.suffix for p in ps]
    want = by_hand(model, tiny_tokenizer, prefix, suffixes)
    for m, base in ((Wrapper(varied_model(tiny_tokenizer)), False), (selfish, False), (headless, True)):
        be = HFBackend(None, device="cpu", model=m, tokenizer=tiny_tokenizer, batch_size=2)
        assert (be._base is not None) == base and be.packing is False and be.prefix_cache is True
        calls = spy_calls(be)
        assert close(be.score_subject(prefix, suffixes), want)
        assert {k for k, _ in calls} == {"batched"}


@pytest.fixture(scope="module")
def bos_tokenizer(tiny_tokenizer):
    """The tiny tokenizer adding <|im_start|> (id 1) as bos, the way Llama-style tokenizers add theirs."""
    import copy
    from tokenizers.processors import TemplateProcessing
    tok = copy.deepcopy(tiny_tokenizer)
    tok._tokenizer.post_processor = TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])
    tok.bos_token = "<|im_start|>"
    assert tok.bos_token_id == 1 and tok("A").input_ids[0] == 1
    return tok


@pytest.mark.parametrize("packing", [True, False])
def test_a_bos_tokenizer_scores_bos_plus_the_text(bos_tokenizer, tiny_tokenizer, model, prompts, packing):
    tok = bos_tokenizer
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tok, packing=packing)
    assert be.bos == [1] and be.letter_ids == [tok.encode(x, add_special_tokens=False)[0] for x in "ABCD"]
    letters = be.letter_ids
    calls = spy_calls(be)
    ps = prompts[1]
    prefix, suffixes = ps[0].prefix, [p.suffix for p in ps]
    with torch.inference_mode():
        want = [model(input_ids=torch.tensor([tok.encode(prefix + s)])).logits[0, -1, letters].tolist() for s in suffixes]
    assert tok.encode(prefix + suffixes[0])[:2] == [1, tok.encode(prefix, add_special_tokens=False)[0]]
    assert close(be.score_subject(prefix, suffixes), want)
    assert be._prefix[1] == tok.encode(prefix) and "plain" not in {k for k, _ in calls}
    # generation takes the prompt's text as it is (no bos added: chat prompts carry their own tokens)
    assert be.generate(GEN_TEXTS[2:], 3) == [greedy_by_hand(model, tok, t, 3) for t in GEN_TEXTS[2:]]


def test_constructor_defaults_and_bounds(tiny_tokenizer):
    from eval.backends.hf import pick_device
    be = HFBackend(None, model=varied_model(tiny_tokenizer), tokenizer=tiny_tokenizer)
    assert be.device == pick_device("auto") and (be.batch_size, be.prefix_cache, be.packing, be.pack_row_tokens) == (
        8, True, True, 0)
    be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tiny_tokenizer, batch_size=0,
                   pack_row_tokens=-3)
    assert be.dtype == torch.float32 and be.batch_size == 1 and be.pack_row_tokens == 0


def test_loads_the_model_and_tokenizer_from_a_folder(tmp_path, tiny_tokenizer, model):
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    be = HFBackend(str(tmp_path), device="cpu", dtype="bf16")
    assert be.dtype == torch.bfloat16 and next(be.model.parameters()).dtype == torch.bfloat16
    assert be.tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    w = be.model.get_output_embeddings().weight
    assert torch.equal(w, model.get_output_embeddings().weight.to(torch.bfloat16))


def pack_cost(lengths, n_prefix, bins):
    """pack_rows' documented cost: padded tokens x (1 + ATTN_PAIR_COST x keys per query)."""
    from eval.backends.hf import ATTN_PAIR_COST
    width = max(sum(lengths[i] for i in b) for b in bins)
    return len(bins) * width * (1 + ATTN_PAIR_COST * (n_prefix + width))


@pytest.mark.parametrize("lengths,n_prefix,want,other", [
    # caps 26 and 64: one row of 33 beats two of 26 (a cap from 65 would miss it)
    ([26, 7], 10, [[0, 1]], [[0], [1]]),
    # caps 361, 393, 425: only 425 holds all 403 tokens, and one row wins
    ([20, 22, 361], 3000, [[2, 1, 0]], [[2], [1, 0]]),
    # two rows (526 wide) beat one of 984 once attention counts; with the padding term doubled they would not
    ([385, 73, 526], 0, [[2], [0, 1]], [[2, 0, 1]]),
    # two rows of 40 then one of 70: the search goes on until a single row
    ([40, 30], 0, [[0, 1]], [[0], [1]]),
    # the caps step by 32 from 64 (with a step of 1 another cap wins); these two: the candidate caps' best
    ([1, 511, 343, 71, 31, 268, 34], 0, [[1, 3, 6, 4, 0], [2, 5]], [[1, 3, 6, 0], [2, 5, 4]]),
    # the caps stop at 1024 + 32 - 1: the 1-row cap past 1024 is not tried
    ([545, 608, 4, 295, 492, 35, 72], 1000, [[1], [0, 5, 2], [4, 6], [3]], [[1, 3, 6, 5, 2], [0, 4]]),
])
def test_pack_rows_picks_the_cheapest_candidate_cap(lengths, n_prefix, want, other):
    from eval.backends.hf import pack_rows
    assert pack_rows(lengths, n_prefix) == want
    if len(lengths) < 5:            # the hand-checked cases: `want` costs less than the alternative
        assert pack_cost(lengths, n_prefix, want) < pack_cost(lengths, n_prefix, other)


def test_packing_gets_the_prefix_length_and_the_row_cap(tiny_tokenizer, model, prompts, monkeypatch):
    import eval.backends.hf as hf
    seen = []
    pack = hf.pack_rows

    def spy(lengths, n_prefix, row_tokens=0):
        seen.append((n_prefix, row_tokens))
        return pack(lengths, n_prefix, row_tokens)
    monkeypatch.setattr(hf, "pack_rows", spy)
    ps = prompts[0]
    prefix, suffixes = ps[0].prefix, [p.suffix for p in ps]
    for cap in (40, 0):
        be = HFBackend(None, device="cpu", model=varied_model(tiny_tokenizer), tokenizer=tiny_tokenizer, pack_row_tokens=cap)
        seen.clear()
        assert close(be.score_subject(prefix, suffixes), by_hand(model, tiny_tokenizer, prefix, suffixes))
        n = len(tiny_tokenizer.encode(prefix, add_special_tokens=False))
        assert seen and set(seen) == {(n, cap)}
