"""Pretrain a Qwen2-architecture model on token shards with FSDP2, exact hash-checked resume,
mid-run data addition and an HF export at the end.

Reads a data folder `runs/data/<name>/` (data_recipes/shards.py: tokenizer/, shards/, manifest.json)
and writes `runs/pretrain/<recipe>-<stamp>/`: config.yaml, metrics.jsonl, loss.png,
checkpoints/step_NNNNNN/ (torch.distributed.checkpoint), model/ (HF folder) and manifest.json last.

Run as:
    make pretrain RECIPE=demo                               # CPU, 1 process, debug size, ~1-2 min
    make pretrain RECIPE=demo NPROC=2                       # CPU, 2 processes: FSDP2 over gloo
    make pretrain RECIPE=base_0p5b NPROC=8                  # one GPU node: FSDP2 over nccl, bf16
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=<host>:29500 \\
        -m pretrain.train pretrain/recipes/steel_1b.yaml    # several nodes, same script
    make pretrain RECIPE=demo ARGS="run.name=<run> resume=auto"                         # continue
    make pretrain RECIPE=demo ARGS="run.name=<run> resume=auto add_data=[runs/data/more]"  # add shards

Parallelism: with one process there is no process group and no FSDP wrapper (the plain module is
fastest there and checkpoints are the same DCP format); with more, `fully_shard` wraps every decoder
block and then the root, gloo on CPU and nccl on GPU. Precision `auto` is bf16 on GPU (FSDP
MixedPrecisionPolicy, fp32 gradients reduction; autocast without FSDP) and fp32 on CPU; `bf16` on
CPU uses autocast.
"""
from __future__ import annotations

import os

# Before torch loads OpenMP: with spinning waits, 2 threads on 2 cores shared with other processes
# ran a debug-size step 8x slower (1.67 s vs 0.17 s measured); passive waits cost ~nothing alone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from core.config import ConfigError, parse_args, recipe_name, to_dict
from core.log import StepLogger, plot_metrics, read_metrics
from core.runs import (Run, RunError, RunOptions, atomic_write_text, read_manifest, sha256_file,
                       tokenizer_hash)
from pretrain import checkpoint as ckpt_lib
from pretrain.data import BlockLoader
from pretrain.mfu import peak_flops
from pretrain.model import (build_model, count_params, flops_per_token, linear_cross_entropy, model_config,
                           release_loss_buffers)


@dataclass
class DataSection:
    path: str = "runs/data/demo"        # data folder written by `make data` (tokenizer/ + shards/)
    seq_len_tokens: int = 256           # tokens per training sequence (blocks are seq_len + 1 tokens)
    seed: int = 0                       # seed of the block permutation (per epoch)


@dataclass
class ModelSection:
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
class OptimSection:
    lr: float = 3e-4                    # peak learning rate
    min_lr_ratio: float = 0.1           # cosine floor as a fraction of lr
    warmup_steps: int = 100             # linear warmup from 0 to lr
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1           # on matrices and embeddings, not on norms
    grad_clip_norm: float = 1.0         # max global grad norm; <= 0 disables clipping


@dataclass
class TrainSection:
    max_steps: int = 1000               # optimizer steps
    batch_size_tokens: int = 65536      # global batch in tokens (all ranks, all micro-steps)
    micro_batch_size: int = 8           # sequences per rank per forward; accumulation fills the rest
    precision: str = "auto"             # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    activation_checkpointing: bool = False  # recompute each block in backward (less memory)
    compile: bool = False               # torch.compile each decoder block
    seed: int = 0                       # model init and torch RNG
    cpu_threads: int = 0                # torch threads per process on CPU; 0 = torch's default
    log_every_steps: int = 10
    save_every_steps: int = 500         # checkpoint interval (a final checkpoint is always written)
    keep_last_checkpoints: int = 3      # older complete checkpoints are deleted
    trace_blocks: bool = False          # write data_trace.jsonl: the global block ids of every step


@dataclass
class LoggingSection:
    wandb: bool = False                 # log to Weights & Biases (needs `pip install wandb`)
    wandb_project: str = "zhllm-kit"
    tensorboard: bool = False           # write TensorBoard events to <run>/tb


@dataclass
class PretrainConfig:
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    run: RunOptions = field(default_factory=RunOptions)
    resume: str = ""                    # "" | auto (latest checkpoint of run.name, if any) | <run or checkpoint dir>
    add_data: list[str] = field(default_factory=list)  # data folders added on resume
    export: bool = True                 # write model/ (HF) at the end


# Keys that may differ between a checkpoint and the command that resumes it.
RESUME_MAY_CHANGE = ("resume", "add_data", "export", "logging.", "run.", "train.log_every_steps",
                     "train.save_every_steps", "train.keep_last_checkpoints", "train.compile",
                     "train.activation_checkpointing", "train.cpu_threads", "train.trace_blocks",
                     "train.micro_batch_size", "model.attn_implementation")


class Fail(Exception):
    """An error to report in one line and exit with (bad config, data or checkpoint)."""


# ---- setup -------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device


def setup_distributed(train: TrainSection) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    elif train.cpu_threads > 0:
        torch.set_num_threads(train.cpu_threads)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank=dist.get_rank() if world > 1 else 0, world=world, device=device)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_config_matches(cfg: PretrainConfig, saved: dict, ckpt: Path) -> None:
    now, then = _flat(to_dict(cfg)), _flat(saved)
    diffs = [f"{k}: checkpoint {then.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(now) | set(then))
             if not k.startswith(RESUME_MAY_CHANGE) and now.get(k) != then.get(k)]
    if diffs:
        raise Fail(f"config does not match checkpoint {ckpt}: " + "; ".join(diffs) +
                   ". Resume with the checkpoint's settings or start a new run (run.name=...).")


def resolve_run(cfg: PretrainConfig, recipe: str) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None). Rank 0 only."""
    if cfg.resume in ("", "auto"):
        if cfg.resume == "auto" and not cfg.run.name:
            raise Fail("resume=auto needs run.name=<run> (the run folder to continue)")
        run = Run.create("pretrain", recipe, cfg.run, resume=cfg.resume == "auto").path
        ckpt = ckpt_lib.latest(run / "checkpoints")
        if cfg.resume == "" and ckpt is not None:
            raise Fail(f"{run} already has checkpoints; pass resume=auto to continue it, or another run.name")
    else:
        p = Path(cfg.resume)
        if (p / ckpt_lib.STATE_FILE).is_file():
            run, ckpt = p.parent.parent, p
        elif p.is_dir():
            run, ckpt = p, ckpt_lib.latest(p / "checkpoints")
            if ckpt is None:
                raise Fail(f"resume={p}: no complete checkpoint under {p}/checkpoints")
        else:
            raise Fail(f"resume={p}: neither a run folder nor a checkpoint folder")
    if (run / "manifest.json").is_file():
        raise Fail(f"{run} is a finished run (manifest.json exists); start a new run instead")
    return run, ckpt


def lr_lambda(opt: OptimSection, max_steps: int):
    def f(step: int) -> float:
        if step < opt.warmup_steps:
            return (step + 1) / opt.warmup_steps
        span = max(max_steps - opt.warmup_steps, 1)
        progress = min((step - opt.warmup_steps) / span, 1.0)
        return opt.min_lr_ratio + (1 - opt.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def make_optimizer(model, opt: OptimSection, fused: bool) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": opt.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps,
                             fused=fused or None, foreach=None if fused else True)


def shard_model(model, d: Dist, bf16: bool):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(d.device.type, (d.world,))
    # On GPU FSDP casts parameters to bf16 for compute and reduces gradients in fp32; on CPU gloo
    # cannot reduce bf16, so bf16 there means autocast around the fp32 FSDP model.
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if bf16 and d.device.type == "cuda" else MixedPrecisionPolicy()
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


class Trackers:
    """Optional W&B / TensorBoard (off by default; imported only when switched on)."""

    @staticmethod
    def check_installed(cfg: PretrainConfig) -> None:
        """Before any work, on every rank: a missing package is a clear error, not a hang later."""
        import importlib.util
        for on, module in ((cfg.logging.wandb, "wandb"), (cfg.logging.tensorboard, "tensorboard")):
            if on and importlib.util.find_spec(module) is None:
                raise Fail(f"{module} is not installed (logging.{module}=true): .venv/bin/pip install -e '.[tracking]'")

    def __init__(self, cfg: PretrainConfig, run_path: Path, enabled: bool):
        self.wandb = self.tb = None
        if not enabled:
            return
        if cfg.logging.wandb:
            import wandb
            self.wandb = wandb.init(project=cfg.logging.wandb_project, name=run_path.name, config=to_dict(cfg),
                                    dir=str(run_path), resume="allow", id=run_path.name)
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_path / "tb"))

    def log(self, step: int, metrics: dict) -> None:
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.tb is not None:
            self.tb.close()


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """After a resume from `last_step`, drop rows logged past it by the interrupted process."""
    if path.is_file():
        rows = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ---- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> Path:
    cfg, recipe = parse_args(PretrainConfig, argv, prog="pretrain.train")
    threads = torch.get_num_threads()
    d = setup_distributed(cfg.train)
    try:
        return train(cfg, recipe_name(recipe, "pretrain"), d)
    except (Fail, RunError, ConfigError) as e:
        print(f"pretrain: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(f"pretrain: error: {e}") from None
    finally:
        torch.set_num_threads(threads)  # called in-process (tests, benchmark): leave the caller as it was
        if dist.is_initialized():
            dist.destroy_process_group()


def train(cfg: PretrainConfig, recipe: str, d: Dist) -> Path:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    is_main = d.rank == 0
    Trackers.check_installed(cfg)
    data_dir = Path(cfg.data.path)
    if not (data_dir / "manifest.json").is_file():
        raise Fail(f"data folder not found or unfinished: {data_dir} (no manifest.json); run `make data` first")
    tok_dir = data_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        raise Fail(f"tokenizer missing: {tok_dir}/tokenizer.json (the data folder must hold the tokenizer "
                   f"its shards were made with)")
    data_manifest = read_manifest(data_dir)
    recorded = data_manifest.get("tokenizer_sha256")
    if recorded and tokenizer_hash(tok_dir) != recorded:
        raise Fail(f"tokenizer changed: {tok_dir} no longer matches the tokenizer_sha256 in "
                   f"{data_dir}/manifest.json, so the shards' token ids would be misread")

    # Rank 0 picks (or creates) the run folder; everyone uses its answer.
    picked = [None]
    if is_main:
        try:
            picked = [resolve_run(cfg, recipe)]
        except (Fail, RunError) as e:
            picked = [e]
    if d.world > 1:
        dist.broadcast_object_list(picked, src=0)
    if isinstance(picked[0], Exception):
        raise picked[0]
    run_path, ckpt = picked[0]
    state = ckpt_lib.read_state(ckpt) if ckpt else None
    if state is not None:
        check_config_matches(cfg, state["config"], ckpt)
    run = Run(run_path, "pretrain", recipe)
    if state is not None:
        run.started = state.get("run_started", run.started)

    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    vocab = -(-len(tokenizer) // cfg.model.vocab_multiple) * cfg.model.vocab_multiple
    hf_config = model_config(cfg.model, vocab, tokenizer.pad_token_id, tokenizer.eos_token_id)
    on_gpu = d.device.type == "cuda"
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and on_gpu)
    if cfg.train.precision not in ("auto", "fp32", "bf16"):
        raise Fail(f"train.precision must be auto, fp32 or bf16, not {cfg.train.precision!r}")

    seq = cfg.data.seq_len_tokens
    if cfg.train.batch_size_tokens % seq:
        raise Fail(f"train.batch_size_tokens={cfg.train.batch_size_tokens} is not a multiple of data.seq_len_tokens={seq}")
    global_seqs = cfg.train.batch_size_tokens // seq
    if global_seqs % d.world:
        raise Fail(f"{global_seqs} sequences per step do not split over {d.world} processes")
    per_rank = global_seqs // d.world
    micro = min(cfg.train.micro_batch_size, per_rank)
    if per_rank % micro:
        raise Fail(f"{per_rank} sequences per process per step are not a multiple of train.micro_batch_size={micro}")
    accum = per_rank // micro
    global_tokens = global_seqs * seq

    model = build_model(hf_config, seed=cfg.train.seed, attn_implementation=cfg.model.attn_implementation)
    n_params, n_blocks = count_params(model), count_params(model, blocks_only=True)
    if cfg.train.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.to(d.device)
    if cfg.train.compile:
        for layer in model.model.layers:
            layer.compile()
    if d.world > 1:
        shard_model(model, d, bf16)
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16) \
        if bf16 and not (on_gpu and d.world > 1) else contextlib.nullcontext()
    # The fused AdamW kernel (CPU and CUDA) is the fastest; sharded CPU params use the foreach one.
    optimizer = make_optimizer(model, cfg.optim, fused=d.world == 1 or on_gpu)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.optim, cfg.train.max_steps))

    def hasher(paths):  # every shard is hashed once, by one rank; all ranks get all hashes
        mine = {i: sha256_file(p) for i, p in enumerate(paths) if i % d.world == d.rank}
        if d.world > 1:
            parts = [None] * d.world
            dist.all_gather_object(parts, mine)
            mine = {k: v for part in parts for k, v in part.items()}
        return [mine[i] for i in range(len(paths))]

    step, tokens_seen = 0, 0
    if state is None:
        loader = BlockLoader.fresh(data_dir, seq, cfg.data.seed, hasher)
    else:
        loader = BlockLoader.load(ckpt, seq, cfg.data.seed, hasher)
        ckpt_lib.load(ckpt, model, optimizer, d.rank)
        scheduler.load_state_dict(state["scheduler"])
        step, tokens_seen = state["step"], state["tokens_seen"]
    for extra in cfg.add_data:
        if state is None:
            raise Fail("add_data is for resuming a run; for a new run list the data in data.path")
        added = loader.add_data(extra, step)
        if is_main:
            print(f"add_data {extra}: {added} new blocks mixed into the remaining "
                  f"{len(loader.order) - loader.cursor} of epoch {loader.epoch}")

    if is_main:
        run.write_config(cfg)
        # Rows past the checkpoint (or any, for a fresh start) were logged by a process that died.
        _truncate_jsonl(run.path / "metrics.jsonl", step)
        _truncate_jsonl(run.path / "data_trace.jsonl", step)
        print(f"pretrain: recipe {recipe} | run {run.path} | data {data_dir} | "
              f"{'resume from ' + str(ckpt) if ckpt else 'new run'}")
        print(f"model {cfg.model.size}/{cfg.model.ffn}: {n_params / 1e6:.2f}M params | world {d.world} | "
              f"{'bf16' if bf16 else 'fp32'} on {d.device.type} | {global_tokens} tokens/step = "
              f"{d.world} x {accum} x {micro} x {seq} | {loader.num_blocks} blocks")
    peak, peak_src = peak_flops(d.device, torch.bfloat16 if bf16 else torch.float32)
    fpt = flops_per_token(hf_config, n_blocks, seq)
    logger = StepLogger(run.path / "metrics.jsonl" if is_main else None, cfg.train.max_steps, start_step=step,
                        stream=sys.stdout if is_main else open(os.devnull, "w"))
    trackers = Trackers(cfg, run.path, is_main)

    def trainer_state() -> dict:
        return {"step": step, "tokens_seen": tokens_seen, "scheduler": scheduler.state_dict(),
                "config": to_dict(cfg), "hf_config": hf_config.to_dict(), "world_size": d.world,
                "data_path": str(data_dir), "run_started": run.started}

    def save() -> None:
        if not ckpt_lib.step_dir(run.path / "checkpoints", step).exists():
            ckpt_lib.save(run.path / "checkpoints", step, model, optimizer, trainer_state(), loader,
                          d.rank, cfg.train.keep_last_checkpoints)

    # The loss is taken from the final norm's output by a chunked lm_head + cross-entropy
    # (pretrain.model.linear_cross_entropy): the same value as cross-entropy of fp32-upcast full
    # logits, without materialising them (the biggest cost of a small model's step on CPU). A hook
    # catches the hidden states inside the model's forward, so FSDP's root unshard hooks still run.
    final_hidden = {}
    model.model.norm.register_forward_hook(lambda _mod, _args, out: final_hidden.__setitem__("h", out))
    model.train()
    kill_at = os.environ.get("ZHLLM_FAULT_KILL_AT_STEP")
    t_log, steps_since_log = time.perf_counter(), 0
    while step < cfg.train.max_steps:
        ids = loader.next_ids(global_seqs)
        batch = loader.tokens(ids[d.rank::d.world]).to(d.device, non_blocking=True)
        loss_sum = torch.zeros((), device=d.device)
        for k in range(accum):
            chunk = batch[k * micro:(k + 1) * micro]
            if d.world > 1:
                model.set_requires_gradient_sync(k == accum - 1)
            inputs, targets = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
            with autocast:
                model(input_ids=inputs, logits_to_keep=1)  # fills final_hidden; no full logits
                loss = linear_cross_entropy(final_hidden.pop("h"), model.lm_head.weight, targets)
            # FSDP averages gradients over ranks; this scale makes the result the global token mean.
            (loss * (d.world / global_tokens)).backward()
            loss_sum += loss.detach()
        max_norm = cfg.optim.grad_clip_norm if cfg.optim.grad_clip_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += global_tokens
        steps_since_log += 1
        if d.world > 1:
            dist.all_reduce(loss_sum)
        if is_main and cfg.train.trace_blocks:
            with open(run.path / "data_trace.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "epoch": loader.epoch, "blocks": ids.tolist()}) + "\n")
        if step % cfg.train.log_every_steps == 0 or step == cfg.train.max_steps or step == 1:
            loss_val = loss_sum.item() / global_tokens
            if not math.isfinite(loss_val):
                raise Fail(f"loss is {loss_val} at step {step}; lower optim.lr or check the data")
            if on_gpu:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t_log
            tok_s = steps_since_log * global_tokens / dt
            metrics = {"loss": loss_val, "lr": lr, "grad_norm": float(grad_norm), "tok_per_s": tok_s,
                       "mfu": fpt * tok_s / (peak * d.world), "epoch": loader.epoch, "tokens_seen": tokens_seen}
            logger.step(step, **metrics)
            trackers.log(step, metrics)
            t_log, steps_since_log = time.perf_counter(), 0
        if step % cfg.train.save_every_steps == 0 or step == cfg.train.max_steps:
            save()
        if kill_at == str(step):  # fault injection for the reliability tests
            os.kill(os.getpid(), signal.SIGKILL)

    save()
    release_loss_buffers()
    trackers.close()
    if cfg.export:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if is_main:
            from pretrain.export import save_hf
            plain = build_model(hf_config, seed=cfg.train.seed)
            plain.load_state_dict(full)
            save_hf(run.path / "model", plain, tok_dir)
    if d.world > 1:
        dist.barrier()
    if is_main:
        plot_metrics(run.path / "metrics.jsonl", run.path / "loss.png", keys=("loss", "lr"), title=run.path.name)
        final = [r for r in read_metrics(run.path / "metrics.jsonl") if "loss" in r]
        run.finish(parent=str(data_dir), steps=step, tokens_seen=tokens_seen,
                   data_recipe={"name": data_manifest.get("recipe") or data_dir.name,
                                "hash": data_manifest.get("content_hash")},
                   data_sources=loader.sources, tokenizer_sha256=data_manifest.get("tokenizer_sha256"),
                   model={"size": cfg.model.size, "ffn": cfg.model.ffn, "params": n_params,
                          "model_type": hf_config.model_type},
                   world_size=d.world, final_loss=final[-1]["loss"] if final else None,
                   peak_flops={"value": peak, "source": peak_src},
                   checkpoint=str(ckpt_lib.latest(run.path / "checkpoints")))
        print(f"\nrun folder: {run.path}")
        sft_recipe = "demo" if recipe == "demo" else "<sft recipe>"
        print(f"next: make sft RECIPE={sft_recipe} INIT={run.path}")
    return run.path


if __name__ == "__main__":
    main()
