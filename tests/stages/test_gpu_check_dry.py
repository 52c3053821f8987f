"""benchmarks/gpu_check.sh in its CPU dry mode (GPU_CHECK_DRY=1): the same five steps as on the lent
GPU at tiny sizes, so the one prepared GPU run cannot arrive broken. The carry is stood in for by a
tiny tokenizer folder (and one CMMLU subject when ../shared/data has it), so the carried paths run too.

What a dry run must show: every step ran; at most 8 files, flat, under $OUT; the FSDP2 (gloo) run
killed after step 13 resumed from the step-10 checkpoint with the losses of the uninterrupted run
(bitwise on CPU fp32); the MFU matrix ran our loop per micro-batch and the Trainer once; the eval
compared bf16 with fp32 (a non-zero |delta|: the two really differ) and every flip is a near-tie;
and no target is claimed met (a dry run measures none).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.runs import shared_data_root

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, tiny_tokenizer):
    tmp = tmp_path_factory.mktemp("gpu_check")
    carry = tmp / "carry"
    tiny_tokenizer.save_pretrained(carry / "tokenizer_32k")
    (carry / "tokenizer_32k" / "bench_tokenizer.json").write_text(json.dumps(
        {"source": "the tests' tiny tokenizer", "requested_vocab": 512, "vocab": len(tiny_tokenizer)}))
    cmmlu = shared_data_root() / "cmmlu"
    if (cmmlu / "test" / "agronomy.csv").is_file():
        for split in ("test", "dev"):
            (carry / "cmmlu" / split).mkdir(parents=True)
            shutil.copy(cmmlu / split / "agronomy.csv", carry / "cmmlu" / split)
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(tmp / "out"), "GPU_CHECK_CARRY": str(carry),
           "PY": sys.executable}     # the interpreter (and torch) this test runs under
    p = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    return p, tmp / "out"


def _load(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def test_every_step_runs_and_at_most_8_flat_files_come_back(dry_run):
    p, out = dry_run
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    files = sorted(x.name for x in out.iterdir())
    assert files == ["environment.json", "eval_parity.json", "gpu_check.log", "gpu_tests.log", "pretrain_gpu.json",
                     "resume.json", "summary.json"]
    assert all((out / f).is_file() for f in files)
    summary = _load(out, "summary.json")
    assert summary["dry"] is True and summary["elapsed_s"] < summary["budget_s"]
    assert {k: v["status"] for k, v in summary["steps"].items()} == dict.fromkeys(
        ["environment", "gpu_tests", "mfu", "resume", "eval_parity"], "ok")
    targets = summary["targets"]
    assert all(t["met"] is None and t["measured"] is not None for t in targets.values()), targets
    env = _load(out, "environment.json")
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and "tokenizer_32k" in env["carried"]
    assert "skipped" in (out / "gpu_tests.log").read_text()      # no CUDA here: the gpu tests skip
    assert "== summary" in (out / "gpu_check.log").read_text()


def test_resume_after_sigkill_matches_the_uninterrupted_run(dry_run):
    _, out = dry_run
    r = _load(out, "resume.json")
    assert r["killed_returncode"] != 0 and r["sigkilled"] and r["checkpoints_at_kill"] == ["step_000010"]
    assert r["resumed_from"] and r["as_planned"]
    assert "world 1, FSDP2 over gloo" in r["backend_line"]
    assert r["steps"] == list(range(1, 21)) and None not in r["losses_resumed"]
    assert r["bitwise_equal"] and r["max_abs_diff"] == 0.0      # CPU fp32: exactly the same numbers
    assert r["manifest_fsdp"] == {"mode": "always", "sharded": True} and r["exported"]


def test_mfu_matrix_runs_our_loop_per_micro_batch_and_trainer_once(dry_run, tiny_tokenizer):
    _, out = dry_run
    m = _load(out, "pretrain_gpu.json")
    assert [(r["micro_batch"], r["compile"]) for r in m["runs"]] == [(2, False), (4, False)]
    assert all(r["tok_per_s"] > 0 and 0 < r["mfu"] < 1 and "error" not in r for r in m["runs"])
    assert m["trainer"]["tok_per_s"] > 0 and m["ours_vs_trainer"] > 0
    assert m["tokenizer"]["vocab"] == m["model"]["tokenizer_vocab"] == len(tiny_tokenizer)
    assert m["tokenizer"]["source"].startswith("folder ") and m["model"]["params"] > 0
    assert m["peaks"]["table"]["source"] == "measured-matmul"    # CPU: no datasheet


def test_eval_parity_compares_bf16_with_fp32_on_the_same_questions(dry_run):
    _, out = dry_run
    e = _load(out, "eval_parity.json")
    assert e["fast"] == ["cpu", "bfloat16"] and e["reference"] == ["cpu", "float32"] and e["n_questions"] >= 12
    assert 0 < e["max_abs_delta_logsoftmax"] < 1 and 0.5 < e["agreement"] <= 1
    assert e["flips_within_rounding"] and len(e["flips"]) == round((1 - e["agreement"]) * e["n_questions"])
