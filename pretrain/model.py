"""Pretraining's side of the model: named sizes, the HF config of a recipe's `model` section, the
FLOPs count for MFU, and the chunked lm_head + cross-entropy the training loop takes its loss from.

Sizes (one registry, `SIZES`): `debug` (tests, demo), `small_0p1b`, `base_0p5b`, `steel_1b`
(Steel-LLM's shape: hidden 1792, 18 layers, 32 heads). Embedding size follows the tokenizer.
The FFN variants themselves (`swiglu`, `double_swiglu`, `soft_moe`), building, loading and saving a
model live in core/models.py, which every stage imports.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from core.config import ConfigError
from core.models import FFN_VARIANTS, VARIANT_CLASSES


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
    # The demo curriculum (make demo / make showcase): ~0.8M and ~3.1M parameters in the blocks. Chosen by
    # measurement (README, demo section): the smallest that stores the demo world's facts in minutes.
    "demo": Size(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384, max_seq_len_tokens=1024),
    "demo_256": Size(hidden=256, layers=4, heads=8, kv_heads=4, intermediate=768, max_seq_len_tokens=1024),
    # ~0.1B with a 32k vocabulary (75M in the blocks).
    "small_0p1b": Size(hidden=768, layers=12, heads=12, kv_heads=4, intermediate=2048),
    # ~0.5B with a 64k vocabulary (0.36B in the blocks + 66M embedding, tied).
    "base_0p5b": Size(hidden=1024, layers=24, heads=16, kv_heads=4, intermediate=4096),
    # Steel-LLM's shape: hidden 1792, 18 layers, 32 heads (head_dim 56), full multi-head attention,
    # untied embeddings. ~0.9B with a 64k vocabulary, ~1.1B with Qwen's 152k one (Steel's).
    "steel_1b": Size(hidden=1792, layers=18, heads=32, kv_heads=32, intermediate=4864, tie_embeddings=False),
}


def model_config(model_cfg, vocab_size: int, pad_token_id: int | None = None,
                 eos_token_id: int | None = None):
    """The HF config for the `model` section of a pretraining recipe (see train.ModelOptions)."""
    if model_cfg.size not in SIZES:
        raise ConfigError(f"model.size '{model_cfg.size}' is not one of {', '.join(SIZES)}")
    if model_cfg.ffn not in FFN_VARIANTS:
        raise ConfigError(f"model.ffn '{model_cfg.ffn}' is not one of {', '.join(FFN_VARIANTS)}")
    size = SIZES[model_cfg.size]
    cfg_cls, _ = VARIANT_CLASSES[model_cfg.ffn]
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
                    t = t * keep                                      # ignored positions read target 0
                torch.mm(h[s:e], wt, out=logits[:r])
                if logits32 is not logits:
                    logits32[:r].copy_(logits[:r])
                torch.log_softmax(logits32[:r], dim=1, out=logp[:r])
                nll = logp[:r].gather(1, t[:, None]).squeeze(1)       # log p_target
                g = gbuf[s - gs:e - gs]
                if g.dtype == torch.float32:                          # d(sum CE)/d logits = softmax - onehot
                    torch.exp(logp[:r], out=g)
                else:                                                 # (exp straight into bf16: 2x slower on CPU)
                    g.copy_(logp[:r].exp_())
                g.scatter_(1, t[:, None], (nll.exp() - 1.0).to(g.dtype)[:, None])   # p_t - 1 before rounding
                if ignore_index is not None:
                    nll = nll * keep
                    g.mul_(keep[:, None])
                loss -= nll.sum()
            torch.mm(gbuf, w, out=grad_h[gs:ge])
            part = gbuf.t() @ h[gs:ge]                        # bf16 product, fp32 sum over groups
            grad_w = part.float() if grad_w is None else grad_w.add_(part)
        ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors       # autograd casts each to its input's dtype (validate_outputs)
        return grad_h * grad_loss, grad_w * grad_loss, None, None, None, None, None


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
