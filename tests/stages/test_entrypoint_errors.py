"""One error convention for every `python -m` entrypoint (core.errors): each is run as a user runs
it, in a fresh process, on a bad config and on a bad parent or input. Each must exit 2 with one
`[kind ]error: ...` line last on stderr and no `Traceback`. The parent cases include a model path
inside an unfinished run (`<run>/model`), also through `make sft INIT=` and `make eval MODEL=`.

The cases run a few at a time: most fail before importing torch, well under a second each."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = [sys.executable, "-m"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """An unfinished SFT run (model/, config.yaml, metrics.jsonl, no manifest), a data recipe whose
    source is missing, and an SFT mix whose only file is not valid JSON."""
    root = tmp_path_factory.mktemp("bad_inputs")
    run = root / "runs" / "sft" / "crashed"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "config.yaml").write_text("train: {max_steps: 10}\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    data_recipe = root / "missing_source.yaml"
    data_recipe.write_text(f"sources: [{{path: {root / 'nowhere.jsonl'}}}]\n")
    broken = root / "broken.jsonl"
    broken.write_text('{"instruction": "问", "output": "答"}\n{"instruction": \n')
    mix = root / "broken_mix.yaml"
    mix.write_text(f"sources: [{{name: b, format: alpaca, path: {broken}}}]\n")
    return {"run": run, "model": run / "model", "data_recipe": data_recipe, "mix": mix, "root": root}


def cases(b: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """(label, command, a piece of the expected error line)."""
    unf = f"{b['run']} has no manifest.json"
    out = f"run.root={b['root'] / 'out'}"
    return [
        ("data.build config", PY + ["data_recipes.build", "data_recipes/recipes/demo.yaml", "dedupe.near=maybe"], "dedupe.near"),
        ("data.build input", PY + ["data_recipes.build", str(b["data_recipe"]), out], "path not found"),
        ("tokenizer config", PY + ["data_recipes.tokenizer", "data_recipes/recipes/demo.yaml", "clean.operators=[{name: length_filter, min_chars: ten}]"],
         "min_chars must be an integer"),
        ("sft_mix input", PY + ["data_recipes.sft_mix", str(b["mix"])], "broken.jsonl:2: invalid JSON"),
        ("scaleout config", PY + ["data_recipes.scaleout", "data_recipes/recipes/demo.yaml", "bogus=1"], "unknown config key 'bogus'"),
        ("pretrain.train config", PY + ["pretrain.train", "pretrain/recipes/demo.yaml", "model.size=huge", out], "model.size 'huge'"),
        ("pretrain.train parent", PY + ["pretrain.train", "pretrain/recipes/demo.yaml", f"resume={b['run']}", out],
         "no complete checkpoint"),
        # (a bad value through `make pretrain` = pretrain.launch: tests/stages/test_pretrain_lock.py)
        ("pretrain.launch data", PY + ["pretrain.launch", "--nproc=2", "pretrain/recipes/demo.yaml",
                                       f"data.path={b['root']}/none", out], "data folder not found"),
        ("pretrain.export parent", PY + ["pretrain.export", str(b["run"])], "no complete checkpoint"),
        ("pretrain.export config", PY + ["pretrain.export", str(b["run"]), "chekpoint=x"], "usage: python -m pretrain.export"),
        ("sft config", PY + ["sft.train", "sft/recipes/demo.yaml", "train.batch_size=0", out], "train.batch_size must be >= 1"),
        ("sft parent", PY + ["sft.train", "sft/recipes/demo.yaml", f"init_from={b['model']}", out], unf),
        ("dpo config", PY + ["rl.dpo", "rl/recipes/demo_dpo.yaml", "dpo.beta=-1", out], "dpo.beta must be > 0"),
        ("dpo parent", PY + ["rl.dpo", "rl/recipes/demo_dpo.yaml", f"init_from={b['run']}", out], unf),
        ("grpo config", PY + ["rl.grpo", "rl/recipes/demo_grpo.yaml", "grpo.num_generations=1", out], "num_generations"),
        ("grpo parent", PY + ["rl.grpo", "rl/recipes/demo_grpo.yaml", f"init_from={b['model']}", out], unf),
        ("eval config", PY + ["eval.run", "eval/benchmarks/demo.yaml", "limit=many"], "limit: expected an int"),
        ("eval parent", PY + ["eval.run", "eval/benchmarks/demo.yaml", f"model={b['model']}"], unf),
        ("ablation parent", PY + ["eval.ablation", "eval/benchmarks/demo.yaml", f"model={b['model']}"], unf),
        ("crosscheck parent", PY + ["eval.crosscheck", "eval/benchmarks/demo.yaml", f"model={b['run']}"], unf),
        ("opencompass config", PY + ["eval.opencompass", "eval/benchmarks/demo.yaml", "bogus=1"], "unknown config key 'bogus'"),
        ("compare input", PY + ["eval.compare", str(b["root"] / "a.json"), str(b["root"] / "b.json")], "a.json"),
        ("leaderboard config", PY + ["leaderboard.build", "bogus=1"], "unknown config key 'bogus'"),
        # The make variables a user types: INIT= and MODEL= (-o: never remake the setup stamp from a test).
        ("make sft INIT=", ["make", "-s", "-o", ".venv/.stamp-setup", "sft", "RECIPE=demo", f"INIT={b['model']}",
                            f"ARGS={out}"], unf),
        ("make eval MODEL=", ["make", "-s", "-o", ".venv/.stamp-setup", "eval", "BENCH=demo", f"MODEL={b['model']}"], unf),
    ]


def _run(case):
    label, cmd, expected = case
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAKEFLAGS": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    # make's own lines ("make: ***", and "make[2]: ***" / "Leaving directory" when run under `make test`)
    lines = [l for l in proc.stderr.splitlines() if l.strip() and not re.match(r"make(\[\d+\])?: ", l)]
    problems = []
    if proc.returncode != 2:
        problems.append(f"exit code {proc.returncode}")
    if "Traceback" in proc.stderr:
        problems.append("a traceback")
    if not lines or "error: " not in lines[-1] or expected not in lines[-1]:
        problems.append(f"last stderr line {lines[-1] if lines else None!r} lacks {expected!r}")
    return label, problems, proc.stderr[-1500:]


def test_every_entrypoint_bad_config_and_bad_parent(bad):
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(_run, cases(bad)))
    failed = [f"{label}: {', '.join(problems)}\n{err}" for label, problems, err in results if problems]
    assert not failed, "\n\n".join(failed)
    assert not (bad["root"] / "out").exists()              # no refused start left a folder behind
    assert not (bad["run"] / "eval").exists()
