"""Pretrain a Qwen2-architecture model on token shards with FSDP2, exact hash-checked resume,
mid-run data addition and an HF export at the end.

Reads a data folder `runs/data/<name>/` (data_recipes/shards.py: tokenizer/, shards/, manifest.json)
and writes `runs/pretrain/<recipe>-<stamp>/`: config.yaml, metrics.jsonl, loss.png,
checkpoints/step_NNNNNN/ (torch.distributed.checkpoint), model/ (HF folder) and manifest.json last.

Run as:
    make pretrain RECIPE=demo                               # CPU, 1 process, debug size, ~1-2 min
    make pretrain RECIPE=demo NPROC=2                       # CPU, 2 processes: FSDP2 over gloo
    make pretrain RECIPE=base_0p5b NPROC=8                  # one GPU node: FSDP2 over nccl, bf16
    make pretrain RECIPE=small_0p1b ARGS="train.fsdp=always"   # one GPU, still FSDP2 over nccl
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=<host>:29500 \\
        -m pretrain.train pretrain/recipes/steel_1b.yaml    # several nodes, same script
    make pretrain RECIPE=demo ARGS="run.name=<run> resume=auto"                         # continue
    make pretrain RECIPE=demo ARGS="run.name=<run> resume=auto add_data=[runs/data/more]"  # add shards

Parallelism (`train.fsdp`): `auto` wraps with FSDP2 when there is more than one process; with one
there is no process group and no wrapper (the plain module is fastest there and checkpoints are the
same DCP format). `always` wraps even one process (a process group of one, nccl on GPU, gloo on
CPU), so a single GPU exercises FSDP2 over NCCL; `never` is one plain process. `fully_shard` wraps
every decoder block and then the root. Precision `auto` is bf16 on GPU and fp32 on CPU; bf16 is
one policy whatever the world size or wrapping: autocast to bf16 around fp32 parameters (fp32
master weights, optimizer state, residual stream and gradient reduction). FSDP's own
param_dtype=bf16 would halve the all-gather bytes but run the residual stream in bf16, so the
numbers would change with the GPU count. MFU is against `train.mfu_peak` (pretrain/mfu.py: the
datasheet figure of a known GPU, or a measured matmul), recorded in manifest.json. On a CPU shared
with other processes set OMP_WAIT_POLICY=PASSIVE before starting (the Makefile and the tests do):
with spinning OpenMP waits, 2 threads on 2 busy cores ran a debug-size step 8x slower (1.67 s vs
0.17 s measured); passive waits cost ~nothing alone.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from core.compat import enable_activation_checkpointing
from core.config import ConfigError, parse_args, recipe_name, to_dict
from core.errors import UserError, entrypoint, error_line
from core.log import StepLogger, plot_metrics, read_metrics
from core.models import build_model, count_parameters, load_tokenizer, save_hf
from core.runs import Run, RunOptions, die_with_parent, sha256_file
from pretrain import checkpoint as ckpt_lib
from pretrain.data import BlockLoader
from pretrain.heldout import HeldoutOptions, heldout_check, read_docs
from pretrain.mfu import PEAK_MODES, peak_flops
from pretrain.model import flops_per_token, linear_cross_entropy, model_config, release_loss_buffers
from pretrain.preflight import (Batches, DataFolder, PretrainError, check_config, check_data_folder,  # noqa: F401
                                plan_batches)
from pretrain.resume import open_run, truncate_jsonl
from pretrain.trackers import Trackers


@dataclass
class DataOptions:
    path: str = "runs/data/demo"        # data folder written by `make data` (tokenizer/ + shards/)
    seq_len_tokens: int = 256           # tokens per training sequence (blocks are seq_len + 1 tokens)
    seed: int = 0                       # seed of the block permutation (per epoch)


@dataclass
class ModelOptions:
    size: str = "debug"                 # debug | small_0p1b | base_0p5b | steel_1b (pretrain/model.py SIZES)
    ffn: str = "swiglu"                 # swiglu | double_swiglu | soft_moe
    se_reduction: int = 4               # double_swiglu: bottleneck width = hidden / se_reduction
    moe_num_experts: int = 4            # soft_moe: experts
    moe_slots_per_expert: int = 1       # soft_moe: slots per expert (compute = slots x dense FFN)
    moe_expert_intermediate_size: int = 0  # soft_moe: expert width; 0 = intermediate / experts
    rope_theta: float = 1_000_000.0     # RoPE base (Qwen2's)
    init_std: float = 0.02              # normal init std of linear and embedding weights
    vocab_multiple: int = 64            # pad the embedding rows to a multiple of this (speed)
    attn_implementation: str = "sdpa"   # sdpa | eager | flash_attention_2


@dataclass
class OptimOptions:
    lr: float = 3e-4                    # peak learning rate
    min_lr_ratio: float = 0.1           # cosine floor as a fraction of lr
    warmup_steps: int = 100             # linear warmup from 0 to lr
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1           # on matrices and embeddings, not on norms
    grad_clip_norm: float = 1.0         # max global grad norm; <= 0 disables clipping


@dataclass
class TrainOptions:
    max_steps: int = 1000               # optimizer steps
    batch_size_tokens: int = 65536      # global batch in tokens (all ranks, all micro-steps)
    micro_batch_size: int = 8           # sequences per rank per forward; accumulation fills the rest
    precision: str = "auto"             # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    activation_checkpointing: bool = False  # recompute each block in backward (less memory)
    fsdp: str = "auto"                  # auto (FSDP2 when > 1 process) | always (even 1 process) | never (1 process)
    mfu_peak: str = "auto"              # MFU's peak: auto (a known GPU's datasheet, else measured) | table | measured
    compile: bool = False               # torch.compile each decoder block
    seed: int = 0                       # model init and torch RNG
    cpu_threads: int = 0                # torch threads per process on CPU; 0 = torch's default
    log_every_steps: int = 10
    save_every_steps: int = 500         # checkpoint interval (a final checkpoint is always written)
    keep_last_checkpoints: int = 3      # older complete checkpoints are deleted
    trace_blocks: bool = False          # write data_trace.jsonl: the global block ids of every step


@dataclass
class LoggingOptions:
    wandb: bool = False                 # log to Weights & Biases (needs `pip install wandb`)
    wandb_project: str = "zhllm-kit"
    tensorboard: bool = False           # write TensorBoard events to <run>/tb


@dataclass
class PretrainConfig:
    data: DataOptions = field(default_factory=DataOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    logging: LoggingOptions = field(default_factory=LoggingOptions)
    heldout: HeldoutOptions = field(default_factory=HeldoutOptions)   # end-of-run loss on never-trained text
    run: RunOptions = field(default_factory=RunOptions)
    resume: str = ""                    # "" | auto (latest checkpoint of run.name, if any) | <run or checkpoint dir>
    add_data: list[str] = field(default_factory=list)  # data folders added on resume
    export: bool = True                 # write model/ (HF) at the end


# ---- setup -------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device
    sharded: bool = False               # the model is wrapped with FSDP2 (train.fsdp)


def check_fsdp(train: TrainOptions, world: int) -> bool:
    """Whether this run wraps the model with FSDP2, or the ConfigError of a bad train.fsdp/mfu_peak."""
    if train.fsdp not in ("auto", "always", "never"):
        raise ConfigError(f"train.fsdp must be auto, always or never, not {train.fsdp!r}")
    if train.fsdp == "never" and world > 1:
        raise ConfigError(f"train.fsdp=never trains one process, but WORLD_SIZE is {world}; use auto or always")
    if train.mfu_peak not in PEAK_MODES:
        raise ConfigError(f"train.mfu_peak must be one of {', '.join(PEAK_MODES)}, not {train.mfu_peak!r}")
    return world > 1 or train.fsdp == "always"


def setup_distributed(train: TrainOptions) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    sharded = check_fsdp(train, world)
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    elif train.cpu_threads > 0:
        torch.set_num_threads(train.cpu_threads)
    if sharded and not dist.is_initialized():
        if "MASTER_ADDR" in os.environ or world > 1:       # torchrun
            dist.init_process_group("nccl" if cuda else "gloo")
        else:   # `python -m pretrain.train train.fsdp=always`: a group of one needs no rendezvous
            dist.init_process_group("nccl" if cuda else "gloo", store=dist.HashStore(), rank=0, world_size=1)
    return Dist(rank=dist.get_rank() if world > 1 else 0, world=world, device=device, sharded=sharded)


def lr_lambda(opt: OptimOptions, max_steps: int):
    def f(step: int) -> float:
        if step < opt.warmup_steps:
            return (step + 1) / opt.warmup_steps
        span = max(max_steps - opt.warmup_steps, 1)
        progress = min((step - opt.warmup_steps) / span, 1.0)
        return opt.min_lr_ratio + (1 - opt.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def make_optimizer(model, opt: OptimOptions, fused: bool) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": opt.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps,
                             fused=fused or None, foreach=None if fused else True)


def shard_model(model, d: Dist):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(d.device.type, (d.world,))
    # fp32 parameters and gradient reduction: bf16 is autocast inside, the same as without FSDP
    # (see the module docstring; gloo on CPU cannot reduce bf16 anyway).
    mp = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


# ---- main --------------------------------------------------------------------------------------
@entrypoint
def main(argv: list[str] | None = None) -> Path:
    if "TORCHELASTIC_RUN_ID" in os.environ:   # a torchrun worker: end with the launcher, never train on orphaned
        die_with_parent()
    cfg, recipe = parse_args(PretrainConfig, argv, prog="pretrain.train")
    threads = torch.get_num_threads()
    d = setup_distributed(cfg.train)
    try:
        return train(cfg, recipe_name(recipe, "pretrain"), d)
    except UserError as e:
        if d.rank == 0:
            raise
        # Every rank meets the same error (rank 0 decides and broadcasts); rank 0 says it once and
        # the launcher then stops this rank. Still alive after a while: the error was this rank's own.
        time.sleep(10)
        print(error_line(e), file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        torch.set_num_threads(threads)  # called in-process (tests, benchmark): leave the caller as it was
        if dist.is_initialized():
            dist.destroy_process_group()


def train(cfg: PretrainConfig, recipe: str, d: Dist) -> Path:
    """The whole run, one named phase per line."""
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    check_config(cfg, d.world)           # every value check before a run folder exists
    if cfg.heldout.files:
        read_docs(cfg.heldout.files, cfg.heldout.max_docs)   # a missing held-out file too
    data_dir = Path(cfg.data.path)       # rank 0: the resume / run-folder refusals, then the data, then a folder
    with open_run(cfg, recipe, d.rank, d.world, check=lambda: check_data_folder(data_dir)) as (run, ckpt, state):
        data = check_data_folder(data_dir)
        s = build(cfg, d, data, run)
        restore(s, ckpt, state)          # a shard that does not match its hash is refused here
        run.begin()
        if d.rank == 0:
            announce(s, recipe, ckpt)
        train_loop(s)
        if cfg.export:
            export(s)
        if d.world > 1:
            dist.barrier()
        if d.rank == 0:
            finish(s, recipe, heldout(s))
    return run.path


# ---- phases ------------------------------------------------------------------------------------
@dataclass
class Session:
    """What the phases of one run share (no trainer class: `train_loop` reads top to bottom)."""
    cfg: PretrainConfig
    d: Dist
    data: DataFolder
    run: Run
    hf_config: Any
    batches: Batches
    bf16: bool
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    autocast: Any
    n_params: int
    n_blocks: int
    loader: BlockLoader | None = None
    step: int = 0
    tokens_seen: int = 0
    peak_flops: dict = field(default_factory=dict)   # {"value", "source"} of the MFU denominator


def build(cfg: PretrainConfig, d: Dist, data: DataFolder, run: Run) -> Session:
    """Model (seeded), its placement (device, compile, FSDP), autocast, optimizer and schedule."""
    tokenizer = load_tokenizer(data.tokenizer_dir)
    vocab = -(-len(tokenizer) // cfg.model.vocab_multiple) * cfg.model.vocab_multiple
    hf_config = model_config(cfg.model, vocab, tokenizer.pad_token_id, tokenizer.eos_token_id)
    on_gpu = d.device.type == "cuda"
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and on_gpu)
    if cfg.train.precision not in ("auto", "fp32", "bf16"):
        raise PretrainError(f"train.precision must be auto, fp32 or bf16, not {cfg.train.precision!r}")
    batches = plan_batches(cfg.train, cfg.data.seq_len_tokens, d.world)

    model = build_model(hf_config, seed=cfg.train.seed, attn_implementation=cfg.model.attn_implementation)
    n_params, n_blocks = count_parameters(model), count_parameters(model, blocks_only=True)
    if cfg.train.activation_checkpointing:
        enable_activation_checkpointing(model)   # core.compat: the method is named by transformers version
    model.to(d.device)
    if cfg.train.compile:
        for layer in model.model.layers:
            layer.compile()
    if d.sharded:
        shard_model(model, d)
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    # The fused AdamW kernel (CPU and CUDA) is the fastest; sharded CPU params use the foreach one.
    optimizer = make_optimizer(model, cfg.optim, fused=not d.sharded or on_gpu)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.optim, cfg.train.max_steps))
    return Session(cfg=cfg, d=d, data=data, run=run, hf_config=hf_config, batches=batches, bf16=bf16,
                   model=model, optimizer=optimizer, scheduler=scheduler, autocast=autocast,
                   n_params=n_params, n_blocks=n_blocks)


def restore(s: Session, ckpt: Path | None, state: dict | None) -> None:
    """The data loader, fresh or from the checkpoint with model, optimizer, schedule, RNG and
    step; then any data added on this resume."""
    d = s.d

    def hasher(paths):  # every shard is hashed once, by one rank; all ranks get all hashes
        mine = {i: sha256_file(p) for i, p in enumerate(paths) if i % d.world == d.rank}
        if d.world > 1:
            parts = [None] * d.world
            dist.all_gather_object(parts, mine)
            mine = {k: v for part in parts for k, v in part.items()}
        return [mine[i] for i in range(len(paths))]

    if state is None:
        s.loader = BlockLoader.fresh(s.data.path, s.batches.seq, s.cfg.data.seed, hasher)
    else:
        s.loader = BlockLoader.load(ckpt, s.batches.seq, s.cfg.data.seed, hasher)
        ckpt_lib.load(ckpt, s.model, s.optimizer, d.rank)
        s.scheduler.load_state_dict(state["scheduler"])
        s.step, s.tokens_seen = state["step"], state["tokens_seen"]
    for extra in s.cfg.add_data:
        if state is None:
            raise PretrainError("add_data is for resuming a run; for a new run list the data in data.path")
        added = s.loader.add_data(extra, s.step)
        if d.rank == 0:
            print(f"add_data {extra}: {added} new blocks mixed into the remaining "
                  f"{len(s.loader.order) - s.loader.cursor} of epoch {s.loader.epoch}")


def announce(s: Session, recipe: str, ckpt: Path | None) -> None:
    """Rank 0: config.yaml, logs cut back to the checkpoint, and the run's opening lines."""
    cfg, b = s.cfg, s.batches
    s.run.write_config(cfg)
    # Rows past the checkpoint (or any, for a fresh start) were logged by a process that died.
    truncate_jsonl(s.run.path / "metrics.jsonl", s.step)
    truncate_jsonl(s.run.path / "data_trace.jsonl", s.step)
    print(f"pretrain: recipe {recipe} | run {s.run.path} | data {s.data.path} | "
          f"{'resume from ' + str(ckpt) if ckpt else 'new run'}")
    wrap = f"FSDP2 over {dist.get_backend()}" if s.d.sharded else "no FSDP"
    print(f"model {cfg.model.size}/{cfg.model.ffn}: {s.n_params / 1e6:.2f}M params | world {s.d.world}, {wrap} | "
          f"{'bf16' if s.bf16 else 'fp32'} on {s.d.device.type} | {b.global_tokens} tokens/step = "
          f"{s.d.world} x {b.accum} x {b.micro} x {b.seq} | {s.loader.num_blocks} blocks")


def train_loop(s: Session) -> None:
    """Optimizer steps up to train.max_steps: log, checkpoint; the final checkpoint at the end."""
    cfg, d, b = s.cfg, s.d, s.batches
    is_main = d.rank == 0
    peak, peak_src = peak_flops(d.device, torch.bfloat16 if s.bf16 else torch.float32, cfg.train.mfu_peak)
    s.peak_flops = {"value": peak, "source": peak_src, "mode": cfg.train.mfu_peak}
    if is_main:
        print(f"MFU peak: {peak / 1e12:.1f} TFLOP/s per device ({peak_src})")
    fpt = flops_per_token(s.hf_config, s.n_blocks, b.seq)
    logger = StepLogger(s.run.path / "metrics.jsonl" if is_main else None, cfg.train.max_steps, start_step=s.step,
                        stream=sys.stdout if is_main else open(os.devnull, "w"))
    trackers = Trackers(cfg, s.run.path, is_main)
    # The loss is taken from the final norm's output by a chunked lm_head + cross-entropy
    # (pretrain.model.linear_cross_entropy): the same value as cross-entropy of fp32-upcast full
    # logits, without materialising them (the biggest cost of a small model's step on CPU). A hook
    # catches the hidden states inside the model's forward, so FSDP's root unshard hooks still run.
    final_hidden = {}
    s.model.model.norm.register_forward_hook(lambda _mod, _args, out: final_hidden.__setitem__("h", out))
    s.model.train()
    t_log, steps_since_log = time.perf_counter(), 0
    while s.step < cfg.train.max_steps:
        ids, loss_sum, grad_norm, lr = train_step(s, final_hidden)
        steps_since_log += 1
        if is_main and cfg.train.trace_blocks:
            with open(s.run.path / "data_trace.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": s.step, "epoch": s.loader.epoch, "blocks": ids.tolist()}) + "\n")
        if s.step % cfg.train.log_every_steps == 0 or s.step == cfg.train.max_steps or s.step == 1:
            loss_val = loss_sum.item() / b.global_tokens
            if not math.isfinite(loss_val):
                raise PretrainError(f"loss is {loss_val} at step {s.step}; lower optim.lr or check the data")
            if d.device.type == "cuda":
                torch.cuda.synchronize()
            tok_s = steps_since_log * b.global_tokens / (time.perf_counter() - t_log)
            metrics = {"loss": loss_val, "lr": lr, "grad_norm": float(grad_norm), "tok_per_s": tok_s,
                       "mfu": fpt * tok_s / (peak * d.world), "epoch": s.loader.epoch,
                       "tokens_seen": s.tokens_seen}
            logger.step(s.step, **metrics)
            trackers.log(s.step, metrics)
            t_log, steps_since_log = time.perf_counter(), 0
        checkpoint_if_due(s)
    save_checkpoint(s)
    release_loss_buffers()
    trackers.close()


def train_step(s: Session, final_hidden: dict) -> tuple[Any, torch.Tensor, Any, float]:
    """One optimizer step over the global batch: (block ids, summed loss of all ranks, grad norm, lr)."""
    d, b, model = s.d, s.batches, s.model
    ids = s.loader.next_ids(b.global_seqs)
    batch = s.loader.tokens(ids[d.rank::d.world]).to(d.device, non_blocking=True)
    loss_sum = torch.zeros((), device=d.device)
    for k in range(b.accum):
        chunk = batch[k * b.micro:(k + 1) * b.micro]
        if d.sharded:
            model.set_requires_gradient_sync(k == b.accum - 1)
        inputs, targets = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
        with s.autocast:
            model(input_ids=inputs, logits_to_keep=1)  # fills final_hidden; no full logits
            loss = linear_cross_entropy(final_hidden.pop("h"), model.lm_head.weight, targets)
        # FSDP averages gradients over ranks; this scale makes the result the global token mean.
        (loss * (d.world / b.global_tokens)).backward()
        loss_sum += loss.detach()
    clip = s.cfg.optim.grad_clip_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
    if hasattr(grad_norm, "full_tensor"):
        grad_norm = grad_norm.full_tensor()
    lr = s.scheduler.get_last_lr()[0]
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.step += 1
    s.tokens_seen += b.global_tokens
    if d.world > 1:
        dist.all_reduce(loss_sum)
    return ids, loss_sum, grad_norm, lr


def checkpoint_if_due(s: Session) -> None:
    """Called once at the end of every step (the reliability tests kill the process right after it)."""
    if s.step % s.cfg.train.save_every_steps == 0 or s.step == s.cfg.train.max_steps:
        save_checkpoint(s)


def save_checkpoint(s: Session) -> None:
    if ckpt_lib.step_dir(s.run.path / "checkpoints", s.step).exists():
        return
    state = {"step": s.step, "tokens_seen": s.tokens_seen, "scheduler": s.scheduler.state_dict(),
             "config": to_dict(s.cfg), "hf_config": s.hf_config.to_dict(), "world_size": s.d.world,
             "data_path": str(s.data.path), "run_started": s.run.started}
    ckpt_lib.save(s.run.path / "checkpoints", s.step, s.model, s.optimizer, state, s.loader, s.d.rank,
                  s.cfg.train.keep_last_checkpoints)


def export(s: Session) -> None:
    """model/ (HF folder): the full weights gathered from every rank into a plain CPU model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    full = get_model_state_dict(s.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if s.d.rank == 0:
        plain = build_model(s.hf_config, seed=s.cfg.train.seed)
        plain.load_state_dict(full)
        save_hf(s.run.path / "model", plain, None, tokenizer_dir=s.data.tokenizer_dir, fresh_generation_config=True)


def heldout(s: Session) -> dict | None:
    """Rank 0, after the export: pretrain/heldout.py on model/ (None without held-out files or export)."""
    if not s.cfg.heldout.files or not s.cfg.export:
        return None
    from core.models import load_model
    model = load_model(s.run.path / "model")
    tokenizer = load_tokenizer(s.data.tokenizer_dir)
    return heldout_check(model, tokenizer, s.cfg.heldout, s.cfg.data.seq_len_tokens, s.run.path / "heldout.json")


def finish(s: Session, recipe: str, heldout_summary: dict | None = None) -> None:
    """Rank 0: loss plot, manifest.json (last), and the next command."""
    cfg, run, dm = s.cfg, s.run, s.data.manifest
    plot_metrics(run.path / "metrics.jsonl", run.path / "loss.png", keys=("loss", "lr"), title=run.path.name)
    final = [r for r in read_metrics(run.path / "metrics.jsonl") if "loss" in r]
    run.finish(parent=str(s.data.path), steps=s.step, tokens_seen=s.tokens_seen,
               data_recipe={"name": dm.get("recipe") or s.data.path.name, "hash": dm.get("content_hash")},
               data_sources=s.loader.sources, tokenizer_sha256=dm.get("tokenizer_sha256"),
               model={"size": cfg.model.size, "ffn": cfg.model.ffn, "params": s.n_params,
                      "model_type": s.hf_config.model_type},
               world_size=s.d.world, fsdp={"mode": cfg.train.fsdp, "sharded": s.d.sharded},
               final_loss=final[-1]["loss"] if final else None,
               peak_flops=s.peak_flops, checkpoint=str(ckpt_lib.latest(run.path / "checkpoints")),
               **({"heldout": heldout_summary} if heldout_summary else {}))
    print(f"\nrun folder: {run.path}")
    sft_recipe = "demo" if recipe == "demo" else "<sft recipe>"
    print(f"next: make sft RECIPE={sft_recipe} INIT={run.path}")


if __name__ == "__main__":
    main()
