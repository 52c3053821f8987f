"""One writer per run folder (core.runs.RunLock): a second writer is refused at once naming the
holder's pid, the OS releases the lock of a process that dies, an orphaned companion (a pretraining
rank) keeps the folder busy; `Run` as a context manager removes a folder a refused start created
and never one that existed; a failed `with RunLock(...)` (eval outputs) likewise; a model path inside an
unfinished run folder is refused like the run itself."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.runs import Run, RunError, RunLock, RunOptions, lock_holder, resolve_model_dir, run_folder

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from core.runs import RunLock
lock = RunLock(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None).acquire()
print("held", flush=True)
time.sleep(120)
"""


def _hold(folder: Path, lock_file: Path | None = None) -> subprocess.Popen:
    """Another process holding the lock, until it is killed."""
    args = [sys.executable, "-c", HOLDER, str(folder)] + ([str(lock_file)] if lock_file else [])
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_second_writer_refused_naming_the_holder_then_free_once_it_dies(tmp_path):
    run = tmp_path / "runs" / "sft" / "x"
    proc = _hold(run)
    try:
        with pytest.raises(RunError, match=rf"^{run} is in use by pid {proc.pid} \(started 20\d\d-.*Z\)"):
            RunLock(run).acquire()
        assert lock_holder(run).startswith(f"pid {proc.pid} ")
    finally:
        _kill(proc)                           # SIGKILL: no cleanup code runs, the OS drops the lock
    assert lock_holder(run) is None
    RunLock(run).acquire().release()


def test_locks_conflict_within_one_process_too(tmp_path):
    """flock locks belong to open descriptions, so two writers in one process (the in-process tests)
    are refused like two processes."""
    a = RunLock(tmp_path).acquire()
    with pytest.raises(RunError, match=f"in use by pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    assert lock_holder(tmp_path).startswith(f"pid {os.getpid()} ")
    a.release()
    RunLock(tmp_path).acquire().release()


def test_a_held_companion_keeps_the_main_lock_refused(tmp_path):
    """Rank r > 0 of a pretraining run holds <run>/.lock.rank<r>: while it lives (an orphan whose rank 0
    died), no new writer may take the folder."""
    proc = _hold(tmp_path, tmp_path / ".lock.rank1")
    try:
        with pytest.raises(RunError, match=f"in use by pid {proc.pid} "):
            RunLock(tmp_path).acquire()
    finally:
        _kill(proc)
    RunLock(tmp_path).acquire().release()


def test_refused_start_removes_only_a_folder_it_created(tmp_path):
    opts = RunOptions(root=str(tmp_path / "runs"), name="r")
    with pytest.raises(ValueError):
        with Run.create("sft", "demo", opts) as run:
            (run.path / "config.yaml").write_text("a: 1\n")
            raise ValueError("refused before training")
    assert not (tmp_path / "runs").exists()             # the run folder and the parents it made
    existing = tmp_path / "runs" / "sft" / "e"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("x")
    with pytest.raises(ValueError):
        with Run.create("sft", "demo", RunOptions(root=str(tmp_path / "runs"), name="e")):
            raise ValueError("refused")
    assert (existing / "keep.txt").read_text() == "x"
    with pytest.raises(ValueError):                     # after begin() a failure keeps the folder
        with Run.create("sft", "demo", opts) as run:
            run.begin()
            raise ValueError("training failed")
    assert run.path.is_dir() and lock_holder(run.path) is None


def test_run_in_use_is_refused_and_left_untouched(tmp_path):
    opts = RunOptions(root=str(tmp_path), name="busy")
    first = Run.create("dpo", "demo", opts)
    (first.path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunError, match="is in use by pid"):
        Run.create("dpo", "demo", opts)
    assert (first.path / "metrics.jsonl").read_text() == "{}\n"
    first.finish()                                      # finish releases the lock
    assert lock_holder(first.path) is None


def test_a_failed_lock_block_removes_what_it_made(tmp_path):
    out = tmp_path / "runs" / "eval" / "m"
    with pytest.raises(RuntimeError):
        with RunLock(out):
            assert lock_holder(out)
            raise RuntimeError("model failed to load")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(RuntimeError):
        with RunLock(out):
            (out / "x.predictions.jsonl").write_text("{}\n")   # something was written: kept
            raise RuntimeError("crash")
    assert (out / "x.predictions.jsonl").is_file() and lock_holder(out) is None
    data_lock = tmp_path / "runs" / "data" / ".demo.lock"       # a data build's lock beside its folder
    with pytest.raises(RuntimeError):
        with RunLock(tmp_path / "runs" / "data" / "demo", data_lock):
            raise RuntimeError("no sources")
    assert not (tmp_path / "runs" / "data").exists() and (tmp_path / "runs" / "eval").is_dir()


def test_model_folder_inside_an_unfinished_run_is_refused_like_the_run(tmp_path, tiny_model_dir, tiny_run_dir):
    import shutil
    run = tmp_path / "runs" / "pretrain" / "x"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunError) as whole:
        resolve_model_dir(run)
    with pytest.raises(RunError) as sub:
        resolve_model_dir(run / "model")
    assert str(sub.value) == str(whole.value) and "no manifest.json" in str(sub.value)
    # Finished: the model folder resolves to itself with the run's manifest; the run is the parent.
    model, manifest = resolve_model_dir(tiny_run_dir / "model")
    assert model == tiny_run_dir / "model" and manifest["stage"] == "pretrain"
    assert run_folder(tiny_run_dir / "model") == tiny_run_dir == run_folder(tiny_run_dir)
    assert run_folder(tiny_model_dir) is None and resolve_model_dir(tiny_model_dir) == (tiny_model_dir, None)


def test_die_with_parent_ends_the_child_when_its_parent_is_killed(tmp_path):
    """The torchrun worker's guard (core.runs.die_with_parent), shown on a plain parent/child pair: the
    parent starts a child that calls it, prints the child's pid, and is SIGKILLed."""
    parent_code = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "from core.runs import die_with_parent; die_with_parent(); import time; print('armed', flush=True); time.sleep(120)"],
    start_new_session=True, stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "armed"
print(child.pid, flush=True)
time.sleep(120)
"""
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    child = int(parent.stdout.readline())
    _kill(parent)
    deadline = time.time() + 10
    while time.time() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the child outlived its parent by 10 s"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by init) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True
