"""Run `pretrain.train` with a fault injected, for the reliability tests (the hooks live here, not
in product code): the script patches one pretraining function, then runs the ordinary main.

    --kill-at-step=N        SIGKILL every rank right after step N's end-of-step checkpoint check
    --kill-in-checkpoint=N  SIGKILL rank 0 while writing checkpoint N: after the DCP shards, the
                            RNG states and the data state, before trainer_state.json and the rename
    --sleep-per-step=MS     sleep MS milliseconds after every step (a run slow enough to be killed
                            or raced while it trains; the lock tests)
    --late-ranks=S          every rank but 0 sleeps S seconds after the config check, so rank 0 has
                            taken and locked the run folder before the others look at it

Run as (PYTHONPATH=<repo>):
    python tests/pretrain_faults.py --kill-at-step=5 <pretrain.train args>
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/pretrain_faults.py --kill-at-step=5 <args>
"""
from __future__ import annotations

import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_step(n: int) -> None:
    from pretrain import train
    original = train.checkpoint_if_due

    def patched(s):
        original(s)
        if s.step == n:
            _die()
    train.checkpoint_if_due = patched


def kill_in_checkpoint(n: int) -> None:
    from pretrain.data import BlockLoader
    original = BlockLoader.save

    def patched(self, folder, *args, **kwargs):
        out = original(self, folder, *args, **kwargs)
        if os.path.basename(str(folder)) == f".tmp-step_{n:06d}":   # checkpoint.save's temporary folder
            _die()
        return out
    BlockLoader.save = patched


def sleep_per_step(ms: int) -> None:
    import time

    from pretrain import train
    original = train.checkpoint_if_due

    def patched(s):
        original(s)
        time.sleep(ms / 1000)
    train.checkpoint_if_due = patched


def late_ranks(seconds: int) -> None:
    import time

    from pretrain import train
    original = train.check_config

    def patched(cfg, world):
        original(cfg, world)
        if os.environ.get("RANK", "0") != "0":
            time.sleep(seconds)
    train.check_config = patched


FAULTS = {"--kill-at-step": kill_at_step, "--kill-in-checkpoint": kill_in_checkpoint,
          "--sleep-per-step": sleep_per_step, "--late-ranks": late_ranks}

if __name__ == "__main__":
    args = sys.argv[1:]
    while args and args[0].split("=")[0] in FAULTS:
        flag, _, value = args.pop(0).partition("=")
        FAULTS[flag](int(value))
    from pretrain.train import main
    main(args)
