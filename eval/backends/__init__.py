"""Model backends for eval.run: `hf` (transformers, CPU or GPU) and `vllm` (vLLM on GPU or CPU, in
its own venv `.venv-vllm`, imported lazily).

Both offer the same two calls:
    backend.score_subject(prefix, suffixes) -> [[score_A, score_B, score_C, score_D], ...]
    backend.generate(prompts, max_new_tokens) -> [generated text, ...]
(hf scores are logits, vLLM's log-probabilities: the same argmax). A backend with `whole_run = True`
(vLLM) also has `score_many([(prefix, suffix), ...])` and gets every question of a run in one call.
"""
from __future__ import annotations

from core.config import ConfigError


def make_backend(name: str, model_path, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 prefix_cache: bool = True, seed: int = 0, max_len: int = 0):
    """The backend `name`, given the settings it uses: hf runs on `device` in batches of
    `batch_size` with its own prefix cache; vLLM places, batches and caches by itself, seeds its
    engine and sizes it to the eval's context length `max_len` (eval/context.py; 0 = the model's)."""
    if name == "hf":
        from eval.backends.hf import HFBackend
        return HFBackend(model_path, device=device, dtype=dtype, batch_size=batch_size, prefix_cache=prefix_cache)
    if name == "vllm":
        from eval.backends.vllm import VLLMBackend
        return VLLMBackend(model_path, dtype=dtype, seed=seed, device=device, max_model_len=max_len)
    raise ConfigError(f"unknown backend {name!r} (hf | vllm)")
