"""The calls whose spelling differs across the supported stack: torch 2.11-2.13 and transformers
5.17-5.24 (5.24 is what `make setup` installs; the lent GPU machine has torch 2.11 and
transformers 5.17, see ../shared/notes/stack-facts.md). Every stage goes through these shims instead of
calling the newer spelling directly.

Each shim probes the API it needs (an attribute, a signature, a dataclass field), never a version
number, so a backport or a remote-code model takes the right branch too. What differs, read from
the sources of transformers 5.17.0 and 5.24.0 (a diff of the public signatures of PreTrainedModel,
Qwen2ForCausalLM, Qwen2Model, Trainer and TrainingArguments; nothing else the project calls changed)
and located in the releases between them:

- `activation_checkpointing_enable(activation_checkpointing_kwargs=...)` is 5.23+;
  before it only `gradient_checkpointing_enable(gradient_checkpointing_kwargs=...)` exists (5.24
  keeps that name as a deprecated alias that warns)                 -> enable_activation_checkpointing
- TrainingArguments' `activation_checkpointing` field is 5.23+; before it is `gradient_checkpointing`
  (TRL's SFTConfig/DPOConfig/GRPOConfig inherit whichever the installed transformers has; passing
  the new name to 5.17 is a TypeError)                              -> checkpointing_argument
- the decoder's `past_key_values=` keyword and the outputs' `.past_key_values` became `cache=` and
  `.cache` in 5.24 (models with remote code keep the old names)   -> cache_keyword, output_cache
- torch 2.9+ reads TF32 from `torch.backends.cuda.matmul.fp32_precision` ("none" = the legacy
  `allow_tf32` / `set_float32_matmul_precision` settings decide)   -> cuda_matmul_tf32

tests/unit/test_compat.py runs each shim against stand-ins of both spellings, and against the
installed transformers; the pretraining, export, hf-eval, SFT, DPO and GRPO tests pass on
transformers 5.17.0 as well (see benchmarks/RESULTS.md, GPU section).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

# torch.utils.checkpoint's default (reentrant) variant is deprecated and breaks with FSDP2 and
# torch.compile; both transformers spellings default to this too, but only when given nothing.
CHECKPOINT_DEFAULTS = {"use_reentrant": False}


def enable_activation_checkpointing(model, **checkpoint_kwargs: Any) -> str:
    """Recompute each decoder block in backward; returns the method that did it (for logs/tests).
    `checkpoint_kwargs` go to torch.utils.checkpoint.checkpoint (default use_reentrant=False)."""
    kwargs = {**CHECKPOINT_DEFAULTS, **checkpoint_kwargs}
    if callable(getattr(model, "activation_checkpointing_enable", None)):      # transformers >= 5.23
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        return "activation_checkpointing_enable"
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # transformers < 5.23
    return "gradient_checkpointing_enable"


def checkpointing_argument(args_cls, enabled: bool) -> dict[str, bool]:
    """The keyword that switches activation checkpointing on `args_cls` (TrainingArguments or a TRL
    config subclassing it), as a dict to splice into its constructor call: `**checkpointing_argument(...)`."""
    names = {f.name for f in dataclasses.fields(args_cls)}
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        if name in names:
            return {name: bool(enabled)}
    raise TypeError(f"{args_cls.__name__} has neither activation_checkpointing nor gradient_checkpointing")


def cache_keyword(module) -> str:
    """The name under which `module.forward` takes a KV cache: `cache` (transformers >= 5.24's own
    models) or `past_key_values` (before, and remote-code models)."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(output):
    """The KV cache a forward with use_cache=True returned, under either name (None if absent)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def cuda_matmul_tf32() -> bool:
    """Whether CUDA fp32 matmuls currently run on TF32 tensor cores (decides the fp32 MFU peak).
    Off unless someone switched it on: PyTorch's default, and this project never does."""
    import torch
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)           # torch >= 2.9
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    try:
        legacy = bool(matmul.allow_tf32)
    except RuntimeError:   # torch refuses to read the legacy flag once the two APIs were mixed
        legacy = False
    return legacy or torch.get_float32_matmul_precision() != "highest"
