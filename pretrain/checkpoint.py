"""Checkpoints: sharded model + optimiser state with torch.distributed.checkpoint (DCP), plus the
scheduler, data loader, RNG and step, written so that a half-written checkpoint is never used.

    <run>/checkpoints/step_000500/
        .metadata, __0_0.distcp, ...   DCP: model and optimiser, one file per rank (reshardable)
        rng_rank0.pt ...               torch / cuda / numpy / python RNG state per rank
        data_state.json, data_order.npy  data loader state (pretrain/data.py)
        trainer_state.json             step, tokens, scheduler, config, HF config: written LAST

Everything is written into `.tmp-step_000500/`, then rank 0 renames it to `step_000500/` (one
atomic rename). `latest()` only accepts `step_*` folders holding trainer_state.json, so a write
killed at any point leaves the previous checkpoint as the latest; the leftover `.tmp-*` folder is
removed by the next save. Only the last `keep_last` checkpoints are kept. (The reliability tests
kill a run in the middle of this write: tests/pretrain_faults.py.)
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from core.runs import RunError, atomic_write_json

STATE_FILE = "trainer_state.json"


@contextlib.contextmanager
def _quiet():
    """One process runs without a process group on purpose (see pretrain/train.py); DCP warns each time."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:06d}"


def list_complete(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def latest(root: Path) -> Path | None:
    done = list_complete(root)
    return done[-1] if done else None


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(root: Path, step: int, model, optimizer, trainer_state: dict, loader, rank: int,
         keep_last: int) -> Path:
    """Write checkpoint `step` under `root` (collective: every rank calls it)."""
    root = Path(root)
    final, tmp = step_dir(root, step), root / f".tmp-step_{step:06d}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step_*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # re-saving the same step after a resume: replace it whole
            shutil.rmtree(final)
        tmp.mkdir()
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with _quiet():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(_rng_state(), tmp / f"rng_rank{rank}.pt")
    _barrier()
    if rank == 0:
        loader.save(tmp)
        atomic_write_json(tmp / STATE_FILE, trainer_state)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_complete(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # not every filesystem allows fsync on a directory
        pass


def read_state(ckpt: Path) -> dict:
    ckpt = Path(ckpt)
    if not (ckpt / STATE_FILE).is_file():
        raise RunError(f"{ckpt} is not a complete checkpoint (no {STATE_FILE}); "
                       f"an interrupted write leaves a .tmp-step_* folder, which is never used")
    return json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))


def load(ckpt: Path, model, optimizer, rank: int) -> dict:
    """Restore model, optimiser and this rank's RNG from `ckpt`; returns trainer_state.json."""
    state = read_state(ckpt)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with _quiet():
        dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(ckpt))
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    rng_file = ckpt / f"rng_rank{rank}.pt"
    if not rng_file.is_file():  # more ranks than when saved: start them from rank 0's state
        rng_file = ckpt / "rng_rank0.pt"
    _set_rng_state(torch.load(rng_file, weights_only=False))
    return state


def load_model_only(ckpt: Path, model) -> dict:
    """Model weights from a checkpoint into a plain (unsharded) model, any saved world size."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    state = read_state(ckpt)
    sd = get_model_state_dict(model)
    with _quiet():
        dcp.load({"model": sd}, checkpoint_id=str(ckpt))
    set_model_state_dict(model, sd)
    return state
