"""The protocol ablation (incl. the CoT ablation): one model, one benchmark, several protocols side by
side, each with its 95% CI and a paired McNemar test against the first protocol on the same questions.

Each protocol is a normal `eval.run` evaluation (same files, same resume), so an ablation re-run only
scores what is missing. Writes `<out>/<bench>.ablation.md` and `.json` (atomically).

Run as:
    make ablation BENCH=demo MODEL=runs/sft/demo-...                                  # CPU
    make ablation BENCH=cmmlu MODEL=runs/sft/... DATA_DIR=../shared/data/cmmlu ARGS="limit=20"
    make ablation BENCH=ceval MODEL=openbmb/MiniCPM-2B-sft-bf16 BACKEND=vllm              # GPU
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.benchmarks import load_benchmark
from core.config import parse_args
from core.errors import UserError, entrypoint
from core.results import PROTOCOL_NAMES
from core.runs import RunError, atomic_write_json, atomic_write_text
from eval.compare import compare
from eval.run import EvalConfig, evaluate, select_questions


@dataclass
class AblationConfig(EvalConfig):
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOL_NAMES))  # in table order


def run_ablation(cfg: AblationConfig, backend=None, quiet: bool = False) -> dict:
    rows, paths = [], []
    if backend is None:   # one model load for every protocol
        from eval.run import _make_backend, describe_model
        backend = _make_backend(cfg, describe_model(cfg.model)[0])
    for name in cfg.protocols:
        sub = EvalConfig(**{k: getattr(cfg, k) for k in EvalConfig.__dataclass_fields__})
        sub.protocol = name
        try:
            r = evaluate(sub, backend=backend, quiet=quiet)
        except UserError as e:   # e.g. a base model without a chat template: a row saying so
            rows.append({"protocol": name, "error": str(e)})
            paths.append(None)
            continue
        rows.append(r)
        paths.append(r)
    out_dir = None
    bench = load_benchmark(cfg.bench, cfg.data_dir or None, subjects=cfg.subjects or None, with_shots=False)
    ids = {q.id for q in select_questions(bench, cfg.limit)}    # this ablation's questions only
    ref = next((i for i, p in enumerate(paths) if p is not None), None)
    table = []
    for i, r in enumerate(rows):
        if "error" in r:
            table.append({"protocol": r["protocol"], "error": r["error"]})
            continue
        out_dir = Path(cfg.out_dir) if cfg.out_dir else _result_dir(r, cfg)
        row = {"protocol": r["protocol"]["name"], "version": r["protocol"]["version"],
               "scoring": r["protocol"]["scoring"], "acc_micro": r["acc_micro"], "acc_macro": r["acc_macro"],
               "ci95_micro": r["ci95"]["micro"], "n": r["n_questions"], "unparsed": r["n_unparsed"],
               "fallback": r["n_fallback"], "per_category": {g: v["acc"] for g, v in r["per_category"].items()}}
        if ref is not None and i != ref:
            c = compare(out_dir / f"{r['benchmark']}.{rows[ref]['protocol']['name']}.json",
                        out_dir / f"{r['benchmark']}.{row['protocol']}.json", samples=2000, seed=cfg.seed,
                        ids=ids)
            row["vs_first"] = {"diff": c["paired_bootstrap"]["diff"], "mcnemar_p": c["mcnemar"]["p_value"]}
        table.append(row)
    if out_dir is None:
        raise RunError("no protocol could be evaluated: " + "; ".join(r.get("error", "") for r in rows))
    name = rows[ref]["benchmark"]
    doc = {"benchmark": name, "model": rows[ref]["model"], "rows": table}
    atomic_write_json(out_dir / f"{name}.ablation.json", doc)
    atomic_write_text(out_dir / f"{name}.ablation.md", markdown(doc))
    if not quiet:
        print(markdown(doc))
        print(f"wrote {out_dir / f'{name}.ablation.md'}")
    return doc


def _result_dir(r: dict, cfg: EvalConfig) -> Path:
    from eval.run import output_dir
    return output_dir(cfg, r["model"])


def markdown(doc: dict) -> str:
    cats = []
    for row in doc["rows"]:
        for g in row.get("per_category", {}):
            if g not in cats:
                cats.append(g)
    head = ["protocol", "scoring", "acc (micro)", "95% CI", "acc (macro)", "unparsed", "fallback", "vs first (McNemar p)"] + cats
    lines = [f"# {doc['benchmark']}: protocol ablation for {doc['model']['name']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['protocol']} | not run: {r['error']} |" + " |" * (len(head) - 2))
            continue
        vs = r.get("vs_first")
        cells = [f"{r['protocol']} v{r['version']}", r["scoring"], f"{100 * r['acc_micro']:.2f}",
                 f"[{100 * r['ci95_micro'][0]:.1f}, {100 * r['ci95_micro'][1]:.1f}]", f"{100 * r['acc_macro']:.2f}",
                 f"{r['unparsed']}/{r['n']}", f"{r['fallback']}/{r['n']}",
                 f"{100 * vs['diff']:+.2f} (p={vs['mcnemar_p']:.3f})" if vs else "-"]
        cells += [f"{100 * r['per_category'][g]:.2f}" if g in r["per_category"] else "-" for g in cats]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Unparsed answers count as wrong (chat protocols); steel-compat never leaves one unparsed because "
              "it falls back to a random (CMMLU) or closest (C-Eval) option: see the fallback column."]
    return "\n".join(lines) + "\n"


@entrypoint
def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_args(AblationConfig, argv, prog="eval.ablation")
    return run_ablation(cfg)


if __name__ == "__main__":
    main()
