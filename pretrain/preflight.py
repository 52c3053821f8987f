"""Every check of a pretraining command that can fail before anything is written: config values,
the batch plan for the number of processes, the data folder, and the run folder it would write
(the resume target, a finished run, a run in use). pretrain/train.py runs them before it creates
or locks a run folder; pretrain/launch.py (`make pretrain`) runs them once before any worker
starts, so a user error prints one line and no torchrun traceback.

Run as (through the launcher, which calls `check_start` first):
    make pretrain RECIPE=demo                    # CPU
    make pretrain RECIPE=base_0p5b NPROC=8       # GPU node
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.config import ConfigError
from core.errors import UserError
from core.runs import read_manifest, tokenizer_hash
from pretrain.model import SIZES
from pretrain.resume import find_run
from pretrain.trackers import Trackers


class PretrainError(UserError):
    """A bad config, data folder or checkpoint for this run: one line on stderr, exit code 2."""
    kind = "pretrain"


@dataclass
class DataFolder:
    """A checked data folder (data_recipes/shards.py): shards, tokenizer and manifest."""
    path: Path
    tokenizer_dir: Path
    manifest: dict


@dataclass
class Batches:
    """How one optimizer step's global batch splits: ranks x accumulation micro-steps x sequences."""
    seq: int                            # tokens per sequence
    global_seqs: int                    # sequences per step, all ranks
    micro: int                          # sequences per forward
    accum: int                          # micro-steps per optimizer step

    @property
    def global_tokens(self) -> int:
        return self.global_seqs * self.seq


def check_data_folder(data_dir: Path) -> DataFolder:
    """A finished data folder whose tokenizer is still the one its shards were made with."""
    if not (data_dir / "manifest.json").is_file():
        raise PretrainError(f"data folder not found or unfinished: {data_dir} (no manifest.json); run `make data` first")
    tok_dir = data_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        raise PretrainError(f"tokenizer missing: {tok_dir}/tokenizer.json (the data folder must hold the tokenizer "
                            f"its shards were made with)")
    manifest = read_manifest(data_dir)
    recorded = manifest.get("tokenizer_sha256")
    if recorded and tokenizer_hash(tok_dir) != recorded:
        raise PretrainError(f"tokenizer changed: {tok_dir} no longer matches the tokenizer_sha256 in "
                            f"{data_dir}/manifest.json, so the shards' token ids would be misread")
    return DataFolder(data_dir, tok_dir, manifest)


def plan_batches(train, seq: int, world: int) -> Batches:
    if train.batch_size_tokens % seq:
        raise PretrainError(f"train.batch_size_tokens={train.batch_size_tokens} is not a multiple of "
                            f"data.seq_len_tokens={seq}")
    global_seqs = train.batch_size_tokens // seq
    if global_seqs % world:
        raise PretrainError(f"{global_seqs} sequences per step do not split over {world} processes")
    per_rank = global_seqs // world
    micro = min(train.micro_batch_size, per_rank)
    if per_rank % micro:
        raise PretrainError(f"{per_rank} sequences per process per step are not a multiple of "
                            f"train.micro_batch_size={micro}")
    return Batches(seq=seq, global_seqs=global_seqs, micro=micro, accum=per_rank // micro)


def check_config(cfg, world: int) -> Batches:
    """The values of a PretrainConfig that no later step may find wrong; returns the batch plan."""
    from core.models import FFN_VARIANTS
    m, t, o = cfg.model, cfg.train, cfg.optim
    if m.size not in SIZES:
        raise ConfigError(f"model.size '{m.size}' is not one of {', '.join(SIZES)}")
    if m.ffn not in FFN_VARIANTS:
        raise ConfigError(f"model.ffn '{m.ffn}' is not one of {', '.join(FFN_VARIANTS)}")
    if t.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision must be auto, fp32 or bf16, not {t.precision!r}")
    positive = {"train.max_steps": t.max_steps, "train.batch_size_tokens": t.batch_size_tokens,
                "train.micro_batch_size": t.micro_batch_size, "train.log_every_steps": t.log_every_steps,
                "train.save_every_steps": t.save_every_steps, "train.keep_last_checkpoints": t.keep_last_checkpoints,
                "data.seq_len_tokens": cfg.data.seq_len_tokens, "optim.lr": o.lr, "model.vocab_multiple": m.vocab_multiple}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if cfg.data.seq_len_tokens > SIZES[m.size].max_seq_len_tokens:
        raise ConfigError(f"data.seq_len_tokens={cfg.data.seq_len_tokens} is longer than model.size "
                          f"{m.size}'s max_seq_len_tokens={SIZES[m.size].max_seq_len_tokens}")
    if o.warmup_steps < 0 or not 0 <= o.min_lr_ratio <= 1:
        raise ConfigError(f"optim.warmup_steps must be >= 0 and optim.min_lr_ratio in [0, 1], got "
                          f"{o.warmup_steps} and {o.min_lr_ratio}")
    if cfg.add_data and not cfg.resume:
        raise ConfigError("add_data is for resuming a run; for a new run list the data in data.path")
    Trackers.check_installed(cfg)
    return plan_batches(t, cfg.data.seq_len_tokens, world)


def check_start(cfg, recipe: str, world: int) -> DataFolder:
    """All of the above plus the run folder this command would write; creates nothing."""
    check_config(cfg, world)
    data = check_data_folder(Path(cfg.data.path))
    find_run(cfg, recipe)
    return data
