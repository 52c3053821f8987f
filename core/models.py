"""Model definitions every stage shares: the FFN variants, their registration with transformers,
and the one loader and the one writer of an HF model folder.

FFN variants (`ffn` in a pretraining recipe):
- `swiglu`        Qwen2's own MLP. The model IS `Qwen2ForCausalLM`: the export loads with plain
                  transformers, no trust_remote_code, no import of this package.
- `double_swiglu` SENet-style double SwiGLU: a SwiGLU (gate/up/down) followed by a bottleneck
                  SwiGLU (gate/up/down, width hidden/se_reduction: SENet's "squeeze") whose output,
                  through 2*sigmoid, rescales the first one's output per channel ("excitation").
                  The 2x keeps the scale at 1 at initialisation.
- `soft_moe`      causal soft mixture of experts, see `CausalSoftMoE`.

The two non-standard variants are `ZhQwen2*ForCausalLM` subclasses of Qwen2ForCausalLM with their
own `model_type` ("zhllm_qwen2_doubleswiglu", "zhllm_qwen2_softmoe"). `register_variants()` makes
them known to AutoConfig / AutoModelForCausalLM; every function here that needs them calls it, so
callers use `load_model(folder)` and never import anything for a side effect. Weight names
elsewhere are Qwen2's.

Sizes, the pretraining config builder and the chunked loss kernel stay in pretrain/model.py.

    from core.models import load_model, load_tokenizer, save_hf
    model = load_model("runs/pretrain/<run>/model")
    save_hf(out_dir, model, load_tokenizer(folder))
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from core.runs import TOKENIZER_FILES, RunError, check_tokenizer_files

FFN_VARIANTS = ("swiglu", "double_swiglu", "soft_moe")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")


class DoubleSwiGLU(nn.Module):
    """y = h * 2*sigmoid(SwiGLU_2(h)), h = SwiGLU_1(x); SwiGLU_2 is the SENet bottleneck."""

    def __init__(self, config):
        super().__init__()
        hidden, inter = config.hidden_size, config.intermediate_size
        squeeze = max(hidden // config.se_reduction, 1)
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)
        self.se_gate_proj = nn.Linear(hidden, squeeze, bias=False)
        self.se_up_proj = nn.Linear(hidden, squeeze, bias=False)
        self.se_down_proj = nn.Linear(squeeze, hidden, bias=False)

    def forward(self, x):
        h = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        excite = self.se_down_proj(F.silu(self.se_gate_proj(h)) * self.se_up_proj(h))
        return h * (2.0 * torch.sigmoid(excite))


class CausalSoftMoE(nn.Module):
    """Soft MoE (Puigcerver et al.) made causal.

    Soft MoE builds each slot as a softmax-weighted average of the tokens, the softmax taken over
    the sequence axis; every token's output then mixes the slots' expert outputs. Steel-LLM used it
    that way in a decoder, so the FFN output at position t depended on tokens after t: training
    leaked the future and the model cannot be run autoregressively as trained.

    Here the slot average is a *prefix* average: the slot seen by position t is
        slot_s(t) = sum_{u<=t} exp(l_{u,s}) x_u / sum_{u<=t} exp(l_{u,s}),    l = x @ phi
    (a cumulative softmax over positions 0..t, computed with cumsum), and
        y_t = sum_s softmax_s(l_{t,.})_s * expert_{e(s)}(slot_s(t)).
    Position t reads only tokens <= t, so the layer is causal by construction (the causality test
    in tests/unit/test_pretrain_model.py checks it for every variant). Logits are soft-capped
    (10*tanh(l/10)) so exp() stays in fp32 range without a max subtraction, which would need the max
    over the whole sequence (a future-dependent quantity). Each of the E experts is a SwiGLU of
    width `moe_expert_intermediate_size` (default intermediate/E), applied to its p slots per
    position: compute per token = p x the dense FFN. Memory: the prefix sums are a [B, T, slots, H]
    fp32 tensor per layer (0.7 GB for B=8, T=2048, 6 slots, H=1792), so use activation checkpointing
    at Steel's size.
    """

    def __init__(self, config):
        super().__init__()
        hidden = config.hidden_size
        self.num_experts = config.moe_num_experts
        self.slots_per_expert = config.moe_slots_per_expert
        inter = config.moe_expert_intermediate_size or max(config.intermediate_size // self.num_experts, 1)
        n_slots = self.num_experts * self.slots_per_expert
        self.phi = nn.Linear(hidden, n_slots, bias=False)
        self.gate_proj = nn.Parameter(torch.empty(self.num_experts, hidden, inter))
        self.up_proj = nn.Parameter(torch.empty(self.num_experts, hidden, inter))
        self.down_proj = nn.Parameter(torch.empty(self.num_experts, inter, hidden))

    def forward(self, x):  # x: [B, T, H]
        b, t, h = x.shape
        logits = self.phi(x).float()
        logits = 10.0 * torch.tanh(logits / 10.0)
        w = logits.exp()                                                     # [B, T, S]
        num = torch.cumsum(w.unsqueeze(-1) * x.float().unsqueeze(2), dim=1)  # [B, T, S, H]
        den = torch.cumsum(w, dim=1).unsqueeze(-1)
        slots = (num / den).to(x.dtype)
        e, p = self.num_experts, self.slots_per_expert
        slots = slots.view(b, t, e, p, h)
        gate = torch.einsum("btepd,edi->btepi", slots, self.gate_proj)
        up = torch.einsum("btepd,edi->btepi", slots, self.up_proj)
        out = torch.einsum("btepi,eid->btepd", F.silu(gate) * up, self.down_proj)  # [B, T, E, P, H]
        combine = torch.softmax(logits, dim=-1).to(x.dtype).view(b, t, e, p, 1)
        return (combine * out).sum(dim=(2, 3))


class ZhQwen2DoubleSwiGLUConfig(Qwen2Config):
    model_type = "zhllm_qwen2_doubleswiglu"

    def __init__(self, se_reduction: int = 4, **kwargs):
        self.se_reduction = se_reduction
        super().__init__(**kwargs)


class ZhQwen2SoftMoEConfig(Qwen2Config):
    model_type = "zhllm_qwen2_softmoe"

    def __init__(self, moe_num_experts: int = 4, moe_slots_per_expert: int = 1,
                 moe_expert_intermediate_size: int = 0, **kwargs):
        self.moe_num_experts = moe_num_experts
        self.moe_slots_per_expert = moe_slots_per_expert
        self.moe_expert_intermediate_size = moe_expert_intermediate_size
        super().__init__(**kwargs)


class _ReplacedFFNMixin:
    """Swap every decoder layer's Qwen2MLP for `ffn_class` and initialise it like HF would."""
    ffn_class: type[nn.Module]

    def _replace_ffn(self):
        std = self.config.initializer_range
        for layer in self.model.layers:
            layer.mlp = self.ffn_class(self.config).to(layer.input_layernorm.weight.device)
            for p in layer.mlp.parameters():
                if p.device.type != "meta":
                    with torch.no_grad():
                        p.normal_(0.0, std)


class ZhQwen2DoubleSwiGLUForCausalLM(_ReplacedFFNMixin, Qwen2ForCausalLM):
    config_class = ZhQwen2DoubleSwiGLUConfig
    ffn_class = DoubleSwiGLU

    def __init__(self, config):
        super().__init__(config)
        self._replace_ffn()


class ZhQwen2SoftMoEForCausalLM(_ReplacedFFNMixin, Qwen2ForCausalLM):
    config_class = ZhQwen2SoftMoEConfig
    ffn_class = CausalSoftMoE

    def __init__(self, config):
        super().__init__(config)
        self._replace_ffn()


VARIANT_CLASSES = {
    "swiglu": (Qwen2Config, Qwen2ForCausalLM),
    "double_swiglu": (ZhQwen2DoubleSwiGLUConfig, ZhQwen2DoubleSwiGLUForCausalLM),
    "soft_moe": (ZhQwen2SoftMoEConfig, ZhQwen2SoftMoEForCausalLM),
}
_registered = False


def register_variants() -> None:
    """Make our model_types known to AutoConfig / AutoModelForCausalLM (idempotent, cheap)."""
    global _registered
    if _registered:
        return
    for cfg_cls, model_cls in list(VARIANT_CLASSES.values())[1:]:  # swiglu is transformers' own
        AutoConfig.register(cfg_cls.model_type, cfg_cls, exist_ok=True)
        AutoModelForCausalLM.register(cfg_cls, model_cls, exist_ok=True)
    _registered = True


def variant_of(hf_config) -> str:
    for name, (cfg_cls, _) in VARIANT_CLASSES.items():
        if hf_config.model_type == cfg_cls.model_type:
            return name
    raise ValueError(f"model_type '{hf_config.model_type}' is not one of our variants")


def config_from_dict(d: dict):
    """The HF config object for a config dict (e.g. one stored in a checkpoint), our variants included."""
    from transformers import CONFIG_MAPPING
    register_variants()
    return CONFIG_MAPPING[d["model_type"]].from_dict(d)


def build_model(hf_config, seed: int = 0, attn_implementation: str = "sdpa") -> nn.Module:
    """A freshly initialised model for `hf_config` (deterministic in `seed`), fp32 on CPU."""
    register_variants()
    _, model_cls = VARIANT_CLASSES[variant_of(hf_config)]
    torch.manual_seed(seed)
    hf_config._attn_implementation = attn_implementation
    return model_cls(hf_config)


def count_parameters(model: nn.Module, blocks_only: bool = False) -> int:
    """Unique parameters (tied weights once); `blocks_only` leaves out embedding and lm_head."""
    n, seen = 0, set()
    for name, p in model.named_parameters():
        if id(p) in seen or (blocks_only and ("embed_tokens" in name or "lm_head" in name)):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


# ---- loading and saving HF folders -------------------------------------------------------------
def check_weights(path: str | Path) -> None:
    """A local model folder must hold weights (transformers' own error for a bare folder is obscure).
    A path that is not a folder (a hub id) is left for from_pretrained to resolve."""
    p = Path(path)
    if p.is_dir() and not any(any(p.glob(pat)) for pat in WEIGHT_PATTERNS):
        raise RunError(f"{p} has no model weights (*.safetensors or pytorch_model*.bin)")


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, **from_pretrained_kwargs) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained(path)` for any of our variants (registered here)."""
    register_variants()
    check_weights(path)
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **from_pretrained_kwargs)
    except OSError as e:
        raise RunError(f"cannot load model {path}: {e}") from None


def load_tokenizer(path: str | Path):
    """The tokenizer of a model or data folder; a folder without tokenizer files is an error
    (transformers would silently return an empty tokenizer)."""
    from transformers import AutoTokenizer
    check_tokenizer_files(path)
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as e:
        raise RunError(f"cannot load the tokenizer of {path}: {e}") from None


def save_hf(out_dir: str | Path, model: nn.Module, tokenizer, *, tokenizer_dir: str | Path | None = None,
            fresh_generation_config: bool = False) -> Path:
    """Write an HF folder (weights, config, generation config, tokenizer) to `out_dir` atomically:
    it is written beside the target and renamed into place, so a crash never leaves half a model.

    eos/pad come from the tokenizer, into the model config and the generation config.
    `tokenizer_dir`: copy the tokenizer files from there byte-for-byte (so the folder's
    tokenizer_sha256 matches the data folder's) instead of `tokenizer.save_pretrained`; with
    `tokenizer=None` the tokenizer is read from there. `fresh_generation_config`: a model straight
    out of pretraining gets a new greedy generation config (256 new tokens) and its KV cache turned
    back on (training turned it off); otherwise the model's own generation config is updated.
    """
    out_dir = Path(out_dir)
    if tokenizer_dir is not None:
        tokenizer_dir = Path(tokenizer_dir)
        check_tokenizer_files(tokenizer_dir)
        if tokenizer is None:
            tokenizer = load_tokenizer(tokenizer_dir)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.config.eos_token_id = eos
    model.config.pad_token_id = pad
    if fresh_generation_config:
        from transformers import GenerationConfig
        model.config.use_cache = True
        model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=None,
                                                   do_sample=False, max_new_tokens=256)
    else:
        gc = model.generation_config
        gc.eos_token_id, gc.pad_token_id = eos, pad
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, tmp / name)
    else:
        tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
