"""What tests/unit/test_mut_eval_run*.py share: a fake backend whose letter scores are a hash of the
prompt it is handed (every prediction depends on the exact prompt text), the config, and the demo
benchmark's prompts built independently of eval.run."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

import eval.backends.hf  # noqa: F401  (torch, transformers, core.models: imported once, see TOKENIZER)
import mut_support
import safetensors.torch  # noqa: F401  (params_from_safetensors reads the headers with framework="pt")
from core.benchmarks import load_benchmark, load_spec
from core.runs import RunError, env_info
from eval.extract import extract_choice
from eval.metrics import bootstrap_ci
from eval.protocols import build_prompt, get_protocol
from eval.run import EvalConfig, evaluate, model_key, read_predictions, select_questions

PROTO = "base-5shot-logits"

# Loaded when the module is imported: mutmut's fork server imports (collects) this file once and forks
# one child per mutant, so torch/transformers/trl and the tokenizer load once, not in every child (~6 s each).
env_info()               # imports trl, peft, datasets: a finished Run records their versions
TOKENIZER = mut_support.load_tokenizer()



@pytest.fixture(scope="module")
def tok():
    return TOKENIZER


@pytest.fixture(scope="module")
def model_dir():
    return mut_support.model_dir()


def letter_scores(text: str) -> list[float]:
    h = hashlib.sha256(text.encode("utf-8")).digest()
    return [h[i] / 255 for i in range(4)]


class Fake:
    name = "hf"

    def __init__(self, tok, crash_after: int | None = None):
        self.tokenizer, self.crash_after, self.calls, self.scored = tok, crash_after, [], 0

    def score_subject(self, prefix, suffixes):
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise RuntimeError("crash")
        self.calls.append(len(suffixes))
        self.scored += len(suffixes)
        return [letter_scores(prefix + s) for s in suffixes]

    def num_params(self):
        return 4321


class WholeRun(Fake):
    whole_run = True

    def score_many(self, pairs):
        self.calls.append(len(pairs))
        self.scored += len(pairs)
        return [letter_scores(p + s) for p, s in pairs]


def cfg(model_dir, out, **kw):
    kw = {"bootstrap_samples": 50, "max_len": 100_000, **kw}
    return EvalConfig(bench=load_spec("demo"), model=str(model_dir), protocol=kw.pop("protocol", PROTO),
                      out_dir=str(out), **kw)


def expected(tok, limit: int, protocol: str = PROTO) -> dict:
    """{id: (question, prompt)} of the first `limit` questions of each subject, prompts built directly."""
    bench, proto = load_benchmark("demo"), get_protocol(protocol)
    seen, out = {}, {}
    for q in bench.questions:
        seen[q.subject] = seen.get(q.subject, 0) + 1
        if seen[q.subject] <= limit:
            out[q.id] = (q, build_prompt(proto, bench.spec, bench.subjects, q, bench.shots.get(q.subject, []),
                                         tokenizer=tok))
    return out


def pred_path(out):
    return out / f"demo.{PROTO}.predictions.jsonl"
