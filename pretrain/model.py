"""Model definitions for pretraining: HF Qwen2 with named sizes and selectable FFN variants.

Sizes (one registry, `SIZES`): `debug` (tests, demo), `small_0p1b`, `base_0p5b`, `steel_1b`
(Steel-LLM's shape: hidden 1792, 18 layers, 32 heads). Embedding size follows the tokenizer.

FFN variants (`ffn` in the recipe):
- `swiglu`        Qwen2's own MLP. The model IS `Qwen2ForCausalLM`: the export loads with plain
                  transformers, no trust_remote_code, no import of this package.
- `double_swiglu` SENet-style double SwiGLU: a SwiGLU (gate/up/down) followed by a bottleneck
                  SwiGLU (gate/up/down, width hidden/se_reduction: SENet's "squeeze") whose output,
                  through 2*sigmoid, rescales the first one's output per channel ("excitation").
                  The 2x keeps the scale at 1 at initialisation.
- `soft_moe`      causal soft mixture of experts, see `CausalSoftMoE`.

The two non-standard variants are `ZhQwen2*ForCausalLM` subclasses of Qwen2ForCausalLM with their
own `model_type` ("zhllm_qwen2_doubleswiglu", "zhllm_qwen2_softmoe"), registered with AutoConfig /
AutoModelForCausalLM when this module is imported: `import pretrain.model` and then
`AutoModelForCausalLM.from_pretrained(folder)` works. Weight names elsewhere are Qwen2's.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM


@dataclasses.dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_seq_len_tokens: int = 4096
    tie_embeddings: bool = True


SIZES: dict[str, Size] = {
    # Tests and the CPU demo: a few hundred thousand parameters.
    "debug": Size(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, max_seq_len_tokens=1024),
    # ~0.1B with a 32k vocabulary (75M in the blocks).
    "small_0p1b": Size(hidden=768, layers=12, heads=12, kv_heads=4, intermediate=2048),
    # ~0.5B with a 64k vocabulary (0.36B in the blocks + 66M embedding, tied).
    "base_0p5b": Size(hidden=1024, layers=24, heads=16, kv_heads=4, intermediate=4096),
    # Steel-LLM's shape: hidden 1792, 18 layers, 32 heads (head_dim 56), full multi-head attention,
    # untied embeddings. ~0.9B with a 64k vocabulary, ~1.1B with Qwen's 152k one (Steel's).
    "steel_1b": Size(hidden=1792, layers=18, heads=32, kv_heads=32, intermediate=4864, tie_embeddings=False),
}

FFN_VARIANTS = ("swiglu", "double_swiglu", "soft_moe")


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


_VARIANT_CLASSES = {
    "swiglu": (Qwen2Config, Qwen2ForCausalLM),
    "double_swiglu": (ZhQwen2DoubleSwiGLUConfig, ZhQwen2DoubleSwiGLUForCausalLM),
    "soft_moe": (ZhQwen2SoftMoEConfig, ZhQwen2SoftMoEForCausalLM),
}

for _cfg_cls, _model_cls in list(_VARIANT_CLASSES.values())[1:]:
    AutoConfig.register(_cfg_cls.model_type, _cfg_cls, exist_ok=True)
    AutoModelForCausalLM.register(_cfg_cls, _model_cls, exist_ok=True)


def model_config(model_cfg, vocab_size: int, pad_token_id: int | None = None,
                 eos_token_id: int | None = None):
    """The HF config for the `model` section of a pretraining recipe (see train.ModelSection)."""
    if model_cfg.size not in SIZES:
        raise ValueError(f"model.size '{model_cfg.size}' is not one of {', '.join(SIZES)}")
    if model_cfg.ffn not in FFN_VARIANTS:
        raise ValueError(f"model.ffn '{model_cfg.ffn}' is not one of {', '.join(FFN_VARIANTS)}")
    size = SIZES[model_cfg.size]
    cfg_cls, _ = _VARIANT_CLASSES[model_cfg.ffn]
    extra = {}
    if model_cfg.ffn == "double_swiglu":
        extra = {"se_reduction": model_cfg.se_reduction}
    elif model_cfg.ffn == "soft_moe":
        extra = {"moe_num_experts": model_cfg.moe_num_experts,
                 "moe_slots_per_expert": model_cfg.moe_slots_per_expert,
                 "moe_expert_intermediate_size": model_cfg.moe_expert_intermediate_size}
    return cfg_cls(vocab_size=vocab_size, hidden_size=size.hidden, intermediate_size=size.intermediate,
                   num_hidden_layers=size.layers, num_attention_heads=size.heads,
                   num_key_value_heads=size.kv_heads, max_position_embeddings=size.max_seq_len_tokens,
                   tie_word_embeddings=size.tie_embeddings, rope_theta=model_cfg.rope_theta,
                   initializer_range=model_cfg.init_std, bos_token_id=None, eos_token_id=eos_token_id,
                   pad_token_id=pad_token_id, use_cache=False, **extra)


def build_model(hf_config, seed: int = 0, attn_implementation: str = "sdpa") -> nn.Module:
    """A freshly initialised model for `hf_config` (deterministic in `seed`), fp32 on CPU."""
    _, model_cls = _VARIANT_CLASSES[variant_of(hf_config)]
    torch.manual_seed(seed)
    hf_config._attn_implementation = attn_implementation
    return model_cls(hf_config)


def variant_of(hf_config) -> str:
    for name, (cfg_cls, _) in _VARIANT_CLASSES.items():
        if hf_config.model_type == cfg_cls.model_type:
            return name
    raise ValueError(f"model_type '{hf_config.model_type}' is not one of our variants")


def count_params(model: nn.Module, blocks_only: bool = False) -> int:
    """Unique parameters (tied weights once); `blocks_only` leaves out embedding and lm_head."""
    n, seen = 0, set()
    for name, p in model.named_parameters():
        if id(p) in seen or (blocks_only and ("embed_tokens" in name or "lm_head" in name)):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def flops_per_token(hf_config, n_block_params: int, seq_len: int) -> float:
    """Training FLOPs per token (PaLM appendix B): 6 x (block matmul params + the lm_head matmul)
    + 12 * layers * hidden * seq for attention scores. A soft-MoE block's per-token compute is
    p x its expert parameters; this counts parameters, so MFU is understated for p > 1."""
    matmul = n_block_params + hf_config.vocab_size * hf_config.hidden_size
    return 6.0 * matmul + 12.0 * hf_config.num_hidden_layers * hf_config.hidden_size * seq_len


_WORKSPACE: dict = {}


def _workspace(name: str, shape: tuple, dtype, device) -> torch.Tensor:
    """A buffer kept between calls. A fresh [rows, V] tensor per chunk costs page faults on every
    call (a first touch of 131 MB took 30 ms vs 3.4 ms for a reused one, on 2 CPU cores)."""
    n = math.prod(shape)
    key = (name, dtype, str(device), torch.is_inference_mode_enabled())  # inference tensors stay apart
    buf = _WORKSPACE.get(key)
    if buf is None or buf.numel() < n:
        buf = _WORKSPACE[key] = torch.empty(n, dtype=dtype, device=device)
    return buf[:n].view(shape)


def release_loss_buffers() -> None:
    """Free the buffers `linear_cross_entropy` keeps between calls (the end of a training run)."""
    _WORKSPACE.clear()


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i @ W^T, t_i) without fp32 [N, V] logits. Rows go `chunk_rows` at a time through
    logits in the compute dtype (bf16 under autocast, like the lm_head there), an fp32 log-softmax
    (like transformers' loss, which upcasts) and its gradient softmax - onehot, written straight
    (rounded to the compute dtype) into a buffer of `group_rows` rows whose two gradient matmuls
    (for h and W) run once per group, so the gradients are made in the forward pass and backward
    only scales them. The chunk and group buffers are reused between calls (`_workspace`). The
    standard path writes and re-reads fp32 [N, V] logits, their log-softmax and its gradient: the
    largest cost of a small model's step on CPU."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows, group_rows, compute_dtype, ignore_index):
        w = weight.to(compute_dtype)
        wt = w.t()
        h = hidden.to(compute_dtype)
        n, v, dev = h.shape[0], w.shape[0], h.device
        rows = min(chunk_rows, n)
        logits = _workspace("logits", (rows, v), compute_dtype, dev)
        logits32 = logits if compute_dtype == torch.float32 else _workspace("logits32", (rows, v), torch.float32, dev)
        logp = _workspace("logp", (rows, v), torch.float32, dev)
        arange = torch.arange(rows, device=dev)
        grad_h = torch.empty_like(h)
        grad_w = None
        loss = torch.zeros((), dtype=torch.float32, device=dev)
        for gs in range(0, n, group_rows):
            ge = min(gs + group_rows, n)
            gbuf = _workspace("grad", (ge - gs, v), compute_dtype, dev)
            for s in range(gs, ge, chunk_rows):
                e = min(s + chunk_rows, ge)
                r, t = e - s, targets[s:e]
                if ignore_index is not None:
                    keep = t != ignore_index
                    t = torch.where(keep, t, 0)
                torch.mm(h[s:e], wt, out=logits[:r])
                if logits32 is not logits:
                    logits32[:r].copy_(logits[:r])
                torch.log_softmax(logits32[:r], dim=-1, out=logp[:r])
                nll = logp[:r].gather(1, t[:, None]).squeeze(1)       # log p_target
                g = gbuf[s - gs:e - gs]
                if g.dtype == torch.float32:                          # d(sum CE)/d logits = softmax - onehot
                    torch.exp(logp[:r], out=g)
                else:                                                 # (exp straight into bf16: 2x slower on CPU)
                    g.copy_(logp[:r].exp_())
                g[arange[:r], t] = (nll.exp() - 1.0).to(g.dtype)      # p_t - 1 before rounding
                if ignore_index is not None:
                    nll = nll * keep
                    g.mul_(keep[:, None].to(g.dtype))
                loss -= nll.sum()
            torch.mm(gbuf, w, out=grad_h[gs:ge])
            part = gbuf.t() @ h[gs:ge]                        # bf16 product, fp32 sum over groups
            grad_w = part.float() if grad_w is None else grad_w.add_(part)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return ((grad_h * grad_loss).to(ctx.dtypes[0]), (grad_w * grad_loss).to(ctx.dtypes[1]),
                None, None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int | None = None, chunk_elements: int = 1 << 21,
                         group_elements: int = 1 << 27) -> torch.Tensor:
    """Summed cross-entropy of the logits `hidden @ weight.T` ([..., H] x [V, H]) against `targets`
    (positions equal to `ignore_index` left out), without fp32 logits of the whole batch; equals
    `F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")` up to float
    rounding (tests/unit/test_pretrain_model.py). Under autocast the matmuls run in its dtype.
    Softmax chunks hold ~`chunk_elements` logits but at least 256 rows (matmul efficiency; the
    best of 0.5-32M measured on 2 CPU cores), gradient groups ~`group_elements` (256 MB in bf16).
    Training only: the gradients are computed in the forward pass."""
    dev = hidden.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else hidden.dtype
    if weight.dtype != torch.float32:
        dtype = weight.dtype  # FSDP mixed precision hands out bf16 parameters
    v = weight.shape[0]
    chunk = max(256, chunk_elements // v)
    group = max(chunk, group_elements // v // chunk * chunk)
    return _LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                                     chunk, group, dtype, ignore_index)


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
