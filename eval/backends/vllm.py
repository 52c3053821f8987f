"""The vLLM backend (GPU only; `make setup-vllm`): automatic prefix caching for the few-shot prefix,
A-D log-probabilities for the logit protocols, greedy generation for the chat and CoT protocols.

vLLM is imported only when this backend is built. Requests are built from token ids made by the
model's own tokenizer (the same ids the hf backend scores), and the request building and output
parsing are plain functions, unit-tested on CPU with stand-in output objects.

Letter scores: one generated token with `allowed_token_ids` = the four letter ids and the engine
set to return processed log-probabilities (`logprobs_mode="processed_logprobs"`), so the top-4
log-probabilities are exactly the four letters. Log-probabilities differ from logits by a per-row
constant, so the argmax (the prediction) is the same as the hf backend's.

Run as (GPU):
    make setup-vllm && make eval BENCH=cmmlu MODEL=openbmb/MiniCPM-2B-sft-bf16 DATA_DIR=... BACKEND=vllm
"""
from __future__ import annotations

import math

from core.runs import RunError
from eval.backends.hf import bos_ids, letter_token_ids, load_tokenizer


def logit_requests(tokenizer, prefix: str, suffixes: list[str]) -> list[dict]:
    """vLLM `TokensPrompt`s (plain dicts) for prefix+suffix, the same ids the hf backend scores; the
    shared prefix tokens are what vLLM's prefix cache reuses across the subject."""
    bos = bos_ids(tokenizer)
    return [{"prompt_token_ids": bos + tokenizer.encode(prefix + s, add_special_tokens=False)} for s in suffixes]


def logit_sampling_kwargs(letter_ids: list[int]) -> dict:
    return {"max_tokens": 1, "temperature": 0.0, "logprobs": len(letter_ids), "allowed_token_ids": list(letter_ids)}


def generation_sampling_kwargs(max_new_tokens: int, stop_token_ids: list[int]) -> dict:
    return {"max_tokens": int(max_new_tokens), "temperature": 0.0, "stop_token_ids": list(stop_token_ids),
            "skip_special_tokens": True}


def parse_letter_logprobs(output, letter_ids: list[int]) -> list[float]:
    """[logprob_A, .., logprob_D] from one `RequestOutput`; a letter vLLM did not return is -inf."""
    comp = output.outputs[0]
    if not comp.logprobs:
        raise RunError("vLLM returned no logprobs; was SamplingParams.logprobs set?")
    step = comp.logprobs[0]   # {token_id: Logprob(logprob=..)} for the first generated token
    scores = []
    for tid in letter_ids:
        lp = step.get(tid)
        val = getattr(lp, "logprob", lp)
        scores.append(float(val) if val is not None and math.isfinite(float(val)) else float("-inf"))
    return scores


def parse_generation(output) -> str:
    return output.outputs[0].text


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_path, dtype: str = "auto", seed: int = 0, max_model_len: int = 4096,
                 gpu_memory_utilization: float = 0.85):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise RunError("backend=vllm needs the vllm extra on a GPU machine: make setup-vllm") from None
        self._SamplingParams = SamplingParams
        self.tokenizer = load_tokenizer(model_path)   # checks the folder: weights and tokenizer files
        self.letter_ids = letter_token_ids(self.tokenizer)
        self.llm = LLM(model=str(model_path), dtype=dtype, seed=seed, enable_prefix_caching=True,
                       max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                       logprobs_mode="processed_logprobs")
        tok = self.tokenizer
        self.stop_ids = [t for t in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
                         if isinstance(t, int) and t >= 0]

    def score_subject(self, prefix: str, suffixes: list[str]) -> list[list[float]]:
        params = self._SamplingParams(**logit_sampling_kwargs(self.letter_ids))
        outs = self.llm.generate(logit_requests(self.tokenizer, prefix, suffixes), params, use_tqdm=False)
        return [parse_letter_logprobs(o, self.letter_ids) for o in outs]

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        params = self._SamplingParams(**generation_sampling_kwargs(max_new_tokens, self.stop_ids))
        reqs = [{"prompt_token_ids": self.tokenizer.encode(p, add_special_tokens=False)} for p in prompts]
        return [parse_generation(o) for o in self.llm.generate(reqs, params, use_tqdm=False)]

    def num_params(self) -> int | None:
        return None
