"""The pretraining entrypoint on a tiny model and tiny shards (CPU, fp32, fixed seed): golden
losses, export round trip, kill -9 + resume=auto equal to the uninterrupted run, a kill during a
checkpoint write (both injected by tests/pretrain_faults.py), add_data on resume, and one-line
errors (exit code 2) for a changed shard, a config that does not match the checkpoint and a
missing tokenizer."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.log import read_metrics
from pretrain import checkpoint as ckpt_lib
from pretrain.data import write_token_folder
from pretrain.train import main

REPO = Path(__file__).resolve().parents[2]
FAULTS = REPO / "tests" / "pretrain_faults.py"
GOLDEN = REPO / "tests" / "fixtures" / "pretrain_golden.json"
STEPS = 6

# hidden 64, 2 layers, seq 32, 8 sequences/step as 2 micro-batches of 4, checkpoint every 3 steps.
# One torch thread: bit-exact comparisons need the same thread count in every process, and one
# thread is not slowed down by other processes sharing the cores the way OpenMP teams are.
ARGS = ["model.size=debug", "data.seq_len_tokens=32", "train.batch_size_tokens=256", "train.micro_batch_size=4",
        f"train.max_steps={STEPS}", "train.save_every_steps=3", "train.log_every_steps=1", "train.seed=0",
        "train.trace_blocks=true", "train.cpu_threads=1", "optim.lr=1e-2", "optim.warmup_steps=2", "data.seed=0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_tokenizer, demo_texts):
    return write_token_folder(tmp_path_factory.mktemp("pt_data") / "demo", tiny_tokenizer, demo_texts[:600],
                              num_shards=2)


def _args(data_dir, root, name, *extra):
    return [*ARGS, f"data.path={data_dir}", f"run.root={root}", f"run.name={name}", *extra]


def _losses(run):
    return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl")]


def _trace(run):
    return [json.loads(x) for x in (run / "data_trace.jsonl").read_text().splitlines()]


def _with_fault(fault, args):
    """`pretrain.train` in a fresh process with `fault` (e.g. --kill-at-step=5) injected."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(FAULTS), fault, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _refused(capsys, args, pattern):
    """main(args) stops with one `[kind ]error: ...` line on stderr and exit code 2 (core.errors)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(pattern, err.strip().splitlines()[-1]), err[-2000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("pt_runs")
    return main(_args(data_dir, root, "ref"))


def test_run_folder_manifest_and_loss_decreases(reference, data_dir):
    manifest = json.loads((reference / "manifest.json").read_text())
    data_manifest = json.loads((data_dir / "manifest.json").read_text())
    assert manifest["stage"] == "pretrain" and manifest["steps"] == STEPS
    assert manifest["tokens_seen"] == STEPS * 256
    assert manifest["parent"] == str(data_dir)
    assert manifest["tokenizer_sha256"] == data_manifest["tokenizer_sha256"]
    assert manifest["data_recipe"]["hash"] == data_manifest["content_hash"]
    losses = [l for _, l in _losses(reference)]
    assert [s for s, _ in _losses(reference)] == list(range(1, STEPS + 1))
    assert losses[-1] < losses[0] - 0.5
    assert (reference / "loss.png").stat().st_size > 1000
    assert [p.name for p in ckpt_lib.list_complete(reference / "checkpoints")] == ["step_000003", "step_000006"]
    row = read_metrics(reference / "metrics.jsonl")[-1]
    assert {"loss", "lr", "grad_norm", "tok_per_s", "mfu", "elapsed_s", "eta_s"} <= set(row)
    assert 0 < row["mfu"] < 1


def test_golden_losses(reference):
    """First losses of the debug model vs the checked-in file (rtol 1e-4).
    Regenerate (after an intended change) with ZHLLM_REGEN_GOLDEN=1."""
    losses = [l for _, l in _losses(reference)]
    if os.environ.get("ZHLLM_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({"config": ARGS, "losses": losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert golden["config"] == ARGS
    assert losses == pytest.approx(golden["losses"], rel=1e-4)


def test_export_round_trip_logits_equal_trained(reference, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from core.models import build_model
    from pretrain.export import hf_config_from_state
    from pretrain.export import main as export_main
    ckpt = ckpt_lib.latest(reference / "checkpoints")
    trained = build_model(hf_config_from_state(ckpt_lib.read_state(ckpt)))
    ckpt_lib.load_model_only(ckpt, trained)
    exported = AutoModelForCausalLM.from_pretrained(reference / "model")  # plain Qwen2, no remote code
    assert type(exported).__name__ == "Qwen2ForCausalLM"
    tok = AutoTokenizer.from_pretrained(reference / "model")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.chat_template
    assert exported.generation_config.eos_token_id == tok.eos_token_id
    ids = torch.tensor([tok("广东省的省会是广州。")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, trained(input_ids=ids).logits, rtol=0, atol=0)
    # `make export RUN=...` writes the same weights again (here to another folder).
    out = export_main([str(reference), f"out={tmp_path / 'm'}"])
    again = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, trained(input_ids=ids).logits, rtol=0, atol=0)


def test_kill9_mid_run_then_resume_auto_is_exact(reference, data_dir, tmp_path):
    args = _args(data_dir, tmp_path, "killed")
    proc = _with_fault("--kill-at-step=5", args)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = tmp_path / "pretrain" / "killed"
    assert not (run / "manifest.json").exists()
    assert ckpt_lib.latest(run / "checkpoints").name == "step_000003"
    assert [s for s, _ in _losses(run)] == [1, 2, 3, 4, 5]      # steps 4, 5 are lost work
    main(args + ["resume=auto"])
    assert _losses(run) == _losses(reference)                  # exact, not approximate
    assert _trace(run) == _trace(reference)                     # same blocks in the same order
    assert (run / "manifest.json").is_file()


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(reference, data_dir, tmp_path):
    args = _args(data_dir, tmp_path, "ckptkill")
    proc = _with_fault("--kill-in-checkpoint=6", args)
    assert proc.returncode == -9, proc.stderr[-2000:]
    ckroot = tmp_path / "pretrain" / "ckptkill" / "checkpoints"
    partial = ckroot / ".tmp-step_000006"
    assert partial.is_dir() and any(partial.iterdir())          # the half-written step 6
    assert not (ckroot / "step_000006").exists()
    assert ckpt_lib.latest(ckroot).name == "step_000003"        # not mistaken for complete
    with pytest.raises(Exception, match="not a complete checkpoint"):
        ckpt_lib.read_state(partial)
    run = main(args + ["resume=auto"])
    assert _losses(run) == _losses(reference)
    assert not partial.exists()
    assert ckpt_lib.latest(ckroot).name == "step_000006"


def test_add_data_on_resume(reference, data_dir, tmp_path, tiny_tokenizer, demo_texts):
    more = write_token_folder(tmp_path / "more", tiny_tokenizer, demo_texts[1000:1150], num_shards=1)
    args = _args(data_dir, tmp_path, "grow")
    shutil.copytree(reference, tmp_path / "pretrain" / "grow")
    run = tmp_path / "pretrain" / "grow"
    (run / "manifest.json").unlink()
    shutil.rmtree(run / "checkpoints" / "step_000006")
    main(args + ["resume=auto", f"add_data=[{more}]"])
    trace = _trace(run)
    n_old = json.loads((ckpt_lib.latest(run / "checkpoints") / "data_state.json").read_text())["sources"]
    assert [s["path"] for s in n_old] == [str(data_dir), str(more)]
    state = json.loads((run / "checkpoints" / "step_000006" / "data_state.json").read_text())
    first_new = sum(1 for s in state["shards"] if s["source"] == str(data_dir))
    old_blocks = sum((s["num_tokens"] - 1) // 32 for s in state["shards"][:first_new])
    blocks = [b for t in trace for b in t["blocks"]]
    assert len(blocks) == len(set(blocks))                      # nothing twice within the epoch
    assert trace[:3] == _trace(reference)[:3]                   # before the resume: unchanged
    assert not any(b >= old_blocks for t in trace[:3] for b in t["blocks"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert [s["added_at_step"] for s in manifest["data_sources"]] == [0, 3]


def test_changed_shard_on_resume_stops_naming_it(reference, data_dir, tmp_path, tiny_tokenizer, demo_texts, capsys):
    data = write_token_folder(tmp_path / "data", tiny_tokenizer, demo_texts[:600], num_shards=2)
    shutil.copytree(reference, tmp_path / "pretrain" / "x")
    (tmp_path / "pretrain" / "x" / "manifest.json").unlink()
    # The copied checkpoint recorded data_dir; point a fresh copy of its data at the run instead.
    for ck in ckpt_lib.list_complete(tmp_path / "pretrain" / "x" / "checkpoints"):
        for name in ("data_state.json", ckpt_lib.STATE_FILE):
            p = ck / name
            p.write_text(p.read_text().replace(str(data_dir), str(data)))
    shard = data / "shards" / "shard_00000.bin"
    raw = bytearray(shard.read_bytes())
    raw[0] ^= 1
    shard.write_bytes(bytes(raw))
    _refused(capsys, _args(data, tmp_path, "x", "resume=auto"),
             "^data error: shard changed since the checkpoint: .*shard_00000.bin")


def test_config_mismatch_with_checkpoint_is_refused(reference, data_dir, tmp_path, capsys):
    shutil.copytree(reference, tmp_path / "pretrain" / "y")
    (tmp_path / "pretrain" / "y" / "manifest.json").unlink()
    _refused(capsys, _args(data_dir, tmp_path, "y", "resume=auto", "optim.lr=2e-2"),
             r"^error: config does not match checkpoint .*optim.lr: checkpoint 0.01, now 0.02")


def test_missing_tokenizer_and_bad_batch_are_clear_errors(data_dir, tmp_path, capsys):
    broken = tmp_path / "notok"
    shutil.copytree(data_dir, broken)
    shutil.rmtree(broken / "tokenizer")
    _refused(capsys, _args(broken, tmp_path, "z"), r"^pretrain error: tokenizer missing: .*notok/tokenizer")
    retok = tmp_path / "retok"
    shutil.copytree(data_dir, retok)
    (retok / "tokenizer" / "tokenizer.json").write_text((retok / "tokenizer" / "tokenizer.json").read_text() + " ")
    _refused(capsys, _args(retok, tmp_path, "z1"), r"^pretrain error: tokenizer changed: .*retok/tokenizer")
    _refused(capsys, _args(data_dir, tmp_path, "z2", "train.batch_size_tokens=100"),
             "^pretrain error: .*not a multiple of data.seq_len_tokens")
    import importlib.util
    if importlib.util.find_spec("tensorboard") is None:
        _refused(capsys, _args(data_dir, tmp_path, "z3", "logging.tensorboard=true"),
                 r"^config error: tensorboard is not installed \(logging.tensorboard=true\)")
    _refused(capsys, [*ARGS, f"data.path={data_dir}", f"run.root={tmp_path}", "resume=auto"],
             "^config error: resume=auto needs run.name")
    _refused(capsys, _args(data_dir, tmp_path, "z4", "model.size=huge"), "^config error: model.size 'huge'")


def test_soft_moe_variant_trains_exports_and_loads_through_auto_classes(data_dir, tmp_path):
    from core.models import build_model, load_model
    from pretrain.export import hf_config_from_state
    run = main(_args(data_dir, tmp_path, "moe", "model.ffn=soft_moe", "train.max_steps=2",
                     "train.trace_blocks=false"))
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert cfg["model_type"] == "zhllm_qwen2_softmoe"
    loaded = load_model(run / "model")
    ckpt = ckpt_lib.latest(run / "checkpoints")
    trained = build_model(hf_config_from_state(ckpt_lib.read_state(ckpt)))
    ckpt_lib.load_model_only(ckpt, trained)
    ids = torch.randint(0, 500, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, trained(input_ids=ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("recipe", sorted((REPO / "pretrain" / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_parses_and_names_a_known_size(recipe):
    from core.config import load_config
    from core.models import FFN_VARIANTS
    from pretrain.model import SIZES
    from pretrain.train import PretrainConfig
    cfg = load_config(PretrainConfig, recipe)
    assert cfg.model.size in SIZES and cfg.model.ffn in FFN_VARIANTS
    assert cfg.train.batch_size_tokens % cfg.data.seq_len_tokens == 0
    assert cfg.data.path.startswith("runs/data/")
    assert "make pretrain RECIPE=" in recipe.read_text().splitlines()[1] + recipe.read_text()


def test_activation_checkpointing_gives_the_same_losses(reference, data_dir, tmp_path):
    run = main(_args(data_dir, tmp_path, "ac", "train.activation_checkpointing=true", "export=false"))
    assert [l for _, l in _losses(run)] == pytest.approx([l for _, l in _losses(reference)], rel=1e-6)


def test_resume_from_an_explicit_checkpoint_and_keep_last(reference, data_dir, tmp_path, capsys):
    run = tmp_path / "pretrain" / "explicit"
    shutil.copytree(reference, run)
    (run / "manifest.json").unlink()
    shutil.rmtree(run / "checkpoints" / "step_000006")
    main(_args(data_dir, tmp_path, "ignored-name", f"resume={run / 'checkpoints' / 'step_000003'}",
               "train.keep_last_checkpoints=1"))
    assert _losses(run) == _losses(reference)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000006"]
    _refused(capsys, _args(data_dir, tmp_path, "explicit", "resume=auto"), "^error: .*explicit is a finished run")
