"""A refused start leaves nothing and says one thing, in pretrain, SFT, DPO, GRPO and eval:

- a bad value stops before any run folder exists (not even `run.root`);
- a run folder in use by another writer is refused at once and left untouched;
- a start refused after it made its folder (data that does not match, nothing left to train on, a
  model that does not load) removes that folder again;
- a model path inside an unfinished run (`<run>/model`) is refused like the run itself, for
  init_from= and the eval model= key; a finished one records the run as its parent.
Each through the entrypoint's `main`, checked by the `user_error` fixture: exit code 2, one
`[kind ]error:` line, no traceback.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from core.runs import RunLock

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def unfinished(tmp_path, tiny_model_dir) -> Path:
    """An SFT run folder that was never finished: config.yaml, metrics.jsonl and model/, no manifest."""
    run = tmp_path / "runs" / "sft" / "crashed"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "config.yaml").write_text("train: {max_steps: 10}\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    return run


def _busy(root: Path, stage: str, name: str) -> tuple[Path, RunLock]:
    """An existing run folder held by another writer (a lock on its own descriptor, as another process)."""
    run = root / stage / name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    return run, RunLock(run).acquire()


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- pretrain --------------------------------------------------------------------------------------
PT = ["model.size=debug", "data.seq_len_tokens=32", "train.batch_size_tokens=256", "train.micro_batch_size=4",
      "train.max_steps=2", "train.cpu_threads=1", "export=false"]


@pytest.fixture(scope="module")
def pt_data(tmp_path_factory, tiny_tokenizer, demo_texts):
    from pretrain.data import write_token_folder
    return write_token_folder(tmp_path_factory.mktemp("refusal_data") / "demo", tiny_tokenizer, demo_texts[:200],
                              num_shards=2)


@pytest.mark.parametrize("bad, message", [
    ("train.max_steps=-5", "config error: train.max_steps must be > 0, got -5"),
    ("model.size=huge", "config error: model.size 'huge' is not one of debug"),
    ("train.precision=fp8", "config error: train.precision must be auto, fp32 or bf16"),
    ("data.seq_len_tokens=2048", "config error: data.seq_len_tokens=2048 is longer than model.size debug's"),
    ("train.micro_batch_size=3", "pretrain error: 8 sequences per process per step are not a multiple"),
])
def test_pretrain_bad_value_leaves_nothing(tmp_path, pt_data, user_error, bad, message):
    from pretrain.train import main
    err = user_error(main, [*PT, f"data.path={pt_data}", f"run.root={tmp_path / 'runs'}", bad])
    assert err.startswith(message), err
    assert not (tmp_path / "runs").exists()


def test_pretrain_refused_later_removes_the_folder_it_made_and_never_an_existing_one(tmp_path, pt_data, user_error):
    from pretrain.train import main
    bad = tmp_path / "data"
    shutil.copytree(pt_data, bad)
    shard = bad / "shards" / "shard_00000.bin"
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 1                                               # same size, other bytes: found when hashed
    shard.write_bytes(bytes(raw))
    err = user_error(main, [*PT, f"data.path={bad}", f"run.root={tmp_path / 'runs'}", "run.name=new"])
    assert "shard changed after its manifest" in err
    assert not (tmp_path / "runs").exists()
    run, lock = _busy(tmp_path / "runs", "pretrain", "busy")
    try:
        before = _snapshot(run)
        err = user_error(main, [*PT, f"data.path={pt_data}", f"run.root={tmp_path / 'runs'}", "run.name=busy",
                                "resume=auto"])
        assert f"{run} is in use by pid " in err
        assert _snapshot(run) == before
    finally:
        lock.release()


# ---- SFT ------------------------------------------------------------------------------------------------
SFT = [str(REPO / "sft" / "recipes" / "demo.yaml"), "train.max_steps=1", "train.batch_size=2"]


@pytest.mark.parametrize("bad, message", [
    ("train.batch_size=0", "config error: train.batch_size must be >= 1, got 0"),
    ("data.truncation=cut", "config error: data.truncation must be truncate or drop"),
    ("backend=axolotl", "config error: backend must be trl or llamafactory"),
    ("optim.lr=-1", "config error: optim.lr must be > 0, got -1"),
])
def test_sft_bad_value_leaves_nothing(tmp_path, tiny_run_dir, user_error, bad, message):
    from sft.train import main
    err = user_error(main, [*SFT, f"init_from={tiny_run_dir}", f"run.root={tmp_path / 'runs'}", bad])
    assert err.startswith(message), err
    assert not (tmp_path / "runs").exists()


def test_sft_run_in_use_is_refused_and_untouched(tmp_path, tiny_run_dir, user_error):
    from sft.train import main
    run, lock = _busy(tmp_path / "runs", "sft", "busy")
    try:
        before = _snapshot(run)
        err = user_error(main, [*SFT, f"init_from={tiny_run_dir}", f"run.root={tmp_path / 'runs'}", "run.name=busy"])
        assert err.startswith(f"error: {run} is in use by pid ")
        assert _snapshot(run) == before
    finally:
        lock.release()


@pytest.mark.parametrize("sub", ["", "model"])
def test_sft_unfinished_parent_however_named(tmp_path, unfinished, user_error, sub):
    from sft.train import main
    err = user_error(main, [*SFT, f"init_from={unfinished / sub if sub else unfinished}",
                            f"run.root={tmp_path / 'out'}"])
    assert err.startswith(f"error: {unfinished} has no manifest.json: it is an unfinished (or crashed) run"), err
    assert not (tmp_path / "out").exists()


# ---- DPO ------------------------------------------------------------------------------------------------
DPO = [str(REPO / "rl" / "recipes" / "demo_dpo.yaml"), "train.max_steps=1", "data.max_rows=8"]


@pytest.mark.parametrize("bad, message", [
    ("dpo.beta=0", "config error: dpo.beta must be > 0, got 0"),
    ("dpo.loss_type=[sigmod]", "config error: dpo.loss_type ['sigmod']: each must be one of sigmoid"),
    ("train.max_steps=-1", "config error: train.max_steps must be >= 0, got -1"),
])
def test_dpo_bad_value_leaves_nothing(tmp_path, tiny_sft_run, user_error, bad, message):
    from rl.dpo import main
    err = user_error(main, [*DPO, f"init_from={tiny_sft_run}", f"run.root={tmp_path / 'runs'}", bad])
    assert err.startswith(message), err
    assert not (tmp_path / "runs").exists()


def test_dpo_refused_later_and_in_use(tmp_path, tiny_sft_run, user_error):
    """Every pair a copy of a benchmark question: decontamination leaves nothing, after the run folder
    was made for its report; the folder goes again. Then a run in use."""
    from rl.dpo import main
    rows = []
    for line in (REPO / "eval" / "benchmarks" / "demo_bench" / "val" / "towns_val.csv").read_text(
            encoding="utf-8").splitlines()[1:6]:
        _, q, a, b, c, d, _ = line.split(",")
        rows.append({"prompt": f"{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n答案：", "chosen": a, "rejected": b})
    pairs = tmp_path / "copies.jsonl"
    pairs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recipe = tmp_path / "copies.yaml"
    recipe.write_text(yaml.safe_dump({"sources": [{"path": str(pairs)}]}))
    err = user_error(main, [*DPO, f"init_from={tiny_sft_run}", f"data.recipe={recipe}", f"run.root={tmp_path / 'runs'}"])
    assert "decontamination dropped every preference pair" in err, err
    assert not (tmp_path / "runs").exists()
    run, lock = _busy(tmp_path / "runs", "dpo", "busy")
    try:
        before = _snapshot(run)
        err = user_error(main, [*DPO, f"init_from={tiny_sft_run}", f"run.root={tmp_path / 'runs'}", "run.name=busy"])
        assert f"{run} is in use by pid " in err and _snapshot(run) == before
    finally:
        lock.release()


def test_dpo_unfinished_model_folder_refused(tmp_path, unfinished, user_error):
    from rl.dpo import main
    err = user_error(main, [*DPO, f"init_from={unfinished / 'model'}", f"run.root={tmp_path / 'out'}"])
    assert err.startswith(f"error: {unfinished} has no manifest.json"), err
    assert not (tmp_path / "out").exists()


# ---- GRPO -----------------------------------------------------------------------------------------------
GRPO = [str(REPO / "rl" / "recipes" / "demo_grpo.yaml"), "train.max_steps=1", "prompts.arithmetic_n=4",
        "train.prompts_per_step=2", "grpo.num_generations=2"]


def test_grpo_bad_value_refused_later_and_in_use(tmp_path, tiny_sft_run, unfinished, user_error):
    from rl.grpo import main
    root = tmp_path / "out"              # (tmp_path / "runs" holds the unfinished SFT run)
    err = user_error(main, [*GRPO, f"init_from={tiny_sft_run}", f"run.root={root}", "grpo.temperature=0"])
    assert err.startswith("config error: grpo.temperature must be > 0, got 0") and not root.exists()
    err = user_error(main, [*GRPO, f"init_from={unfinished / 'model'}", f"run.root={root}"])
    assert err.startswith(f"error: {unfinished} has no manifest.json") and not root.exists()
    # Every prompt is longer than one token: nothing left after the filter, which needs the folder
    # (for its reports) and the policy's tokenizer; the folder goes again.
    err = user_error(main, [*GRPO, f"init_from={tiny_sft_run}", f"run.root={root}", "prompts.max_prompt_len_tokens=1"])
    assert "no GRPO prompts left" in err and not root.exists()
    run, lock = _busy(root, "grpo", "busy")
    try:
        before = _snapshot(run)
        err = user_error(main, [*GRPO, f"init_from={tiny_sft_run}", f"run.root={root}", "run.name=busy"])
        assert f"{run} is in use by pid " in err and _snapshot(run) == before
    finally:
        lock.release()


# ---- eval -----------------------------------------------------------------------------------------------
EVAL = [str(REPO / "eval" / "benchmarks" / "demo.yaml"), "limit=2", "batch_size=2"]


def test_eval_refusals(tmp_path, tiny_model_dir, unfinished, user_error):
    from eval.run import main
    err = user_error(main, [*EVAL, f"model={unfinished / 'model'}"])      # the model= key (MODEL=)
    assert err.startswith(f"error: {unfinished} has no manifest.json") and not (unfinished / "eval").exists()
    err = user_error(main, [*EVAL, f"model={tiny_model_dir}", "protocol=zero-shot", f"run.root={tmp_path / 'r1'}"])
    assert "zero-shot" in err and not (tmp_path / "r1").exists()          # made for the result, removed again
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, no_weights / name)
    err = user_error(main, [*EVAL, f"model={no_weights}", f"out_dir={tmp_path / 'r2' / 'eval'}"])
    assert "no model weights" in err and not (tmp_path / "r2").exists()
    out, lock = tmp_path / "busy_eval", RunLock(tmp_path / "busy_eval").acquire()
    try:
        (out / "demo.base-5shot-logits.predictions.jsonl").write_text("")
        before = _snapshot(out)
        err = user_error(main, [*EVAL, f"model={tiny_model_dir}", f"out_dir={out}"])
        assert err.startswith(f"error: {out} is in use by pid ") and _snapshot(out) == before
    finally:
        lock.release()


def test_eval_of_a_finished_runs_model_folder_records_the_run(tmp_path, tiny_model_dir):
    """<run>/model of a finished run: scored as that run (its name, its eval/ folder, its manifest)."""
    from conftest import _fake_run
    from eval.run import main

    class Factory:                       # _fake_run's tmp_path_factory, for a run of our own
        def mktemp(self, name):
            p = tmp_path / name
            p.mkdir()
            return p
    run = _fake_run(Factory(), tiny_model_dir, "sft", "done")
    r = main([*EVAL, f"model={run / 'model'}"])
    assert r["model"]["run"] == str(run) and r["model"]["name"] == "sft/done"
    assert r["model"]["path"] == str(run / "model") and r["model"]["manifest_sha256"]
    assert (run / "eval" / "demo.base-5shot-logits.json").is_file()


# ---- data build ------------------------------------------------------------------------------------------
def test_data_build_in_use_is_refused(tmp_path, user_error):
    """`make data` locks runs/data/.<name>.lock (the folder itself is swapped in at the end)."""
    from data_recipes.build import main
    root = tmp_path / "runs"
    lock = RunLock(root / "data" / "demo", root / "data" / ".demo.lock").acquire()
    try:
        err = user_error(main, [str(REPO / "data_recipes" / "recipes" / "demo.yaml"), f"run.root={root}"])
        assert err.startswith(f"error: {root / 'data' / 'demo'} is in use by pid ")
        assert sorted(p.name for p in (root / "data").iterdir()) == [".demo.lock"]   # nothing was built
    finally:
        lock.release()
