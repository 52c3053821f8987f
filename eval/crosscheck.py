"""Cross-check our base-5shot-logits scores against lm-evaluation-harness on the same model and the
same questions.

Writes one local lm-eval task per subject (`dataset_path: json` over JSONL files holding exactly
our questions and our dev shots in order, `fewshot_config.sampler: first_n`, our header as the
`description`, `target_delimiter: ""` so the scored continuation is the bare letter after "答案："),
runs `lm_eval.simple_evaluate` with its HF backend, and compares per question: both accuracies and
the share of identical predictions (target >= 99%). Output: `<out>/<bench>.crosscheck.json`.

Run as:
    make eval-crosscheck BENCH=cmmlu MODEL=runs/pretrain/... DATA_DIR=../shared/data/cmmlu ARGS="limit=10"   # CPU
    make eval-crosscheck BENCH=ceval MODEL=openbmb/MiniCPM-2B-sft-bf16 DATA_DIR=... ARGS="device=cuda"       # GPU
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.benchmarks import load_benchmark
from core.config import ConfigError, parse_args
from core.errors import entrypoint
from core.runs import atomic_write_json
from eval.backends.hf import bos_ids, load_tokenizer
from eval.protocols import get_protocol
from eval.run import EvalConfig, describe_model, evaluate, output_dir, select_questions


@dataclass
class CrosscheckConfig(EvalConfig):
    lmeval_batch_size: int = 8         # lm-eval HF backend batch size
    keep_tasks: bool = False           # keep the generated task folder (printed) for inspection


def write_tasks(bench, questions, folder: Path, n_shots: int) -> list[str]:
    """One lm-eval task YAML + dev/test JSONL per subject; returns the task names."""
    by: dict[str, list] = {}
    for q in questions:
        by.setdefault(q.subject, []).append(q)
    names = []
    for subject, qs in by.items():
        d = folder / subject
        d.mkdir(parents=True, exist_ok=True)
        for split, rows in (("dev", bench.shots[subject][:n_shots]), ("test", qs)):
            with open(d / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for q in rows:
                    f.write(json.dumps({"id": q.id, "question": q.question, "A": q.choices[0], "B": q.choices[1],
                                        "C": q.choices[2], "D": q.choices[3], "answer": q.answer},
                                       ensure_ascii=False) + "\n")
        en, zh = bench.subjects[subject][:2]
        name = f"zhk_{bench.spec.name}_{subject}"
        task = {
            "task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"dev": str(d / "dev.jsonl"), "test": str(d / "test.jsonl")}},
            "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
            "num_fewshot": n_shots, "output_type": "multiple_choice",
            "description": bench.spec.instruction.format(subject_zh=zh, subject_en=en),
            "doc_to_text": "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n" + bench.spec.answer_prefix,
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer)}}",
            "target_delimiter": "", "fewshot_delimiter": "\n\n",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }
        (d / f"{name}.yaml").write_text(yaml.safe_dump(task, allow_unicode=True, sort_keys=False), encoding="utf-8")
        names.append(name)
    return names


def lmeval_predictions(model, tasks: list[str], include_path: Path, n_shots: int, device: str,
                       batch_size: int, add_bos: bool, tokenizer=None) -> dict[str, str]:
    """{question id: predicted letter} from lm-eval's HF backend (argmax of the 4 log-likelihoods)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    if isinstance(model, (str, Path)):
        model_arg, model_args = "hf", {"pretrained": str(model), "dtype": "float32", "device": device,
                                       "batch_size": batch_size, "add_bos_token": add_bos}
    else:   # an already-built lm_eval HFLM (the benchmark passes one)
        model_arg, model_args = model, None
    out = lm_eval.simple_evaluate(model=model_arg, model_args=model_args, tasks=tasks, num_fewshot=n_shots,
                                  task_manager=TaskManager(include_path=str(include_path), include_defaults=False),
                                  log_samples=True,
                                  bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                                  fewshot_random_seed=0)
    preds = {}
    for task, samples in out["samples"].items():
        for s in samples:
            ll = [r[0] for r in s["filtered_resps"]]
            preds[s["doc"]["id"]] = "ABCD"[max(range(len(ll)), key=lambda i: ll[i])]
    return preds


def crosscheck(cfg: CrosscheckConfig) -> dict:
    if cfg.protocol != "base-5shot-logits":
        raise ConfigError("the cross-check compares base-5shot-logits (lm-eval's few-shot multiple choice)")
    protocol = get_protocol(cfg.protocol)
    t0 = time.time()
    ours = evaluate(cfg)
    t_ours = time.time() - t0
    model_path, rec = describe_model(cfg.model)
    pred_file = output_dir(cfg, rec) / ours["predictions"]
    our_rows = {json.loads(l)["id"]: json.loads(l) for l in pred_file.read_text(encoding="utf-8").splitlines() if l.strip()}
    bench = load_benchmark(cfg.bench, cfg.data_dir or None, subjects=cfg.subjects or None)
    questions = select_questions(bench, cfg.limit)
    tmp = Path(tempfile.mkdtemp(prefix="zhk-lmeval-"))
    tasks = write_tasks(bench, questions, tmp, protocol.shots)
    add_bos = bool(bos_ids(load_tokenizer(model_path)))
    t1 = time.time()
    theirs = lmeval_predictions(model_path, tasks, tmp, protocol.shots, "cuda" if cfg.device == "cuda" else "cpu",
                                cfg.lmeval_batch_size, add_bos)
    t_lm = time.time() - t1
    shared = [q for q in questions if q.id in theirs and q.id in our_rows]
    same = sum(our_rows[q.id]["pred"] == theirs[q.id] for q in shared)
    res = {"benchmark": bench.spec.name, "protocol": cfg.protocol, "model": rec, "n_questions": len(shared),
           "acc_ours": sum(our_rows[q.id]["pred"] == q.answer for q in shared) / max(len(shared), 1),
           "acc_lmeval": sum(theirs[q.id] == q.answer for q in shared) / max(len(shared), 1),
           "same_prediction": same / max(len(shared), 1), "target_same_prediction": 0.99,
           "differences": [{"id": q.id, "ours": our_rows[q.id]["pred"], "lmeval": theirs[q.id],
                            "scores": our_rows[q.id].get("scores")} for q in shared
                           if our_rows[q.id]["pred"] != theirs[q.id]][:50],
           "seconds_ours": round(t_ours, 2), "seconds_lmeval": round(t_lm, 2),
           "lmeval_task_dir": str(tmp) if cfg.keep_tasks else None}
    out = output_dir(cfg, rec) / f"{bench.spec.name}.crosscheck.json"
    atomic_write_json(out, res)
    if not cfg.keep_tasks:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    ok = "OK" if res["same_prediction"] >= 0.99 else "BELOW TARGET"
    print(f"crosscheck {bench.spec.name} ({len(shared)} questions): ours {100 * res['acc_ours']:.2f} | "
          f"lm-eval {100 * res['acc_lmeval']:.2f} | same prediction {100 * res['same_prediction']:.2f}% "
          f"(target >= 99%: {ok}) | ours {t_ours:.1f}s, lm-eval {t_lm:.1f}s\nwrote {out}")
    return res


@entrypoint
def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_args(CrosscheckConfig, argv, prog="eval.crosscheck")
    return crosscheck(cfg)


if __name__ == "__main__":
    main()
