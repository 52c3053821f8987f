"""Post-training plumbing shared by SFT (sft/train.py), DPO (rl/dpo.py) and GRPO (rl/grpo.py).

TRL (or LLaMA-Factory) runs the loop; this is the thin adapter that makes every post-training run
folder look alike: the parent run, device flags, LoRA, the bridge from the trainer's logs to
core.log.StepLogger (one step line + metrics.jsonl), and the export of the trained policy to
`<run>/model` through core.models.save_hf.

    model_dir, manifest = resolve_init(cfg.init_from)          # a finished run folder or an HF folder
    flags = device_flags(cfg.train.precision)                  # {"use_cpu": ..., "bf16": ...}
    callback = trainer_log_callback(run.path / "metrics.jsonl", {"loss": "loss", "learning_rate": "lr"})
    trainer = SomeTRLTrainer(..., peft_config=peft_config(cfg.lora), callbacks=[callback])
    train_quietly(trainer)
    export_policy(trainer.model, tokenizer, run.path / "model")

A LLaMA-Factory run (sft/llamafactory.py, rl/llamafactory_dpo.py) gets the same metrics.jsonl from its
trainer_state.json through `metrics_from_state`, and fails with `LlamaFactoryError`.

What a child stage inherits from its parent run's config.yaml is declared with `Inherit` (see
sft/train.py INHERITS) and applied by `inherit`; tests/unit/test_sft_inherit.py checks that every
declared parent field exists in that parent stage's config dataclass.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.config import ConfigError
from core.errors import UserError
from core.log import StepLogger
from core.runs import check_tokenizer_files, resolve_model_dir

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainingError(UserError, RuntimeError):
    """Training ran but produced nothing usable (e.g. a loss that is not finite)."""
    kind = "training"


class LlamaFactoryError(UserError, RuntimeError):
    """llamafactory-cli missing, failed, or wrote no usable output."""
    kind = "llamafactory"


@dataclass
class LoraOptions:
    """LoRA adapters (PEFT) instead of full fine-tuning; merged into model/ at the end."""
    enabled: bool = False                 # train LoRA adapters (the base stays frozen)
    r: int = 16                           # adapter rank
    alpha: int = 32                       # scale = alpha / r
    dropout: float = 0.05                 # dropout on the adapter input
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))  # Qwen2 linear layers


@dataclass
class OptimOptions:
    """AdamW and schedule of DPO and GRPO (DPO's defaults; GRPO's config sets lr 1e-6, constant)."""
    lr: float = 5.0e-7                    # peak learning rate (preference tuning of a full model wants it small)
    warmup_steps: int = 0                 # linear warmup in optimizer steps
    scheduler: str = "cosine"             # transformers lr_scheduler_type
    weight_decay: float = 0.0             # AdamW weight decay
    max_grad_norm: float = 1.0            # gradient clipping


# ---- parent run, inheritance, device -------------------------------------------------------------
def resolve_init(init_from: str) -> tuple[Path, dict | None]:
    """(model folder, parent manifest or None) of `init_from`: a finished run folder or an HF folder."""
    if not init_from:
        raise ConfigError("init_from is required: a finished run folder (runs/<stage>/<run>) or an HF model folder")
    model_dir, manifest = resolve_model_dir(init_from)
    check_tokenizer_files(model_dir)
    return model_dir, manifest


@dataclass(frozen=True)
class Inherit:
    """One hyperparameter a child stage takes from its parent run when its own recipe leaves it unset."""
    key: str                              # the child's field, "section.name" (None in its dataclass = unset)
    parents: dict[str, str]               # parent stage -> that stage's field holding the value
    fallback: Any                         # used when neither the recipe nor the parent sets it; its type is the field's


def _dotted_get(d: dict, key: str):
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def inherit(cfg, parent_dir: Path | None, parent_stage: str | None, declared: list[Inherit]) -> dict:
    """Fill each unset (None) field of `cfg` named in `declared` from the parent's config.yaml, else its
    fallback; print and return {key: {"value", "from"}} for the manifest."""
    parent_cfg = {}
    if parent_dir is not None and (parent_dir / "config.yaml").is_file():
        parent_cfg = yaml.safe_load((parent_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    out = {}
    for item in declared:
        section, name = item.key.split(".")
        if getattr(getattr(cfg, section), name) is not None:
            continue
        value, origin = item.fallback, "default (not set in the recipe or the parent)"
        parent_key = item.parents.get(parent_stage or "")
        v = _dotted_get(parent_cfg, parent_key) if parent_key else None
        if v is not None:
            value, origin = v, f"parent {parent_dir / 'config.yaml'}: {parent_key}"
        setattr(getattr(cfg, section), name, type(item.fallback)(value))
        out[item.key] = {"value": getattr(getattr(cfg, section), name), "from": origin}
        print(f"inherit {item.key} = {out[item.key]['value']}  <- {origin}")
    return out


def device_flags(precision: str) -> dict:
    """TrainingArguments flags: CPU when there is no GPU; bf16 on a GPU unless fp32 is asked for."""
    import torch
    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be auto|bf16|fp32, got {precision!r}")
    cuda = torch.cuda.is_available()
    return {"use_cpu": not cuda, "bf16": precision == "bf16" or (precision == "auto" and cuda)}


# ---- model in, model out ------------------------------------------------------------------------
def load_policy(model_dir: Path, bf16: bool):
    """(model, tokenizer) of a parent's model folder, for preference / RL training (needs a pad token)."""
    import torch

    from core.models import load_model, load_tokenizer
    tok = load_tokenizer(model_dir)
    if tok.pad_token is None:
        raise ConfigError(f"{model_dir}: the tokenizer has no pad token (expected <|endoftext|>)")
    return load_model(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32), tok


def peft_config(lora: LoraOptions):
    """PEFT's LoraConfig for a causal LM, or None when LoRA is off."""
    if not lora.enabled:
        return None
    from peft import LoraConfig
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def export_policy(model, tokenizer, out_dir: Path) -> Path:
    """The trained policy (LoRA merged) + tokenizer (chat template) + generation config, as an HF folder."""
    from core.models import save_hf
    try:
        from peft import PeftModel
        if isinstance(model, PeftModel):
            model = model.merge_and_unload()
    except ImportError:
        pass
    save_hf(out_dir, model, tokenizer)
    ckpt = out_dir.parent / "checkpoints"
    if ckpt.is_dir() and not any(ckpt.iterdir()):
        ckpt.rmdir()      # no checkpoints were asked for: do not leave an empty folder behind
    return out_dir


# ---- the trainer's logs -> our step lines ---------------------------------------------------------
def _record(logs: dict, key_map: dict[str, str]) -> dict:
    """A trainer log under our names, in `key_map`'s order: it maps the trainer's keys to ours, and a
    key ending in "/" maps a family ("rewards/" -> "reward/": rewards/<f>/mean -> reward/<f>, in the
    log's order). Non-finite values other than the loss are left out (a NaN grad norm says nothing
    the loss does not)."""
    def usable(k, v):
        return isinstance(v, (int, float)) and (k == "loss" or not isinstance(v, float) or math.isfinite(v))
    out = {}
    for k, short in key_map.items():
        if not k.endswith("/"):
            if usable(k, logs.get(k)):
                out[short] = logs[k]
            continue
        for name, v in logs.items():
            if name.startswith(k) and name.endswith("/mean") and usable(name, v):
                out[short + name[len(k):-len("/mean")]] = v
    return out


def _with_throughput(rec: dict, name: str, per_s: float) -> dict:
    """`rec` with its running token count `name` as an int and tok_per_s just before it; neither
    when no tokens were counted."""
    out = {}
    for k, v in rec.items():
        if k == name:
            if not v:
                continue
            out["tok_per_s"], v = per_s, int(v)
        out[k] = v
    return out


def trainer_log_callback(metrics_path: Path, key_map: dict[str, str]):
    """A TrainerCallback forwarding each training log (those with a loss) to core.log.StepLogger under
    our names (see `_record`). When `key_map` names "num_tokens", the record also gets `tok_per_s`
    since the previous log. `.last` is the last record (+ "num_tokens"), `.summary` the
    end-of-training numbers (train_runtime ...)."""
    from transformers import TrainerCallback

    class StepLogCallback(TrainerCallback):
        def __init__(self):
            self.logger: StepLogger | None = None
            self.last: dict = {}
            self.summary: dict = {}
            self.prev = (0.0, time.time())      # (num_tokens, time) at the previous log

        def on_train_begin(self, args, state, control, **kwargs):
            self.logger = StepLogger(metrics_path, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "train_runtime" in logs:          # the end-of-training summary, not a step
                self.summary = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                return
            if "loss" not in logs or self.logger is None:
                return
            rec, now = _record(logs, key_map), time.time()
            tokens = float(logs.get("num_tokens") or 0.0)
            if "num_tokens" in key_map:
                per_s = (tokens - self.prev[0]) / max(now - self.prev[1], 1e-9)
                rec = _with_throughput(rec, key_map["num_tokens"], per_s)
            self.prev = (tokens, now)
            self.last = {**rec, "num_tokens": logs.get("num_tokens")}
            self.logger.step(state.global_step, **rec)

    return StepLogCallback()


def train_quietly(trainer):
    """trainer.train() without transformers' own log printers (our step line replaces them) and
    without known deprecation noise; returns its TrainOutput."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    with warnings.catch_warnings():
        # TRL 1.16 and PEFT still call transformers' renamed is_gradient_checkpointing: not ours to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return trainer.train()


# ---- LLaMA-Factory ------------------------------------------------------------------------------
def metrics_from_state(state_path: Path, metrics_path: Path, key_map: dict[str, str]) -> list[dict]:
    """Step lines + metrics.jsonl (rewritten) from the log_history of LLaMA-Factory's trainer_state.json,
    under our names (`_record`); returns the records. A run shorter than logging_steps logged no
    step: its end-of-training train_loss stands in as the one record (with lr 0.0, as that summary
    has none, so the record has the same keys as a logged step's)."""
    state = json.loads(state_path.read_text(encoding="utf-8"))
    history = state.get("log_history", [])
    logs = [h for h in history if "loss" in h and "step" in h]
    if not logs and history and "train_loss" in history[-1]:
        logs = [{"learning_rate": 0.0, **history[-1], "loss": history[-1]["train_loss"]}]
    logger = StepLogger(metrics_path, state.get("max_steps") or len(logs), append=False)
    records = []
    for h in logs:
        records.append(_record(h, key_map))
        logger.step(int(h["step"]), **records[-1])
    return records
