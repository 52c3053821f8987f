"""`make pretrain`: check the whole command in this one process before any worker starts, then
train: in this process for one (no torchrun), under torchrun for more.

A user error (a bad key or value, a batch that does not split over NPROC processes, missing data,
a finished run or one in use) is found here and printed once as `[kind ]error: ...`, exit code 2,
before torchrun exists to wrap it in its `ChildFailedError` report. An error found later by the
workers (a shard that no longer matches its hash) is printed once by rank 0, and this launcher
exits 2 without torchrun's report; a crash (a bug) keeps its traceback in the worker's output.

Run as:
    make pretrain RECIPE=demo                   # CPU, 1 process  (= python -m pretrain.launch --nproc=1 pretrain/recipes/demo.yaml)
    make pretrain RECIPE=demo NPROC=2           # CPU, 2 processes: FSDP2 over gloo
    make pretrain RECIPE=base_0p5b NPROC=8      # one GPU node: FSDP2 over nccl
Several nodes: run torchrun yourself (see pretrain/train.py); each worker makes the same checks.
"""
from __future__ import annotations

import sys

from core.config import ConfigError, parse_args, recipe_name
from core.errors import entrypoint
from pretrain.preflight import check_start
from pretrain.train import PretrainConfig, main as train_main


@entrypoint
def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    nproc = [a for a in argv if a.startswith("--nproc=")]
    args = [a for a in argv if not a.startswith("--nproc=")]
    try:
        world = int(nproc[-1].split("=", 1)[1]) if nproc else 1
    except ValueError:
        raise ConfigError(f"{nproc[-1]}: NPROC must be a whole number of processes") from None
    if world < 1:
        raise ConfigError(f"NPROC must be >= 1, got {world}")
    cfg, recipe = parse_args(PretrainConfig, args, prog="pretrain.train")   # --dry-run prints and exits here
    check_start(cfg, recipe_name(recipe, "pretrain"), world)
    if world == 1:
        return train_main(args)     # this process is the only worker: there is nothing to orphan
    return torchrun(world, args)


def torchrun(world: int, args: list[str]) -> None:
    """torchrun --standalone --nproc_per_node=<world> -m pretrain.train <args>, in this process."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args as torchrun_args, run
    # Its failure report repeats, in 30 lines, what the failing worker already printed.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(torchrun_args(["--standalone", f"--nproc_per_node={world}", "-m", "pretrain.train", *args]))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode == 2:          # a user error, printed once by the worker (core.errors)
            raise SystemExit(2) from None
        print(f"pretrain: rank {rank} failed with exit code {failure.exitcode} (its output is above)",
              file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
