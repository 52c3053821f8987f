"""What tests/unit/test_mut_eval_hf*.py share: the tokenizer, the varied tiny model (answers that differ
from prompt to prompt), demo-benchmark prompts, and the model computed by hand (letter logits of one
plain forward pass; a token-by-token greedy loop)."""
import pytest
import torch

import mut_support
from conftest import make_tiny_model


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


GEN_TEXTS = ["北京是中国的首都。", "问题：一加一等于几？答案：", "水", "下列说法正确的是"]
