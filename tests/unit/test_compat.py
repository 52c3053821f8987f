"""core.compat: each shim takes the old and the new spelling (stand-ins of transformers 5.17 and 5.24),
and does the right thing with the transformers installed. The same file runs under transformers 5.17
(the lent GPU machine's version): see the GPU section of benchmarks/RESULTS.md."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from core import compat


# ---- stand-ins of both spellings ----------------------------------------------------------------
class OldModel(torch.nn.Module):
    """transformers < 5.23: only gradient_checkpointing_enable."""
    def __init__(self):
        super().__init__()
        self.calls = []

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.calls.append(("gradient", gradient_checkpointing_kwargs))


class NewModel(OldModel):
    """transformers >= 5.23: both names, the old one deprecated."""
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None):
        self.calls.append(("activation", activation_checkpointing_kwargs))


@dataclasses.dataclass
class OldArgs:
    output_dir: str = ""
    gradient_checkpointing: bool = False


@dataclasses.dataclass
class NewArgs(OldArgs):
    activation_checkpointing: bool = False


@pytest.mark.parametrize("cls, method", [(OldModel, "gradient"), (NewModel, "activation")])
def test_activation_checkpointing_takes_the_name_the_model_has(cls, method):
    model = cls()
    used = compat.enable_activation_checkpointing(model)
    assert model.calls == [(method, {"use_reentrant": False})] and used.startswith(method)
    model = cls()
    compat.enable_activation_checkpointing(model, use_reentrant=True, preserve_rng_state=False)
    assert model.calls == [(method, {"use_reentrant": True, "preserve_rng_state": False})]


@pytest.mark.parametrize("cls, name", [(OldArgs, "gradient_checkpointing"), (NewArgs, "activation_checkpointing")])
def test_checkpointing_argument_names_a_field_the_class_has(cls, name):
    assert compat.checkpointing_argument(cls, True) == {name: True}
    assert getattr(cls(**compat.checkpointing_argument(cls, True)), name) is True


def test_checkpointing_argument_refuses_a_class_without_either():
    @dataclasses.dataclass
    class Neither:
        output_dir: str = ""
    with pytest.raises(TypeError, match="neither"):
        compat.checkpointing_argument(Neither, True)


def test_cache_keyword_and_output_cache_read_either_name():
    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return None

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None):
            return None
    assert compat.cache_keyword(Old()) == "past_key_values" and compat.cache_keyword(New()) == "cache"
    old_out, new_out = type("O", (), {"past_key_values": "kv"})(), type("N", (), {"cache": "kv", "past_key_values": None})()
    assert compat.output_cache(old_out) == "kv" and compat.output_cache(new_out) == "kv"
    assert compat.output_cache(object()) is None


def test_tf32_is_off_unless_switched_on():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert compat.cuda_matmul_tf32() is False
        torch.set_float32_matmul_precision("high")      # the documented way to allow TF32
        assert compat.cuda_matmul_tf32() is True
    finally:
        torch.set_float32_matmul_precision(before)


# ---- against the installed transformers ---------------------------------------------------------
def _tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg)


def test_activation_checkpointing_on_the_installed_transformers_recomputes_without_warning():
    model = _tiny_qwen2().train()
    ids = torch.randint(0, 64, (2, 16))
    ref = torch.autograd.grad(model(input_ids=ids, labels=ids).loss, model.model.layers[0].mlp.up_proj.weight)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)      # the deprecated name warns on 5.23+
        compat.enable_activation_checkpointing(model)
    assert model.model.gradient_checkpointing is True
    recomputed = []
    # a pre-hook: torch's non-reentrant checkpoint stops recomputing once the saved tensors are back,
    # which can be before the block's forward hook would fire
    model.model.layers[0].mlp.register_forward_pre_hook(lambda *_: recomputed.append(1))
    got = torch.autograd.grad(model(input_ids=ids, labels=ids).loss, model.model.layers[0].mlp.up_proj.weight)[0]
    assert len(recomputed) == 2            # the block ran again in backward
    torch.testing.assert_close(got, ref)


def test_training_arguments_take_the_checkpointing_argument(tmp_path):
    from transformers import TrainingArguments
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                             **compat.checkpointing_argument(TrainingArguments, True))
    assert args.gradient_checkpointing is True      # both versions keep this attribute


def test_cache_keyword_on_the_installed_transformers_feeds_a_prefix_cache():
    model = _tiny_qwen2().eval()
    ids = torch.randint(0, 64, (1, 12))
    with torch.inference_mode():
        full = model(input_ids=ids).logits[0, -1]
        out = model.model(input_ids=ids[:, :8], use_cache=True)
        cache = compat.output_cache(out)
        assert cache is not None
        rest = model(input_ids=ids[:, 8:], use_cache=True, **{compat.cache_keyword(model): cache}).logits[0, -1]
    torch.testing.assert_close(rest, full, rtol=1e-4, atol=1e-5)
