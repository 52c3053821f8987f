"""The vLLM side of the parity tests (tests/stages/test_eval_vllm_parity.py), run with .venv-vllm's
python: one vLLM engine evaluates a model on the built-in demo benchmark under both kinds of
protocol, as it is and with a fault injected (the hooks live here, not in product code), through
the ordinary `eval.run.evaluate`:

    plain    the backend as it is
    shift    every prompt loses its last token: the letters are scored (or generation starts) one
             position early
    permute  the letters are swapped A<->B, C<->D: the letter token ids in that order (logits), the
             letters in the generated text (generation)

Writes <out>/<variant>/demo.<protocol>.predictions.jsonl and <out>/driver.json (timings, and vLLM's
own list of CPU attention head sizes against ours).

Run as (repo root; PYTHONPATH=.):
    .venv-vllm/bin/python tests/vllm_parity_driver.py <model dir> <out dir> [protocol ...]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

SWAP = str.maketrans("ABCD", "BADC")


class Shifted:
    """The backend scoring/generating one token early."""
    name, whole_run = "vllm", True

    def __init__(self, inner):
        self.inner, self.tokenizer = inner, inner.tokenizer

    def score_many(self, pairs):
        from eval.backends.vllm import logit_requests, logit_sampling_kwargs, parse_letter_logprobs
        reqs = [{"prompt_token_ids": r["prompt_token_ids"][:-1]} for r in logit_requests(self.tokenizer, pairs)]
        params = self.inner._SamplingParams(**logit_sampling_kwargs(self.inner.letter_ids))
        return [parse_letter_logprobs(o, self.inner.letter_ids) for o in self.inner._run(reqs, params)]

    def generate(self, prompts, max_new_tokens):
        from eval.backends.vllm import generation_sampling_kwargs, parse_generation
        reqs = [{"prompt_token_ids": self.tokenizer.encode(p, add_special_tokens=False)[:-1]} for p in prompts]
        params = self.inner._SamplingParams(**generation_sampling_kwargs(max_new_tokens, self.inner.stop_ids))
        return [parse_generation(o, self.tokenizer) for o in self.inner._run(reqs, params)]


class Permuted:
    """The backend with the letters swapped A<->B, C<->D."""
    name, whole_run = "vllm", True

    def __init__(self, inner):
        self.inner, self.tokenizer = inner, inner.tokenizer

    def score_many(self, pairs):
        ids = self.inner.letter_ids
        self.inner.letter_ids = [ids[1], ids[0], ids[3], ids[2]]
        try:
            return self.inner.score_many(pairs)
        finally:
            self.inner.letter_ids = ids

    def generate(self, prompts, max_new_tokens):
        return [t.translate(SWAP) for t in self.inner.generate(prompts, max_new_tokens)]


def main(model_dir: str, out: str, protocols: list[str]) -> dict:
    from core.config import parse_args
    from eval.backends.vllm import CPU_HEAD_SIZES, VLLMBackend
    from eval.run import EvalConfig, evaluate
    out_dir = Path(out)
    t0 = time.time()
    backend = VLLMBackend(model_dir)
    report = {"engine_start_s": round(time.time() - t0, 2), "runs": {}}
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
        report["cpu_head_sizes"] = {"vllm": list(CPUAttentionBackend.get_supported_head_sizes()),
                                    "ours": list(CPU_HEAD_SIZES)}
        for protocol in protocols:
            for variant, be in (("plain", backend), ("shift", Shifted(backend)), ("permute", Permuted(backend))):
                cfg, _ = parse_args(EvalConfig, ["eval/benchmarks/demo.yaml", f"model={model_dir}", f"protocol={protocol}",
                                                 f"out_dir={out_dir / variant}", "resume=false", "bootstrap_samples=10"])
                t1 = time.time()
                r = evaluate(cfg, backend=be, quiet=True)
                report["runs"][f"{protocol}/{variant}"] = {"s": round(time.time() - t1, 2), "n": r["n_questions"],
                                                           "backend": r["backend"], "predictions": r["predictions"]}
    finally:
        backend.close()
    (out_dir / "driver.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:] or ["base-5shot-logits", "chat-0shot-gen"])
