"""Model backends for eval.run: `hf` (transformers, CPU or GPU) and `vllm` (GPU extra, imported lazily).

Both offer the same two calls:
    backend.score_subject(prefix, suffixes) -> [[logit_A, logit_B, logit_C, logit_D], ...]
    backend.generate(prompts, max_new_tokens) -> [generated text, ...]
"""
from __future__ import annotations


def make_backend(name: str, model_path, **kwargs):
    if name == "hf":
        from eval.backends.hf import HFBackend
        return HFBackend(model_path, **kwargs)
    if name == "vllm":
        from eval.backends.vllm import VLLMBackend
        return VLLMBackend(model_path, **kwargs)
    raise ValueError(f"unknown backend {name!r} (hf | vllm)")
