import json
import os

import pytest

from core.log import StepLogger, read_metrics
from core.runs import (Run, RunError, RunOptions, atomic_write_json, lineage, require_finished,
                       resolve_model_dir)


def test_run_folder_and_manifest_written_last(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class C:
        a: int = 1

    run = Run.create("sft", "demo", RunOptions(root=str(tmp_path)))
    assert run.path.parent == tmp_path / "sft" and run.path.name.startswith("demo-")
    run.write_config(C())
    with pytest.raises(RunError, match="no manifest.json"):
        require_finished(run.path)
    m = run.finish(parent="runs/pretrain/x", tokens_seen=10)
    assert require_finished(run.path)["tokens_seen"] == 10
    assert m["config_sha256"] and "git_sha" in m and m["env"]["python"]
    with pytest.raises(RunError, match="'sft' run, expected a 'pretrain'"):
        require_finished(run.path, stage="pretrain")


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(p, {"v": 2})
    assert json.loads(p.read_text()) == {"v": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_resolve_model_dir(tmp_path, tiny_run_dir, tiny_model_dir):
    model, manifest = resolve_model_dir(tiny_run_dir)
    assert model == tiny_run_dir / "model" and manifest["stage"] == "pretrain"
    assert resolve_model_dir(tiny_model_dir) == (tiny_model_dir, None)
    unfinished = tmp_path / "runs" / "sft" / "x"
    (unfinished / "model").mkdir(parents=True)
    with pytest.raises(RunError, match="unfinished"):
        resolve_model_dir(unfinished)
    with pytest.raises(RunError, match="not found"):
        resolve_model_dir(tmp_path / "nope")


def test_lineage_follows_parents(tmp_path):
    a = Run.create("pretrain", "a", RunOptions(root=str(tmp_path), name="a"))
    a.finish()
    b = Run.create("sft", "b", RunOptions(root=str(tmp_path), name="b"))
    b.finish(parent=str(a.path))
    assert [m["stage"] for m in lineage(b.path)] == ["sft", "pretrain"]


def test_step_logger_line_and_jsonl(tmp_path, capsys):
    log = StepLogger(tmp_path / "metrics.jsonl", total_steps=20)
    log.step(1, loss=2.5, lr=1e-4, grad_norm=0.5, tok_per_s=1000.0, mfu=0.3)
    line = capsys.readouterr().out.strip()
    assert line.startswith("step 00001/00020 (5.0%) | loss 2.5000 | lr 1.0e-04 | grad_norm 0.5 | tok/s 1,000 | mfu 30.0%")
    assert "elapsed" in line and "eta" in line
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[0]["loss"] == 2.5 and rows[0]["step"] == 1
