"""Model definitions (core/models.py) and pretraining's side of them (pretrain/model.py): causality
of every FFN variant (and a leaky one the check must catch), loading the non-standard variants in a
fresh process through `load_model` alone, plain-Qwen2 export of the standard one, the one HF-folder
writer `save_hf`, the size registry and the chunked loss."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from core.models import FFN_VARIANTS, build_model, count_parameters
from pretrain.model import SIZES, linear_cross_entropy, model_config

VOCAB = 320
CAUSAL_TOL = 1e-5   # float noise of reordered sums; a real leak is orders of magnitude larger


def _model_cfg(ffn: str, size: str = "debug", **over):
    base = dict(size=size, ffn=ffn, se_reduction=4, moe_num_experts=4, moe_slots_per_expert=2,
                moe_expert_intermediate_size=0, rope_theta=10000.0, init_std=0.02)
    base.update(over)
    return SimpleNamespace(**base)


def _model(ffn: str):
    return build_model(model_config(_model_cfg(ffn), VOCAB, pad_token_id=0, eos_token_id=2), seed=0)


@torch.no_grad()
def causality_leak(model: nn.Module, vocab_size: int, seq_len: int = 24, cut: int = 11, seed: int = 0) -> float:
    """Max |logit change| at positions <= `cut` when every token after `cut` is replaced.

    0 (up to float noise, ~1e-6) for a causal model; a layer that reads future tokens shows up here.
    """
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, vocab_size, (2, seq_len), generator=g)
    b = a.clone()
    b[:, cut + 1:] = torch.randint(0, vocab_size, (2, seq_len - cut - 1), generator=g)
    was_training = model.training
    model.eval()
    la, lb = model(input_ids=a).logits, model(input_ids=b).logits
    model.train(was_training)
    return (la[:, :cut + 1] - lb[:, :cut + 1]).abs().max().item()


class SequenceSoftMoE(nn.Module):
    """Steel-LLM's Soft MoE: dispatch softmax over the SEQUENCE axis, so every slot mixes all
    positions, future ones included. Only here to prove the causality check catches such a leak."""

    def __init__(self, hidden: int, slots: int = 4):
        super().__init__()
        self.phi = nn.Linear(hidden, slots, bias=False)
        self.expert = nn.Linear(hidden, hidden, bias=False)
        nn.init.normal_(self.phi.weight, std=0.5)

    def forward(self, x):
        logits = self.phi(x)                                   # [B, T, S]
        dispatch = torch.softmax(logits, dim=1)                # over positions: the leak
        slots = torch.einsum("bts,bth->bsh", dispatch, x)
        combine = torch.softmax(logits, dim=-1)
        return torch.einsum("bts,bsh->bth", combine, self.expert(slots))


@pytest.mark.parametrize("ffn", FFN_VARIANTS)
def test_every_variant_is_causal(ffn):
    model = _model(ffn)
    # Make the weights large enough that any dependence on the future would show.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(5.0)
    for cut in (0, 7, 22):
        assert causality_leak(model, VOCAB, seq_len=24, cut=cut) < CAUSAL_TOL, (ffn, cut)


def test_causality_check_catches_a_leaky_ffn():
    model = _model("swiglu")
    assert causality_leak(model, VOCAB) < CAUSAL_TOL
    for layer in model.model.layers:
        layer.mlp = SequenceSoftMoE(model.config.hidden_size)
    assert causality_leak(model, VOCAB) > 1e-3


def test_causal_soft_moe_prefix_average_matches_a_loop():
    """The cumsum formulation equals computing each position from its own prefix alone."""
    model = _model("soft_moe")
    moe = model.model.layers[0].mlp
    x = torch.randn(1, 9, model.config.hidden_size)
    full = moe(x)
    for t in range(9):
        assert torch.allclose(moe(x[:, :t + 1])[:, -1], full[:, t], atol=1e-5)


@pytest.mark.parametrize("ffn", ["double_swiglu", "soft_moe"])
def test_nonstandard_variants_load_through_load_model_and_auto_classes(ffn, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM
    from core.models import load_model, register_variants
    model = _model(ffn)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == {"double_swiglu": "zhllm_qwen2_doubleswiglu", "soft_moe": "zhllm_qwen2_softmoe"}[ffn]
    ids = torch.randint(0, VOCAB, (2, 16))
    loaded = load_model(tmp_path)
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)
    register_variants()   # idempotent; afterwards the plain Auto classes know our model_types too
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__.startswith("ZhQwen2")
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path)(input_ids=ids).logits,
                               model(input_ids=ids).logits, rtol=0, atol=0)


def test_load_model_registers_the_variants_in_a_fresh_process(tmp_path):
    """Nothing imported for a side effect: `load_model` alone loads a non-standard variant."""
    import subprocess
    import sys
    from pathlib import Path
    model = _model("double_swiglu")
    model.save_pretrained(tmp_path)
    code = ("import sys, torch; from core.models import load_model; m = load_model(sys.argv[1]); "
            "print(type(m).__name__, m(input_ids=torch.arange(8)[None]).logits.double().sum().item())")
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=repo, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    name, total = out.stdout.split()
    with torch.no_grad():
        expected = model(input_ids=torch.arange(8)[None]).logits.double().sum().item()
    assert name == "ZhQwen2DoubleSwiGLUForCausalLM" and float(total) == pytest.approx(expected, rel=1e-6)


def test_load_model_and_tokenizer_name_the_folder_they_cannot_use(tmp_path):
    from core.models import load_model, load_tokenizer
    from core.runs import RunError
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunError, match=f"{tmp_path} has no model weights"):
        load_model(tmp_path)
    with pytest.raises(RunError, match=f"{tmp_path} has no tokenizer files"):
        load_tokenizer(tmp_path)


def test_save_hf_fresh_generation_config_copies_tokenizer_files_byte_for_byte(tiny_tokenizer, tmp_path):
    """Pretraining's export: tokenizer files copied from the data folder, a new greedy generation
    config, KV cache on; written atomically over an existing folder."""
    from core.models import save_hf
    tok_dir = tiny_tokenizer.saved_path
    model = _model("swiglu")
    model.config.use_cache = False
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier export")
    assert save_hf(out, model, None, tokenizer_dir=tok_dir, fresh_generation_config=True) == out
    assert not (out / "stale.txt").exists() and [p.name for p in tmp_path.iterdir()] == ["model"]
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tok_dir / name).is_file():
            assert (out / name).read_bytes() == (tok_dir / name).read_bytes(), name
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tiny_tokenizer.eos_token_id and gen["pad_token_id"] == tiny_tokenizer.pad_token_id
    assert gen["do_sample"] is False and gen["max_new_tokens"] == 256
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["use_cache"] is True and cfg["eos_token_id"] == tiny_tokenizer.eos_token_id


def test_save_hf_updates_the_models_own_generation_config(tiny_tokenizer, tmp_path):
    """Post-training's save: the tokenizer saved by itself, the model's generation config kept
    apart from eos/pad, which follow the tokenizer."""
    from core.models import load_model, load_tokenizer, save_hf
    model = _model("soft_moe")
    model.generation_config.max_new_tokens = 77
    model.generation_config.eos_token_id = 1
    save_hf(tmp_path / "m", model, tiny_tokenizer)
    gen = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    assert gen["max_new_tokens"] == 77 and gen["eos_token_id"] == tiny_tokenizer.eos_token_id
    tok = load_tokenizer(tmp_path / "m")
    assert tok.chat_template == tiny_tokenizer.chat_template and len(tok) == len(tiny_tokenizer)
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "m")(input_ids=ids).logits, model(input_ids=ids).logits,
                                   rtol=0, atol=0)


def test_standard_variant_is_plain_qwen2(tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2ForCausalLM
    model = _model("swiglu")
    assert type(model) is Qwen2ForCausalLM
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen2"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # no trust_remote_code
    assert type(loaded) is Qwen2ForCausalLM


def test_variants_initialise_deterministically_and_train():
    for ffn in FFN_VARIANTS:
        a, b = _model(ffn), _model(ffn)
        for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(pa, pb), (ffn, n)
            assert pa.std() > 0 or "norm" in n or n.endswith("bias"), (ffn, n)
        ids = torch.randint(0, VOCAB, (2, 16))
        loss = a(input_ids=ids, labels=ids).loss
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in a.parameters()), ffn


def test_size_registry_param_counts():
    """Build each named size on the meta device (no memory) and check the advertised scale."""
    expected = {"small_0p1b": (0.08e9, 0.14e9), "base_0p5b": (0.35e9, 0.6e9), "steel_1b": (0.8e9, 1.3e9)}
    with torch.device("meta"):
        for name, (lo, hi) in expected.items():
            m = build_model(model_config(_model_cfg("swiglu", size=name), 32768), seed=0)
            assert lo < count_parameters(m) < hi, (name, count_parameters(m))
    steel = SIZES["steel_1b"]
    assert (steel.hidden, steel.layers, steel.heads) == (1792, 18, 32)


def test_unknown_size_or_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="model.size 'huge'"):
        model_config(_model_cfg("swiglu", size="huge"), VOCAB)
    with pytest.raises(ValueError, match="model.ffn 'moe'"):
        model_config(_model_cfg("moe"), VOCAB)


def _loss_and_grads(model, ids, targets, fused: bool, bf16: bool, **kw):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if fused:
            hidden = model.model(input_ids=ids).last_hidden_state
            loss = linear_cross_entropy(hidden, model.lm_head.weight, targets, **kw)
        else:  # transformers' way: full logits, upcast to fp32
            logits = model(input_ids=ids).logits
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1),
                                                     reduction="sum")
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("groups", ["one", "several"])
def test_chunked_linear_cross_entropy_matches_the_standard_loss(bf16, groups):
    """The training loop's chunked lm_head + cross-entropy: same loss and gradients (every
    parameter, the tied embedding included) as cross-entropy of the full fp32-upcast logits.
    600 positions = 3 softmax chunks of <= 256 rows (the last partial); `several` also splits the
    gradient matmuls into 3 groups. Some targets are ignored (-100) in the fp32 case."""
    model = _model("swiglu")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 200), generator=g)
    targets = torch.randint(0, VOCAB, (3, 200), generator=g)
    kw = {"chunk_elements": 1, "group_elements": 1 if groups == "several" else 1 << 27}
    if not bf16:
        targets[0, :50] = -100
        kw["ignore_index"] = -100
    ref_loss, ref_grads = _loss_and_grads(model, ids, targets, fused=False, bf16=bf16)
    loss, grads = _loss_and_grads(model, ids, targets, fused=True, bf16=bf16, **kw)
    # fp32: only the order of float sums differs. bf16: both round the logits (ours per chunk)
    # and the logit gradients to bf16, so they agree to bf16 precision.
    rtol = 1e-4 if bf16 else 1e-5
    assert loss.item() == pytest.approx(ref_loss.item(), rel=rtol)
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        err = (grads[name] - ref).norm() / ref.norm()
        assert err < (1e-2 if bf16 else 1e-5), (name, err.item())  # measured 1.7e-3 and 3e-7
    wrong = linear_cross_entropy(model.model(input_ids=ids).last_hidden_state, model.lm_head.weight,
                                 torch.roll(targets.clamp(min=0), 1, dims=1))
    assert abs(wrong.item() - ref_loss.item()) > 1.0  # the comparison can fail


def test_linear_cross_entropy_reuses_its_buffers_safely():
    """The chunk and gradient buffers outlive a call: a smaller call after a bigger one (views of
    the bigger buffers) and a call after release_loss_buffers() give the reference loss and grads."""
    from pretrain import model as model_lib
    g = torch.Generator().manual_seed(3)
    w = torch.randn(VOCAB, 16, generator=g)
    for n in (600, 100, 37):
        if n == 37:
            model_lib.release_loss_buffers()
            assert not model_lib._WORKSPACE
        h = torch.randn(n, 16, generator=g, requires_grad=True)
        t = torch.randint(0, VOCAB, (n,), generator=g)
        loss = linear_cross_entropy(h, w, t, chunk_elements=1, group_elements=1 << 27)
        loss.backward()
        h_ref = h.detach().clone().requires_grad_()
        ref = torch.nn.functional.cross_entropy(h_ref @ w.t(), t, reduction="sum")
        ref.backward()
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
        assert torch.allclose(h.grad, h_ref.grad, atol=1e-5)
        assert model_lib._WORKSPACE    # kept for the next call


def test_cpu_peak_is_measured_once_per_machine_and_cached(tmp_path, monkeypatch):
    """MFU's CPU peak: measured on first use (all threads and one thread x threads, the larger),
    cached by CPU, thread count and dtype, and read back without measuring again."""
    from pretrain import mfu
    monkeypatch.setattr(mfu, "CACHE", tmp_path / "peak.json")
    calls = []
    monkeypatch.setattr(mfu, "measure_cpu_peak", lambda dtype: calls.append(dtype) or 1.5e11)
    first = mfu.peak_flops(torch.device("cpu"), torch.float32)
    again = mfu.peak_flops(torch.device("cpu"), torch.float32)
    assert first == again == (1.5e11, "measured-matmul") and calls == [torch.float32]
    key = next(iter(json.loads((tmp_path / "peak.json").read_text())))
    assert key.endswith(f"threads={torch.get_num_threads()}|torch.float32")
    monkeypatch.undo()
    assert 1e8 < mfu.measure_cpu_peak(torch.float32, sizes=(128,), reps=2) < 1e15
