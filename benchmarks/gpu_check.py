"""The one prepared GPU check, for a lent machine as it really is (one H200, torch 2.11, transformers
5.17, no trl/datasets/vllm, no network; ../shared/notes/stack-facts.md). benchmarks/gpu_check.sh runs
it; read that script's header for the carry list and the command.

Five steps under one deadline (BUDGET_S; each step gets at most its cap and what is left), each
writing its file under $OUT as soon as it ends, and summary.json rewritten after every step, so a
run cut short still brings back what it measured:

    1 environment.json   nvidia-smi, torch / CUDA / NCCL / transformers versions, TF32, the MFU peaks
    2 gpu_tests.log      pytest -m gpu (tests/stages/test_pretrain_gpu.py, test_eval_vllm_gpu.py)
    3 pretrain_gpu.json  bf16 MFU + tokens/s of the ~0.5B size at seq 2048, micro-batches 8/16,
                         compile off/on, max_memory_allocated, one transformers-Trainer run
                         (benchmarks/pretrain_bench.py --matrix, the carried 32k tokenizer)
    4 resume.json        train.fsdp=always at world 1 (FSDP2 over NCCL, torchrun): 20 steps, a save
                         at 10, SIGKILL after 13, resume=auto, against an uninterrupted run
    5 eval_parity.json   the hf eval backend on CUDA bf16 vs CPU fp32, same model and questions:
                         agreement and max |delta| of the A-D log-softmax
    summary.json         every step's status and time, and the three targets: met, missed or unmeasured

(gpu_check.log, the whole console output, is written by the shell script: 7 files in all.)

GPU_CHECK_DRY=1 walks the same steps on CPU at tiny sizes (gloo instead of NCCL, bf16 vs fp32 on
the CPU for the eval, compile off only: compiling takes minutes on CPU), so
tests/stages/test_gpu_check_dry.py runs it in `make test` and the script cannot arrive broken.

Run as:
    bash benchmarks/gpu_check.sh                      # on the GPU machine (see its header)
    GPU_CHECK_DRY=1 OUT=/tmp/gc bash benchmarks/gpu_check.sh    # CPU, ~1 minute
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# tokenizer_32k/ and cmmlu/, made by `gpu_check.sh prepare` (GPU_CHECK_CARRY: elsewhere, for the dry-mode test)
CARRY = Path(os.environ.get("GPU_CHECK_CARRY") or ROOT / "runs" / "gpu_check")
DRY = os.environ.get("GPU_CHECK_DRY") == "1"
OUT = Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results" / "gpu")
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET_S", 450))   # gpu_check.sh kills at 470 s; the call allows 480
BF16_RTOL = 2.0 ** -8         # "within bf16 tolerance": one bf16 rounding step of the loss


@dataclass(frozen=True)
class Sizes:
    bench: list                 # benchmarks/pretrain_bench.py arguments (--matrix ...)
    resume: list                # pretrain.train arguments of the save/kill/resume runs
    eval_shape: dict            # Qwen2 shape of the eval model
    eval_subjects: int          # CMMLU subjects (carried copy), `eval_limit` questions each
    eval_limit: int
    caps: dict                  # seconds per step


GPU = Sizes(
    bench=["--configs", "base_0p5b_gpu", "--micro", "8,16", "--compile-modes", "off,on", "--warmup", "4"],
    resume=["model.size=small_0p1b", "data.seq_len_tokens=1024", "train.batch_size_tokens=16384",
            "train.micro_batch_size=8"],
    eval_shape=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    num_key_value_heads=4),
    eval_subjects=6, eval_limit=100,
    caps={"environment": 40, "gpu_tests": 90, "mfu": 220, "resume": 110, "eval_parity": 90})
DRY_SIZES = Sizes(
    bench=["--configs", "demo_debug", "--seq", "64", "--steps", "4", "--warmup", "2", "--micro", "2,4",
           "--compile-modes", "off"],
    resume=["model.size=debug", "data.seq_len_tokens=32", "train.batch_size_tokens=256", "train.micro_batch_size=4",
            "train.cpu_threads=1"],
    eval_shape=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2),
    eval_subjects=1, eval_limit=12,
    caps={"environment": 30, "gpu_tests": 60, "mfu": 90, "resume": 90, "eval_parity": 60})
SIZES = DRY_SIZES if DRY else GPU


class Check:
    """The summary and the deadline: `step` runs one step with its time cap and records the outcome."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.summary = {"dry": DRY, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "budget_s": BUDGET_S, "steps": {}, "targets": {}}

    def left(self) -> float:
        return BUDGET_S - (time.monotonic() - self.t0)

    def step(self, name: str, fn, *args) -> dict | None:
        cap = min(SIZES.caps[name], self.left())
        t = time.monotonic()
        print(f"\n== {name} (at most {cap:.0f} s)", flush=True)
        if cap < 10:
            rec, result = {"status": "skipped", "why": "out of time"}, None
        else:
            try:
                result = fn(cap, *args)
                rec = {"status": "ok", **(result or {}).get("summary", {})}
            except subprocess.TimeoutExpired as e:
                rec, result = {"status": "timeout", "why": f"over {e.timeout:.0f} s"}, None
            except (Exception, SystemExit) as e:   # noqa: BLE001 -- one failed step must not lose the others
                rec, result = {"status": "failed", "why": f"{type(e).__name__}: {str(e)[-600:]}"}, None
        rec["seconds"] = round(time.monotonic() - t, 1)
        self.summary["steps"][name] = rec
        print(f"-> {name}: {json.dumps(rec, ensure_ascii=False)[:400]}", flush=True)
        self.write()
        return result

    def write(self) -> None:
        from core.runs import atomic_write_json
        self.summary["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        atomic_write_json(OUT / "summary.json", self.summary)


def write_json(name: str, doc: dict) -> None:
    from core.runs import atomic_write_json
    atomic_write_json(OUT / name, doc)


def run(cmd: list[str], timeout: float, log: Path | None = None) -> subprocess.CompletedProcess:
    """A subprocess whose output goes to the console (gpu_check.log) and, if given, to `log`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    print("$ " + " ".join(cmd), flush=True)
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:     # killed: show what it printed before
        print(*(x.decode(errors="replace") if isinstance(x, bytes) else x for x in (e.stdout, e.stderr) if x))
        raise
    print(p.stdout + p.stderr, flush=True)
    if log is not None:
        log.write_text(p.stdout + p.stderr)
    return p


def demo_texts() -> list[str]:
    from data_recipes.demo_data import pretrain_corpus
    return [d for docs in pretrain_corpus().values() for d in docs]


def tokenizer(work: Path):
    """The carried 32k tokenizer, or (not carried) one trained on the demo corpus, which stops near 4k."""
    from transformers import AutoTokenizer
    if (CARRY / "tokenizer_32k" / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(CARRY / "tokenizer_32k"), str(CARRY / "tokenizer_32k")
    from data_recipes.tokenizer import build_tokenizer
    tok = build_tokenizer(demo_texts(), vocab_size=32000)
    return tok, f"demo corpus (not carried): {len(tok)} tokens"


# ---- the steps ------------------------------------------------------------------------------------
def environment(cap: float) -> dict:
    import torch
    import transformers

    from core.compat import cuda_matmul_tf32
    from pretrain.mfu import peak_flops
    smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=cap / 2) \
        if any((Path(d) / "nvidia-smi").exists() for d in os.environ.get("PATH", "").split(":")) else None
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    peaks = {mode: dict(zip(("value", "source"), peak_flops(device, torch.bfloat16, mode)))
             for mode in ("table", "measured")}
    doc = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "nccl": _nccl_version() if cuda else None,
           "transformers": transformers.__version__,
           "accelerate": _version("accelerate"), "trl": _version("trl"), "datasets": _version("datasets"),
           "device": torch.cuda.get_device_name(0) if cuda else "cpu",
           "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
           "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1) if cuda else None,
           "tf32_matmul": cuda_matmul_tf32(), "mfu_peaks_bf16": peaks,
           "carried": sorted(p.name for p in CARRY.iterdir()) if CARRY.is_dir() else [],
           "nvidia_smi": smi.stdout if smi else "nvidia-smi not found"}
    write_json("environment.json", doc)
    return {"summary": {k: doc[k] for k in ("device", "torch", "cuda", "nccl", "transformers")}
            | {"peak_table_tflops": round(peaks["table"]["value"] / 1e12, 1),
               "peak_measured_tflops": round(peaks["measured"]["value"] / 1e12, 1)}}


def _nccl_version() -> str:
    import torch
    v = torch.cuda.nccl.version()      # a tuple in recent torch, an int in older ones
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def _version(module: str):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def gpu_tests(cap: float) -> dict:
    p = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs",
             "tests/stages/test_pretrain_gpu.py", "tests/stages/test_eval_vllm_gpu.py"], cap, OUT / "gpu_tests.log")
    tail = [line for line in (p.stdout + p.stderr).strip().splitlines() if line.strip()]
    counts = tail[-1] if tail else ""
    if p.returncode not in (0, 5):         # 5: nothing collected
        raise RuntimeError(f"pytest exit {p.returncode}: {counts}")
    return {"summary": {"pytest": counts}}


def mfu(cap: float, work: Path) -> dict:
    tok_dir = CARRY / "tokenizer_32k"
    tok_args = ["--tokenizer", str(tok_dir)] if (tok_dir / "tokenizer.json").is_file() else \
        ["--corpus", "demo", "--vocab", "32000"]
    out = OUT / "pretrain_gpu.json"
    try:
        p = run([sys.executable, "benchmarks/pretrain_bench.py", "--matrix", *SIZES.bench, *tok_args,
                 "--out", str(out)], cap)
        if p.returncode != 0 or not out.is_file():
            raise RuntimeError(f"pretrain_bench exit {p.returncode}: {(p.stdout + p.stderr)[-600:]}")
    except subprocess.TimeoutExpired:
        if not out.is_file():
            raise
    doc = json.loads(out.read_text())     # rewritten after every run: what it measured before a time-out
    best = doc.get("best") or {}
    return {"summary": {"complete": doc["complete"], "best_mfu": best.get("mfu"),
                        "best_at": {k: best.get(k) for k in ("micro_batch", "compile")},
                        "tokenizer_vocab": doc["tokenizer"]["vocab"], "params": doc["model"]["params"],
                        "ours_vs_trainer": doc.get("ours_vs_trainer"),
                        "runs": [{k: r.get(k) for k in ("micro_batch", "compile", "tok_per_s", "mfu",
                                                         "max_memory_allocated_gib", "error")} for r in doc["runs"]]},
            "doc": doc}


def resume(cap: float, work: Path) -> dict:
    from core.log import read_metrics
    from pretrain.data import write_token_folder
    tok, tok_src = tokenizer(work)
    data = write_token_folder(work / "resume_data", tok, demo_texts(), num_shards=2)
    args = [*SIZES.resume, f"data.path={data}", f"run.root={work / 'runs'}", "train.max_steps=20",
            "train.save_every_steps=10", "train.log_every_steps=1", "train.fsdp=always", "optim.warmup_steps=5"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    deadline = time.monotonic() + cap
    logs = {}

    def launch(name, *extra, fault=None):
        target = ["tests/pretrain_faults.py", fault] if fault else ["-m", "pretrain.train"]
        p = run([*torchrun, *target, *args, f"run.name={name}", *extra], deadline - time.monotonic())
        logs[f"{name}{'-killed' if fault else ''}"] = {"returncode": p.returncode, "tail": (p.stdout + p.stderr)[-1500:]}
        return p

    killed = launch("resumed", fault="--kill-at-step=13")
    run_dir = work / "runs" / "pretrain" / "resumed"
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    resumed = launch("resumed", "resume=auto")
    reference = launch("reference", "export=false")
    if resumed.returncode or reference.returncode:
        raise RuntimeError(f"resumed exit {resumed.returncode}, reference exit {reference.returncode}: "
                           f"{(resumed.stderr or reference.stderr)[-600:]}")
    a = {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}
    b = {r["step"]: r["loss"] for r in read_metrics(work / "runs" / "pretrain" / "reference" / "metrics.jsonl")}
    steps = sorted(b)
    if set(a) != set(b):
        raise RuntimeError(f"the resumed run logged steps {sorted(a)}, the reference {steps}")
    diffs = [abs(a[s] - b[s]) for s in steps]
    rel = max(d / abs(b[s]) for d, s in zip(diffs, steps))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    killed_out = killed.stdout + killed.stderr
    doc = {"tokenizer": tok_src, "args": args, "killed_returncode": killed.returncode,
           "sigkilled": "Signal 9 (SIGKILL)" in killed_out or "exitcode  : -9" in killed_out,
           "checkpoints_at_kill": ckpts, "resumed_from": "resume from" in resumed.stdout,
           "backend_line": next((l for l in resumed.stdout.splitlines() if "FSDP2 over" in l), None),
           "steps": steps, "losses_resumed": [a[s] for s in steps], "losses_reference": [b[s] for s in steps],
           "bitwise_equal": all(a[s] == b[s] for s in steps), "max_abs_diff": max(diffs),
           "max_rel_diff": rel, "bf16_rtol": BF16_RTOL, "within_bf16_tolerance": rel <= BF16_RTOL,
           "manifest_fsdp": manifest.get("fsdp"), "exported": (run_dir / "model" / "model.safetensors").is_file(),
           "logs": logs}
    # The comparison means something only if the run really died after the step-10 save and resumed from it.
    doc["as_planned"] = doc["sigkilled"] and ckpts == ["step_000010"] and doc["resumed_from"]
    write_json("resume.json", doc)
    return {"summary": {k: doc[k] for k in ("as_planned", "checkpoints_at_kill", "backend_line", "bitwise_equal",
                                            "max_abs_diff", "max_rel_diff", "within_bf16_tolerance", "exported")},
            "doc": doc}


def eval_parity(cap: float, work: Path) -> dict:
    """The same model and questions through eval.run (hf backend) twice: CUDA bf16 and CPU fp32.
    In this process (`cap` is not enforced here: the shell script's limit is the backstop)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from eval.run import main as eval_main
    tok, tok_src = tokenizer(work)
    torch.manual_seed(0)
    # Init std 0.2, as benchmarks/eval_bench.py: at 0.02 a random model picks one letter for nearly
    # every question and agreement would measure nothing.
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), max_position_embeddings=4096, tie_word_embeddings=True,
                                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                         initializer_range=0.2, **SIZES.eval_shape))
    model.save_pretrained(work / "eval_model")
    tok.save_pretrained(work / "eval_model")
    cmmlu = CARRY / "cmmlu"
    if (cmmlu / "test").is_dir():
        subjects = sorted(p.stem for p in (cmmlu / "test").glob("*.csv"))[:SIZES.eval_subjects]
        bench = ["eval/benchmarks/cmmlu.yaml", f"data_dir={cmmlu}", f"subjects=[{','.join(subjects)}]",
                 f"limit={SIZES.eval_limit}"]
    else:
        bench = ["eval/benchmarks/demo.yaml"] + ([f"limit={SIZES.eval_limit}"] if DRY else [])
    fast = ("cuda", "bfloat16") if torch.cuda.is_available() else ("cpu", "bfloat16")
    scores = {}
    for device, dtype in (fast, ("cpu", "float32")):
        out = work / f"eval_{device}_{dtype}"
        res = eval_main([*bench, f"model={work / 'eval_model'}", f"out_dir={out}", "backend=hf", f"device={device}",
                         f"dtype={dtype}", "bootstrap_samples=10", "resume=false"])
        rows = [json.loads(l) for l in (out / res["predictions"]).read_text().splitlines()]
        scores[(device, dtype)] = {r["id"]: (r["pred"], r["scores"]) for r in rows}
    fast_rows, ref_rows = scores[fast], scores[("cpu", "float32")]
    ids = sorted(ref_rows)
    lsm = lambda s: torch.log_softmax(torch.tensor(s, dtype=torch.float64), -1)  # noqa: E731
    deltas = [float((lsm(fast_rows[i][1]) - lsm(ref_rows[i][1])).abs().max()) for i in ids]
    max_delta = max(deltas)
    flips = [i for i in ids if fast_rows[i][0] != ref_rows[i][0]]
    margin = {i: float(torch.topk(lsm(ref_rows[i][1]), 2).values.diff().abs()) for i in ids}
    doc = {"bench": bench, "tokenizer": tok_src, "model_shape": SIZES.eval_shape, "fast": list(fast),
           "reference": ["cpu", "float32"], "n_questions": len(ids),
           "agreement": 1 - len(flips) / len(ids), "max_abs_delta_logsoftmax": max_delta,
           "mean_abs_delta_logsoftmax": sum(deltas) / len(deltas),
           # A flip where fp32's top-2 margin exceeds twice the largest bf16 error would be a real bug.
           "flips": [{"id": i, "fp32_margin": margin[i]} for i in flips],
           "flips_within_rounding": all(margin[i] <= 2 * max_delta for i in flips),
           "pred_counts_fp32": {c: sum(ref_rows[i][0] == c for i in ids) for c in "ABCD"}}
    write_json("eval_parity.json", doc)
    return {"summary": {k: doc[k] for k in ("n_questions", "agreement", "max_abs_delta_logsoftmax",
                                            "flips_within_rounding", "fast")}, "doc": doc}


def targets(results: dict) -> dict:
    """The three targets of issue #14, each met, missed or unmeasured (null: a dry run, or no GPU)."""
    import torch
    on_gpu = torch.cuda.is_available() and not DRY

    def verdict(measured, ok):
        return {"measured": measured, "met": bool(ok) if on_gpu and measured is not None else None}
    m = (results.get("mfu") or {}).get("doc") or {}
    r = (results.get("resume") or {}).get("doc") or {}
    e = (results.get("eval_parity") or {}).get("doc") or {}
    best = (m.get("best") or {}).get("mfu")
    return {"bf16_mfu_0p5b": {"target": ">= 0.45", **verdict(best, best is not None and best >= 0.45)},
            "resume": {"target": "bitwise, or within bf16 tolerance (rtol 2^-8)",
                       **verdict(r.get("max_rel_diff"), r.get("as_planned") and (
                           r.get("bitwise_equal") or r.get("within_bf16_tolerance")))},
            "cuda_vs_cpu_eval_agreement": {"target": ">= 0.99", **verdict(e.get("agreement"),
                                                                          (e.get("agreement") or 0) >= 0.99)}}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    check = Check()
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        work = Path(work)
        results["environment"] = check.step("environment", environment)
        results["gpu_tests"] = check.step("gpu_tests", gpu_tests)
        results["mfu"] = check.step("mfu", mfu, work)
        results["resume"] = check.step("resume", resume, work)
        results["eval_parity"] = check.step("eval_parity", eval_parity, work)
    check.summary["targets"] = targets(results)
    check.write()
    print("\n== summary\n" + json.dumps(check.summary, indent=1, ensure_ascii=False))
    print(f"\nfiles under {OUT}: {', '.join(sorted(p.name for p in OUT.iterdir()))}")
    return 0 if all(s["status"] == "ok" for s in check.summary["steps"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
