"""Evaluate a model on a benchmark under a named protocol; write a result JSON and per-question
predictions.

MODEL is a run folder (writes <run>/eval/), an HF model folder or a hub id (writes
runs/eval/<model-slug>/). Outputs `<bench>.<protocol>.json` (written last, atomically) and
`<bench>.<protocol>.predictions.jsonl` (one line per question: prompt hash, choice scores or the
generated text, the extracted answer). An interrupted eval resumes from the predictions file.
Prompts longer than the model's context are fitted before any backend sees them (eval/context.py:
fewer shots, then a left cut); the run prints the counts and the result records them as `context`.

Run as:
    make eval BENCH=demo MODEL=runs/pretrain/demo-...                                  # CPU, built-in benchmark
    make eval BENCH=cmmlu MODEL=runs/sft/... DATA_DIR=../shared/data/cmmlu PROTOCOL=chat-0shot-gen
    python -m eval.run eval/benchmarks/ceval.yaml model=<dir> data_dir=../shared/data/ceval limit=5
    make eval BENCH=ceval MODEL=openbmb/MiniCPM-2B-sft-bf16 BACKEND=vllm                 # GPU, vLLM
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.benchmarks import BenchSpec, group_members, load_benchmark
from core.config import ConfigError, parse_args, to_dict
from core.errors import entrypoint
from core.results import RESULT_SCHEMA_VERSION, check_result, result_file_names, subset_label
from core.runs import (RunError, RunLock, RunOptions, atomic_write_json, atomic_write_text, git_info, now_iso,
                       resolve_model_dir, run_folder, sha256_file)
from eval.context import ContextFit, context_line, context_record, context_warning
from eval.metrics import accuracy, bootstrap_ci, group_accuracy
from eval.protocols import build_prompt, get_protocol, parse_answer


@dataclass
class EvalConfig:
    bench: BenchSpec = field(default_factory=BenchSpec)   # the benchmark (set by eval/benchmarks/<b>.yaml)
    model: str = ""                   # run folder | HF model folder | hub id
    protocol: str = "base-5shot-logits"  # base-5shot-logits | chat-0shot-gen | chat-0shot-cot | steel-compat
    data_dir: str = ""                # local copy in the official CSV layout; empty = built-in or hub
    subjects: list[str] = field(default_factory=list)  # evaluate only these subjects (empty = all)
    limit: int = 0                    # first N questions per subject (0 = all); the result says so
    backend: str = "hf"               # hf | vllm
    batch_size: int = 8               # questions per forward pass / generate call
    max_new_tokens: int = 0           # generation budget; 0 = the protocol's default
    max_len: int = 0                  # context length in tokens; 0 = the model's (eval/context.py: over-long prompts)
    device: str = "auto"              # auto | cpu | cuda
    dtype: str = "auto"               # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    prefix_cache: bool = True         # hf: reuse the few-shot prefix KV cache within a subject
    resume: bool = True               # continue from an existing predictions file
    bootstrap_samples: int = 1000     # resamples for the 95% confidence intervals
    seed: int = 1234                  # bootstrap and steel-compat random fallback
    out_dir: str = ""                 # override the output folder
    run: RunOptions = field(default_factory=RunOptions)   # run.root: where runs/eval/<model-slug>/ goes


# ---- model and output location -------------------------------------------------------------------
def model_slug(model: str) -> str:
    p = Path(model)
    name = f"{p.parent.name}-{p.name}" if p.name == "model" else (p.name if p.is_dir() else model.replace("/", "--"))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def params_from_safetensors(model_dir: Path) -> int | None:
    """Parameters of a model folder, read from its safetensors headers (no weights loaded)."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover
        return None
    files = sorted(model_dir.glob("*.safetensors")) if model_dir.is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def describe_model(model: str) -> tuple[Path, dict]:
    """(folder or hub id to load, the result's `model` record)."""
    if not model:
        raise RunError("no model given: make eval MODEL=<run folder | HF model folder | hub id>")
    path, manifest = resolve_model_dir(model)
    run_dir = run_folder(model) if manifest is not None else None     # <run> or <run>/model: the run
    # A run's name alone repeats across stages of one lineage (runs/sft/x, runs/dpo/x): name it stage/run.
    name = f"{manifest.get('stage', run_dir.parent.name)}/{run_dir.name}" if run_dir else model_slug(model)
    rec = {"name": name, "path": str(path),
           "run": str(run_dir) if run_dir else None,
           "manifest_sha256": sha256_file(run_dir / "manifest.json") if run_dir else None,
           "params": params_from_safetensors(path) if path.is_dir() else None}
    return path, rec


def output_dir(cfg: EvalConfig, rec: dict) -> Path:
    if cfg.out_dir:
        return Path(cfg.out_dir)
    if rec["run"]:
        return Path(rec["run"]) / "eval"
    return Path(cfg.run.root) / "eval" / model_slug(cfg.model)


def model_key(rec: dict, backend: str) -> str:
    """What a predictions line must match to be reused: the same model files, scored by the same
    backend (hf scores are logits, vLLM's log-probabilities: one file must not mix them)."""
    p = Path(rec["path"])
    if rec["manifest_sha256"]:
        return f"{backend}:{rec['manifest_sha256'][:16]}"
    weights = sorted(p.glob("*.safetensors")) if p.is_dir() else []
    files = [str(p.resolve()) if p.is_dir() else str(p)] + [f"{w.name}:{w.stat().st_size}" for w in weights]
    return f"{backend}:" + "|".join(files)


def select_questions(bench, limit: int) -> list:
    """The scored questions, or the first `limit` of each subject."""
    if limit <= 0:
        return list(bench.questions)
    seen: dict[str, int] = {}
    out = []
    for q in bench.questions:
        seen[q.subject] = seen.get(q.subject, 0) + 1
        if seen[q.subject] <= limit:
            out.append(q)
    return out


# ---- predictions file ----------------------------------------------------------------------------
def read_predictions(path: Path, protocol_tag: str, key: str) -> dict[str, dict]:
    """Finished lines by question id. A torn last line (a crash mid-write) is dropped; a line from
    another model, backend or protocol is an error (delete the file or pass resume=false). Lines of
    the same model written before the key named the backend are dropped from the file and scored
    again: which backend wrote them is unknown, and one file must not mix two."""
    done: dict[str, dict] = {}
    legacy = key.partition(":")[2]
    if not path.is_file():
        return done
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):       # torn last line: cut it so appends start clean
        data = data[:data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    kept, dropped = [], 0           # dropped: the number of the last legacy line (0: none, the file stays)
    for i, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise RunError(f"{path}:{i}: not valid JSON; delete the file or pass resume=false") from None
        if rec.get("protocol") == protocol_tag and rec.get("model_key") == legacy:
            dropped = i
            continue
        if rec.get("protocol") != protocol_tag or rec.get("model_key") != key:
            raise RunError(f"{path}:{i}: written for protocol {rec.get('protocol')} / another model or backend "
                           f"(key {rec.get('model_key')!r}, this run's {key!r}); delete it or pass resume=false")
        done[rec["id"]] = rec
        kept.append(line + "\n")
    if dropped:
        atomic_write_text(path, "".join(kept))
    return done


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---- the evaluation ------------------------------------------------------------------------------
def evaluate(cfg: EvalConfig, backend=None, quiet: bool = False) -> dict:
    """Run (or resume) one evaluation; returns the result dict (also written to disk)."""
    t0 = time.time()
    protocol = get_protocol(cfg.protocol)
    bench = load_benchmark(cfg.bench, cfg.data_dir or None, subjects=cfg.subjects or None,
                           with_shots=bool(protocol.shots))
    questions = select_questions(bench, cfg.limit)
    model_path, rec = describe_model(cfg.model)
    out = output_dir(cfg, rec)
    out.mkdir(parents=True, exist_ok=True)
    result_path, pred_path = (out / name for name in result_file_names(bench.spec.name, protocol.name))
    tag, key = f"{protocol.name}@{protocol.version}", model_key(rec, getattr(backend, "name", None) or cfg.backend)
    if result_path.exists():
        result_path.unlink()     # re-derived below; a stale result must not outlive a changed run
    if not cfg.resume and pred_path.exists():
        pred_path.unlink()
    done = read_predictions(pred_path, tag, key)

    def say(*a):
        if not quiet:
            print(*a, flush=True)
    say(f"eval {bench.spec.name} v{bench.spec.version} | protocol {tag} | model {cfg.model} | "
        f"{len(questions)} questions, {len(bench.subjects)} subjects | out {out}")
    for note in bench.notes:
        say(f"  note: {note}")
    if protocol.label:
        say(f"  {protocol.label}")

    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:     # every prompt is counted (and a chat prompt rendered) with the model's tokenizer
        from eval.backends.hf import load_tokenizer
        tokenizer = load_tokenizer(model_path)
    ctx, fitted = fit_prompts(cfg, protocol, bench, questions, tokenizer, model_path)
    context = context_record(ctx, [q.subject for q in questions], [fitted[q.id] for q in questions])
    say(f"  {context_line(context)}")
    if (warning := context_warning(context)) and not quiet:
        print(warning, file=sys.stderr, flush=True)
    todo_by_subject: dict[str, list] = {}
    for q in questions:
        prev = done.get(q.id)
        if prev is None or prev.get("prompt_sha256") != fitted[q.id].prompt.sha256:   # new, or the prompt changed
            todo_by_subject.setdefault(q.subject, []).append(q)
            done.pop(q.id, None)
    n_todo = sum(len(v) for v in todo_by_subject.values())
    if n_todo:
        say(f"  {len(questions) - n_todo} answered before (resumed), {n_todo} to go")
        if backend is None:
            backend = _make_backend(cfg, model_path, ctx.max_len)   # vLLM sizes its engine to it
        if rec["params"] is None and hasattr(backend, "num_params"):
            rec["params"] = backend.num_params()
        done.update(_score(cfg, protocol, bench, backend, todo_by_subject, fitted, pred_path, tag, key, quiet))
    t_model = time.time() - t0

    result = build_result(cfg, bench, protocol, questions, done, rec, getattr(backend, "name", cfg.backend),
                          pred_path.name, t_model)
    result["context"] = context
    check_result(result, str(result_path))   # the contract the leaderboard reads with (core/results.py)
    atomic_write_json(result_path, result)
    say(summary(result))
    say(f"wrote {result_path}")
    return result


def fit_prompts(cfg: EvalConfig, protocol, bench, questions: list, tokenizer, model_path) -> tuple[ContextFit, dict]:
    """(the context policy, each question's prompt fitted by it, by id): eval/context.py. Prefixes
    are memoised per (subject, shots), so a reduced-shot prefix is built once and shared by its
    questions like the full one (the hf backend then caches its KV state the same way)."""
    if cfg.max_len < 0:
        raise ConfigError(f"max_len must be a number of tokens (0 = the model's), got {cfg.max_len}")
    ctx = ContextFit.for_protocol(tokenizer, protocol, model_path, cfg.max_len, cfg.max_new_tokens)
    prefix_memo: dict = {}
    fitted = {}
    for q in questions:
        shots = bench.shots.get(q.subject, [])
        fitted[q.id] = ctx.fit(lambda k, q=q, shots=shots: build_prompt(
            protocol, bench.spec, bench.subjects, q, shots, tokenizer=tokenizer, prefix_cache=prefix_memo,
            n_shots=k), protocol.shots)
    return ctx, fitted


def build_result(cfg: EvalConfig, bench, protocol, questions: list, done: dict[str, dict], rec: dict,
                 backend_name: str, predictions: str, elapsed_s: float) -> dict:
    """The result file's content (core/results.py checks it) from the predictions lines (`done`,
    by question id) of the evaluated questions."""
    rows = [done[q.id] for q in questions]
    correct = [bool(r["correct"]) for r in rows]
    subj = [q.subject for q in questions]
    micro, macro, per = accuracy(correct, subj)
    for s, v in per.items():
        v["category"] = bench.subjects[s][2]
    partial = cfg.limit > 0 or bool(cfg.subjects)   # a LIMIT or subject list is not the benchmark
    return {
        "schema_version": RESULT_SCHEMA_VERSION, "benchmark": bench.spec.name,
        "benchmark_version": bench.spec.version, "split": bench.spec.split, "data_source": bench.data_source,
        "subset": subset_label(bench.subset, partial), "partial": partial,
        "n_subjects": len(per), "n_questions": len(rows),
        "n_unparsed": sum(1 for r in rows if r.get("pred") is None),
        "n_fallback": sum(1 for r in rows if r.get("fallback")),
        "protocol": {**protocol.record(), "shots": protocol.shots},
        "model": rec, "backend": backend_name,
        "acc_micro": micro, "acc_macro": macro,
        "ci95": bootstrap_ci(correct, subj, cfg.bootstrap_samples, cfg.seed),
        "per_subject": per, "per_category": group_accuracy(per, group_members(bench)),
        "git_sha": git_info().get("git_sha"), "date": now_iso(),
        "predictions": predictions, "notes": bench.notes,
        "limit_per_subject": cfg.limit or None, "elapsed_s": round(elapsed_s, 2),
        "config": {k: v for k, v in to_dict(cfg).items() if k not in ("bench", "run")},
    }


def _make_backend(cfg: EvalConfig, model_path, max_len: int = 0):
    from eval.backends import make_backend
    return make_backend(cfg.backend, model_path, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                        prefix_cache=cfg.prefix_cache, seed=cfg.seed, max_len=max_len)


def _score(cfg, protocol, bench, backend, todo_by_subject, fitted, pred_path, tag, key, quiet) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    new: dict[str, dict] = {}
    total = sum(len(v) for v in todo_by_subject.values())
    chunk = max(cfg.batch_size * 4, 1)     # questions per progress step and per append to the file
    max_new = cfg.max_new_tokens or protocol.max_new_tokens
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),  # pragma: no mutate
                  TextColumn("eta"), TimeRemainingColumn(), disable=quiet or not sys.stdout.isatty()) as bar:  # pragma: no mutate
        task = bar.add_task(f"{bench.spec.name}/{protocol.name}", total=total)  # pragma: no mutate
        # Questions of one subject that share a prefix (the same shots kept) are scored together,
        # so the backend runs each prefix once: reduced-shot prefixes are cached like the full one.
        groups = [g for qs in todo_by_subject.values() for g in _by_prefix(qs, fitted)]
        whole_run = getattr(backend, "whole_run", False)
        if whole_run:   # vLLM: one call, its engine batches and caches prefixes
            groups, chunk = [[q for g in groups for q in g]], max(total, 1)
        for qs in groups:
            for s in range(0, len(qs), chunk):
                part = qs[s:s + chunk]
                prompts = {q.id: fitted[q.id].prompt for q in part}
                rows = []
                if protocol.scoring == "logits":
                    if whole_run:
                        scores = backend.score_many([(prompts[q.id].prefix, prompts[q.id].suffix) for q in part])
                    else:
                        scores = backend.score_subject(prompts[part[0].id].prefix, [prompts[q.id].suffix for q in part])
                    for q, sc in zip(part, scores):
                        pred = "ABCD"[max(range(4), key=lambda i: sc[i])]
                        rows.append({"scores": [round(x, 5) for x in sc], "pred": pred, "fallback": None})
                else:
                    texts = backend.generate([prompts[q.id].text for q in part], max_new)
                    for q, text in zip(part, texts):
                        pred, fb = parse_answer(protocol, bench.spec, q, text, cfg.seed)
                        rows.append({"generated": text, "pred": pred, "fallback": fb})
                lines = []
                for q, r in zip(part, rows):
                    f = fitted[q.id]
                    line = {"id": q.id, "subject": q.subject, "prompt_sha256": f.prompt.sha256,
                            "prompt_tokens": f.tokens, "shots": f.shots, "fit": f.how,
                            "gold": q.answer, **r, "correct": r["pred"] == q.answer, "protocol": tag,
                            "model_key": key}
                    new[q.id] = line
                    lines.append(line)
                _append(pred_path, lines)
                bar.advance(task, len(part))  # pragma: no mutate
    return new


def _by_prefix(qs: list, fitted: dict) -> list[list]:
    groups: dict[str, list] = {}
    for q in qs:
        groups.setdefault(fitted[q.id].prompt.prefix, []).append(q)
    return list(groups.values())


def summary(result: dict) -> str:
    ci = result["ci95"]
    lines = [f"{result['benchmark']} | {result['protocol']['name']} | {result['model']['name']} | "
             f"acc_micro {100 * result['acc_micro']:.2f} [{100 * ci['micro'][0]:.1f}, {100 * ci['micro'][1]:.1f}] | "
             f"acc_macro {100 * result['acc_macro']:.2f} [{100 * ci['macro'][0]:.1f}, {100 * ci['macro'][1]:.1f}] | "
             f"n {result['n_questions']} | unparsed {result['n_unparsed']} | fallback {result['n_fallback']}"]
    for g, v in result["per_category"].items():
        lines.append(f"  {g:<16} {100 * v['acc']:6.2f}  (n {v['n']}, {v['n_subjects']} subjects)")
    return "\n".join(lines)


@entrypoint
def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_args(EvalConfig, argv, prog="eval.run")
    with RunLock(output_dir(cfg, describe_model(cfg.model)[1])):   # one eval writes a folder at a time
        return evaluate(cfg)


if __name__ == "__main__":
    main()
