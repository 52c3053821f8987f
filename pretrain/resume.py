"""Which run folder a pretraining command writes, which checkpoint it continues from, and whether
its config may continue that checkpoint.

    resume=""          a new run folder (refused if run.name already holds checkpoints)
    resume=auto        continue run.name from its latest complete checkpoint, or start it
    resume=<dir>       continue that run folder (its latest checkpoint) or that checkpoint

A resumed run must have the checkpoint's config except for the keys in `RESUME_MAY_CHANGE`
(logging, checkpoint cadence, micro-batching and other settings that do not change the numbers).
Log rows written after the checkpoint by the process that died are dropped (`truncate_jsonl`).
Used by pretrain/train.py; rank 0 decides and every rank uses its answer. One writer per run
folder: rank 0 holds `<run>/.lock` and every other rank `<run>/.lock.rank<r>` (core.runs.RunLock)
until the run ends; `find_run` makes every decision without writing (pretrain/preflight.py).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch.distributed as dist

from core.config import ConfigError, to_dict
from core.errors import UserError
from core.log import read_metrics
from core.runs import Run, RunError, RunLock, atomic_write_text, in_use_error, lock_holder
from pretrain import checkpoint as ckpt_lib

# Keys that may differ between a checkpoint and the command that resumes it.
RESUME_MAY_CHANGE = ("resume", "add_data", "export", "logging.", "heldout.", "run.", "train.log_every_steps",
                     "train.save_every_steps", "train.keep_last_checkpoints", "train.compile",
                     "train.activation_checkpointing", "train.cpu_threads", "train.trace_blocks",
                     "train.micro_batch_size", "model.attn_implementation",
                     "train.fsdp", "train.mfu_peak")   # one precision policy and DCP either way (pretrain/train.py)


@contextlib.contextmanager
def open_run(cfg, recipe: str, rank: int, world: int, check=None):
    """`with open_run(...) as (run, checkpoint or None, its trainer state or None):` for a
    PretrainConfig. Rank 0 picks (or creates) and locks the run folder; everyone uses its answer, so
    an error there stops every rank. `check()` (e.g. the data folder) runs on rank 0 after the
    resume decision and before a folder is created, so its error also stops every rank. Only rank 0
    calls `find_run`: another rank would see rank 0's own lock and call the run "in use". The locks
    are released however the block ends; a start refused before `run.begin()` removes a folder it
    created (rank 0)."""
    picked, run = [None], None
    if rank == 0:
        try:
            path, ckpt = find_run(cfg, recipe)
            if check is not None:
                check()
            if path is None:
                run = Run.create("pretrain", recipe, cfg.run)
            else:
                run = Run(path, "pretrain", recipe)
                run.lock = RunLock(path).acquire()
            picked = [(run.path, ckpt)]
        except UserError as e:
            picked = [e]
    if world > 1:
        dist.broadcast_object_list(picked, src=0)
    if isinstance(picked[0], Exception):
        raise picked[0]
    run_path, ckpt = picked[0]
    if run is None:
        run = Run(run_path, "pretrain", recipe)
    with run:
        if rank != 0:
            run.lock = RunLock(run_path, run_path / f".lock.rank{rank}").acquire()
        state = ckpt_lib.read_state(ckpt) if ckpt else None
        if state is not None:
            check_config_matches(cfg, state["config"], ckpt)
            run.started = state.get("run_started", run.started)
        yield run, ckpt, state


def find_run(cfg, recipe: str) -> tuple[Path | None, Path | None]:
    """(the existing run folder to write, or None for a new one; the checkpoint to resume from or
    None). Writes nothing: every refusal (no such checkpoint, a finished run, a run in use) is
    raised here, so pretrain/preflight.py can make it before any worker starts."""
    if cfg.resume in ("", "auto"):
        if cfg.resume == "auto" and not cfg.run.name:
            raise ConfigError("resume=auto needs run.name=<run> (the run folder to continue)")
        run = Path(cfg.run.root) / "pretrain" / cfg.run.name
        if not cfg.run.name or not run.is_dir():
            return None, None
        ckpt = ckpt_lib.latest(run / "checkpoints")
        if cfg.resume == "" and ckpt is not None:
            raise RunError(f"{run} already has checkpoints; pass resume=auto to continue it, or another run.name")
    else:
        p = Path(cfg.resume)
        if (p / ckpt_lib.STATE_FILE).is_file():
            run, ckpt = p.parent.parent, p
        elif p.is_dir():
            run, ckpt = p, ckpt_lib.latest(p / "checkpoints")
            if ckpt is None:
                raise RunError(f"resume={p}: no complete checkpoint under {p}/checkpoints")
        else:
            raise RunError(f"resume={p}: neither a run folder nor a checkpoint folder")
    if (run / "manifest.json").is_file():
        raise RunError(f"{run} is a finished run (manifest.json exists); start a new run instead")
    holder = lock_holder(run)
    if holder:
        raise in_use_error(run, holder)
    return run, ckpt


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_config_matches(cfg, saved: dict, ckpt: Path) -> None:
    now, then = _flat(to_dict(cfg)), _flat(saved)
    diffs = [f"{k}: checkpoint {then.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(now) | set(then))
             if not k.startswith(RESUME_MAY_CHANGE) and now.get(k) != then.get(k)]
    if diffs:
        raise RunError(f"config does not match checkpoint {ckpt}: " + "; ".join(diffs) +
                       ". Resume with the checkpoint's settings or start a new run (run.name=...).")


def truncate_jsonl(path: Path, last_step: int) -> None:
    """After a resume from `last_step`, drop rows logged past it by the interrupted process."""
    if path.is_file():
        rows = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
