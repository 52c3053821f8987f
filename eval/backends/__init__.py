"""Model backends for eval.run: `hf` (transformers, CPU or GPU) and `vllm` (GPU extra, imported lazily).

Both offer the same two calls:
    backend.score_subject(prefix, suffixes) -> [[logit_A, logit_B, logit_C, logit_D], ...]
    backend.generate(prompts, max_new_tokens) -> [generated text, ...]
"""
from __future__ import annotations

from core.config import ConfigError


def make_backend(name: str, model_path, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 prefix_cache: bool = True, seed: int = 0):
    """The backend `name`, given the settings it uses: hf runs on `device` in batches of
    `batch_size` with its own prefix cache; vLLM places, batches and caches by itself, and seeds
    its engine."""
    if name == "hf":
        from eval.backends.hf import HFBackend
        return HFBackend(model_path, device=device, dtype=dtype, batch_size=batch_size, prefix_cache=prefix_cache)
    if name == "vllm":
        from eval.backends.vllm import VLLMBackend
        return VLLMBackend(model_path, dtype=dtype, seed=seed)
    raise ConfigError(f"unknown backend {name!r} (hf | vllm)")
