"""The hf backend is exact for a model whose FFN mixes positions (soft_moe's causal slot average is a
running sum over the row, which no KV cache carries): evaluated with prefix reuse on (the default)
and off, it gets identical scores, equal to a plain forward pass per question; its greedy generation
is the uncached one. And the guard matters: the reuse paths forced back on compute something else."""
from types import SimpleNamespace

import pytest
import torch

from core.benchmarks import load_spec
from eval.backends.hf import HFBackend
from eval.protocols import build_prompt, get_protocol
from eval.run import EvalConfig, evaluate


@pytest.fixture(scope="module")
def soft_moe_dir(tmp_path_factory, tiny_tokenizer):
    from core.models import build_model
    from pretrain.model import model_config
    cfg = SimpleNamespace(size="debug", ffn="soft_moe", se_reduction=4, moe_num_experts=4, moe_slots_per_expert=2,
                          moe_expert_intermediate_size=0, rope_theta=10000.0, init_std=0.2)
    model = build_model(model_config(cfg, len(tiny_tokenizer), pad_token_id=tiny_tokenizer.pad_token_id,
                                     eos_token_id=tiny_tokenizer.eos_token_id), seed=0)
    model.config.use_cache = True
    out = tmp_path_factory.mktemp("softmoe") / "softmoe"
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def _prompts(tok, limit=12):
    from core.benchmarks import load_benchmark
    bench = load_benchmark("demo")
    proto = get_protocol("base-5shot-logits")
    subject = bench.questions[0].subject
    qs = [q for q in bench.questions if q.subject == subject][:limit]
    return [build_prompt(proto, bench.spec, bench.subjects, q, bench.shots[q.subject], tokenizer=tok) for q in qs]


def _reference(be, prompts) -> list[list[float]]:
    """Letter logits of one plain forward pass per prompt (no cache, no padding, no packing)."""
    out = []
    with torch.inference_mode():
        for p in prompts:
            ids = be.bos + be.tokenizer.encode(p.prefix + p.suffix, add_special_tokens=False)
            out.append(be.model(input_ids=torch.tensor([ids])).logits[0, -1, be.letter_ids].tolist())
    return out


def _max_diff(a, b) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def test_soft_moe_scores_identical_with_and_without_prefix_reuse(soft_moe_dir, tmp_path):
    results = {}
    for reuse in (True, False):
        c = EvalConfig(bench=load_spec("demo"), model=str(soft_moe_dir), out_dir=str(tmp_path / str(reuse)),
                       bootstrap_samples=10, prefix_cache=reuse, batch_size=4)
        backend = HFBackend(soft_moe_dir, batch_size=4, prefix_cache=reuse)
        assert not backend.prefix_cache and not backend.packing    # refused for this FFN
        r = evaluate(c, backend=backend, quiet=True)
        results[reuse] = (tmp_path / str(reuse) / r["predictions"]).read_text().splitlines()
    assert len(results[True]) == r["n_questions"] > 0 and results[True] == results[False]   # every line, scores too

    be = HFBackend(soft_moe_dir, batch_size=4)
    prompts = _prompts(be.tokenizer)
    scores = be.score_subject(prompts[0].prefix, [p.suffix for p in prompts])
    assert _max_diff(scores, _reference(be, prompts)) < 1e-4


@pytest.mark.parametrize("packing", [True, False])
def test_reuse_forced_on_computes_something_else(soft_moe_dir, packing):
    """Without the guard (reuse forced back on), questions on the cached prefix, packed or padded,
    miss the prefix's share of the running sum: the scores move."""
    be = HFBackend(soft_moe_dir, batch_size=4)
    prompts = _prompts(be.tokenizer)
    ref = _reference(be, prompts)
    be.prefix_cache, be.packing = True, packing
    forced = be.score_subject(prompts[0].prefix, [p.suffix for p in prompts])
    assert _max_diff(forced, ref) > 1e-2


def test_swiglu_keeps_prefix_reuse(tiny_model_dir):
    be = HFBackend(tiny_model_dir)
    assert be.position_local and be.prefix_cache


def _greedy_uncached(model, ids: list[int], n: int, stop: set[int]) -> list[int]:
    out = []
    with torch.inference_mode():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(nxt)
            if nxt in stop:
                break
    return out


def test_soft_moe_generation_is_the_uncached_one(soft_moe_dir):
    be = HFBackend(soft_moe_dir, batch_size=4)
    tok = be.tokenizer
    prompts = ["以下是关于地理的单项选择题。", "广东省的省会是", "一加一等于几？请直接回答。"]
    stop = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    want = [tok.decode(_greedy_uncached(be.model, tok.encode(p, add_special_tokens=False), 8, stop),
                       skip_special_tokens=True) for p in prompts]
    assert be.generate(prompts, 8) == want
    # The cached, left-padded batch (what a position-local model gets) differs for this FFN.
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    with torch.inference_mode():
        gen = be.model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id,
                                eos_token_id=list(stop), temperature=None, top_p=None, top_k=None)
    cached = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert cached != want
