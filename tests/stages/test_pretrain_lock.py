"""One writer per pretraining run, and `make pretrain` user errors said once.

- A run trained under torchrun holds its folder: a second start on it (resume=auto) is refused at
  once naming the worker's pid; a SIGKILL of the torchrun launcher takes the worker with it within
  seconds (PR_SET_PDEATHSIG), the OS frees the lock, and `resume=auto` then finishes the run.
- `make pretrain` with a bad value (NPROC=1) or a changed shard found by the workers (NPROC=2) prints
  one `error:` line, exits 2, shows no traceback and leaves no run folder.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.log import read_metrics
from core.runs import lock_holder, require_finished
from pretrain.data import write_token_folder
from pretrain.train import main

REPO = Path(__file__).resolve().parents[2]
FAULTS = REPO / "tests" / "pretrain_faults.py"
STEPS = 10
ARGS = ["model.size=debug", "data.seq_len_tokens=32", "train.batch_size_tokens=256", "train.micro_batch_size=4",
        f"train.max_steps={STEPS}", "train.save_every_steps=2", "train.log_every_steps=1", "train.cpu_threads=1",
        "optim.warmup_steps=2", "export=false"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_tokenizer, demo_texts):
    return write_token_folder(tmp_path_factory.mktemp("lock_data") / "demo", tiny_tokenizer, demo_texts[:300],
                              num_shards=2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"   # a zombie is gone
    except (ProcessLookupError, FileNotFoundError):
        return False


def _wait_for(cond, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_torchrun_run_is_locked_and_its_worker_dies_with_the_launcher(data_dir, tmp_path, capsys):
    args = [*ARGS, f"data.path={data_dir}", f"run.root={tmp_path}", "run.name=r"]
    run = tmp_path / "pretrain" / "r"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "launcher.log", "w")
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                                 str(FAULTS), "--sleep-per-step=700", *args], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        def training():   # the worker holds the lock and has checkpointed at least once
            if not (run / "checkpoints" / "step_000002" / "trainer_state.json").is_file():
                return None
            return json.loads((run / ".lock").read_text())["pid"]
        worker = _wait_for(training, 240, "the worker's first checkpoint")
        assert worker != launcher.pid and _alive(worker)

        # A second writer is refused at once, naming the worker, and touches nothing.
        before = sorted(p.name for p in run.iterdir())
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main([*args, "resume=auto"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "Traceback" not in err
        assert re.fullmatch(rf"error: {re.escape(str(run))} is in use by pid {worker} \(started [^)]+\).*\n", err), err
        assert set(before) <= {p.name for p in run.iterdir()}

        # SIGKILL of the launcher: the worker (in its own session) goes too, within seconds.
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
        t0 = time.time()
        _wait_for(lambda: not _alive(worker), 10, f"worker {worker} to die with its launcher")
        # The OS drops the lock when the last of the worker's threads has exited (a moment after its
        # main thread shows as a zombie).
        _wait_for(lambda: lock_holder(run) is None, 10, "the dead worker's lock to be released")
        print(f"worker gone {time.time() - t0:.1f}s after the launcher")
    finally:
        if launcher.poll() is None:
            launcher.kill()
        log.close()
    done_before = max(r["step"] for r in read_metrics(run / "metrics.jsonl"))
    assert done_before < STEPS, "the killed run had already finished: the test proves nothing"

    out = main([*args, "resume=auto"])      # the lock went with the worker: the run continues and finishes
    assert require_finished(out)["steps"] == STEPS
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(1, STEPS + 1))


def _make_pretrain(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    # -o: never remake the setup stamp from a test, whatever pyproject.toml's time.
    return subprocess.run(["make", "-s", "-o", ".venv/.stamp-setup", "pretrain", f"NPROC={nproc}",
                           f"ARGS={' '.join(args)}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MAKEFLAGS": ""})


def _said_once(proc: subprocess.CompletedProcess, pattern: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out and "ChildFailedError" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if "error: " in line]
    assert len(errors) == 1 and re.search(pattern, errors[0]), out[-3000:]


def test_make_pretrain_bad_value_one_process(data_dir, tmp_path):
    proc = _make_pretrain(1, [*ARGS, f"data.path={data_dir}", f"run.root={tmp_path / 'runs'}", "train.max_steps=-5"])
    _said_once(proc, r"^config error: train.max_steps must be > 0, got -5$")
    assert not (tmp_path / "runs").exists()


def test_make_pretrain_changed_shard_found_by_two_workers(data_dir, tmp_path):
    import shutil
    bad = tmp_path / "bad_data"
    shutil.copytree(data_dir, bad)
    shard = bad / "shards" / "shard_00001.bin"
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 1
    shard.write_bytes(bytes(raw))
    proc = _make_pretrain(2, [*ARGS, f"data.path={bad}", f"run.root={tmp_path / 'runs'}"])
    _said_once(proc, rf"^data error: shard changed after its manifest: {re.escape(str(shard))}")
    assert not (tmp_path / "runs").exists()      # the run folder the workers made is gone again
