"""`train.fsdp=always|never` at world 1 (CPU, gloo, in-process): FSDP2 wrapping one process gives the
losses of the plain module, in fp32 and in bf16 (one precision policy: autocast around fp32
parameters, whatever the wrapping), a checkpoint of one mode resumes in the other, and bad values stop
with one line.

Tolerance: the same blocks and the same math; FSDP2 only flattens and reduces the gradients (a
reduction over one rank), so fp32 losses agree to rtol 1e-5 and bf16 ones to rtol 1e-3 (measured:
identical in both on this machine; the margin is for other CPUs' kernels).
"""
from __future__ import annotations

import json

import pytest

from core.log import read_metrics
from pretrain import train as train_mod
from pretrain.data import write_token_folder
from pretrain.train import main

ARGS = ["model.size=debug", "data.seq_len_tokens=32", "train.batch_size_tokens=256", "train.micro_batch_size=4",
        "train.max_steps=6", "train.save_every_steps=3", "train.log_every_steps=1", "train.seed=0",
        "train.cpu_threads=1", "optim.lr=1e-2", "optim.warmup_steps=2", "data.seed=0", "export=false"]
RTOL = {"fp32": 1e-5, "bf16": 1e-3}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_tokenizer, demo_texts):
    return write_token_folder(tmp_path_factory.mktemp("fsdp_modes") / "demo", tiny_tokenizer, demo_texts[:600],
                              num_shards=2)


def _run(data_dir, root, name, *extra):
    return main([*ARGS, f"data.path={data_dir}", f"run.root={root}", f"run.name={name}", *extra])


def _losses(run):
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl")]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_always_and_never_give_the_same_losses_at_world_1(data_dir, tmp_path, capsys, precision):
    never = _run(data_dir, tmp_path, "never", "train.fsdp=never", f"train.precision={precision}")
    assert "world 1, no FSDP" in capsys.readouterr().out
    always = _run(data_dir, tmp_path, "always", "train.fsdp=always", f"train.precision={precision}")
    assert "world 1, FSDP2 over gloo" in capsys.readouterr().out
    assert len(_losses(always)) == 6
    assert _losses(always) == pytest.approx(_losses(never), rel=RTOL[precision])
    manifests = [json.loads((r / "manifest.json").read_text()) for r in (never, always)]
    assert [m["fsdp"] for m in manifests] == [{"mode": "never", "sharded": False}, {"mode": "always", "sharded": True}]
    assert all(m["peak_flops"]["mode"] == "auto" and m["peak_flops"]["value"] > 0 for m in manifests)


class _Died(Exception):
    pass


def test_a_checkpoint_of_one_mode_resumes_in_the_other(data_dir, tmp_path, monkeypatch):
    """never -> dies after step 4 (checkpoint 3) -> resume=auto with always: the losses of never."""
    reference = _losses(_run(data_dir, tmp_path, "ref", "train.fsdp=never"))
    original = train_mod.checkpoint_if_due

    def die_at_4(s):
        original(s)
        if s.step == 4:
            raise _Died
    monkeypatch.setattr(train_mod, "checkpoint_if_due", die_at_4)
    with pytest.raises(_Died):
        _run(data_dir, tmp_path, "switch", "train.fsdp=never")
    monkeypatch.undo()
    resumed = _run(data_dir, tmp_path, "switch", "train.fsdp=always", "resume=auto")
    assert _losses(resumed) == pytest.approx(reference, rel=RTOL["fp32"])


def test_bad_fsdp_values_stop_with_one_line(data_dir, tmp_path, monkeypatch, user_error):
    err = user_error(main, [*ARGS, f"data.path={data_dir}", f"run.root={tmp_path}", "train.fsdp=sometimes"])
    assert "train.fsdp must be auto, always or never" in err
    err = user_error(main, [*ARGS, f"data.path={data_dir}", f"run.root={tmp_path}", "train.mfu_peak=guess"])
    assert "train.mfu_peak must be one of auto, table, measured" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    err = user_error(main, [*ARGS, f"data.path={data_dir}", f"run.root={tmp_path}", "train.fsdp=never"])
    assert "train.fsdp=never trains one process" in err
    assert not (tmp_path / "pretrain").exists()
