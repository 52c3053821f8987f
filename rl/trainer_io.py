"""What DPO and GRPO share around TRL: the parent run, device flags, LoRA, decontamination, the log
bridge to core.log.StepLogger, and the export of the trained policy to `<run>/model`.

TRL runs the loop; this module is the thin adapter that makes its output look like every other
stage's run folder (one step line per log, metrics.jsonl, model/ with tokenizer and generation config).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from core.log import StepLogger
from core.runs import check_tokenizer_files, resolve_model_dir

# TRL 1.16 and PEFT still call transformers' renamed is_gradient_checkpointing: noise, not a problem of ours.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraOptions:
    """LoRA adapters instead of full fine-tuning; merged into the weights at export."""
    enabled: bool = False                 # train LoRA adapters (the policy's base stays frozen)
    r: int = 16                           # adapter rank
    alpha: int = 32                       # scaling numerator (scale = alpha / r)
    dropout: float = 0.05                 # dropout on the adapter input
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))  # Qwen2 linear layers


@dataclass
class DecontamOptions:
    """Decontamination of the training text against benchmark questions (as in SFT)."""
    policy: str = "drop"                  # drop | flag | none (YAML reads a bare `off` as false: also none)
    benchmarks: list[str] = field(default_factory=lambda: [   # "name:folder" in the official CSV layout
        "ceval:{data_root}/ceval", "cmmlu:{data_root}/cmmlu", "demo:eval/benchmarks/demo_bench"])
    ngram_tokens: int = 8                 # n-gram length in tokens (CJK characters / latin words)
    threshold: float = 0.5                # fraction of a benchmark item's n-grams that makes a hit
    on_missing: str = "error"             # a benchmark folder that is absent: error (as in SFT) | warn


@dataclass
class OptimOptions:
    """AdamW and schedule (DPO's defaults; GRPO's config sets lr 1e-6 and a constant schedule)."""
    lr: float = 5.0e-7                    # peak learning rate (preference tuning of a full model wants it small)
    warmup_steps: int = 0                 # linear warmup in optimizer steps
    scheduler: str = "cosine"             # transformers lr_scheduler_type
    weight_decay: float = 0.0             # AdamW weight decay
    max_grad_norm: float = 1.0            # gradient clipping


# ---- parent run and device ----------------------------------------------------------------------
def resolve_init(init_from: str) -> tuple[Path, dict | None]:
    """(model folder, parent manifest or None) of `init_from`: a finished run folder or an HF folder."""
    if not init_from:
        raise SystemExit("config error: init_from is required (a finished run folder, e.g. runs/sft/<run>)")
    model_dir, manifest = resolve_model_dir(init_from)
    check_tokenizer_files(model_dir)
    return model_dir, manifest


def device_flags(precision: str) -> dict:
    """TrainingArguments flags: CPU when there is no GPU; bf16 on a GPU unless fp32 is asked for."""
    import torch
    cuda = torch.cuda.is_available()
    if precision not in ("auto", "bf16", "fp32"):
        raise SystemExit(f"config error: train.precision must be auto|bf16|fp32, got {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and cuda)
    return {"use_cpu": not cuda, "bf16": bf16}


def load_policy(model_dir: Path, bf16: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import pretrain.model  # noqa: F401  registers our zhllm_* FFN variants with the Auto classes
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        raise SystemExit(f"{model_dir}: the tokenizer has no pad token (expected <|endoftext|>)")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    return model, tok


def peft_config(lora: LoraOptions):
    if not lora.enabled:
        return None
    from peft import LoraConfig
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


# ---- decontamination ----------------------------------------------------------------------------
def decontaminate_records(records: list[tuple[str, str, str]], opts: DecontamOptions, data_root: Path,
                          report_path: Path) -> list[bool]:
    """Keep flags for (source, where, text) records; writes decontamination.json (also for policy off)."""
    from core.runs import atomic_write_json
    if opts.policy.lower() in ("none", "off", "false"):
        atomic_write_json(report_path, {"policy": "none", "threshold": None, "n_checked": 0, "n_flagged": 0,
                                        "n_dropped": 0, "per_source": {}, "per_benchmark": {}, "examples": []})
        return [True] * len(records)
    from data_recipes.decontam import DecontamError, Decontaminator, decontaminate, write_report
    from data_recipes.rl_prompts import expand_path
    benches = {}
    for entry in opts.benchmarks:
        name, sep, path = entry.partition(":")
        if not sep or not path:
            raise SystemExit(f"config error: decontam.benchmarks entries are 'name:folder', got {entry!r}")
        benches[name] = expand_path(path, data_root)
    try:
        decon = Decontaminator.from_benchmarks(benches, ngram_tokens=opts.ngram_tokens, threshold=opts.threshold,
                                               on_missing=opts.on_missing)
        keep, report = decontaminate(records, decon, policy=opts.policy)
    except DecontamError as e:
        raise SystemExit(f"decontamination error: {e}") from None
    write_report(report_path, report)
    print(f"decontamination ({opts.policy}): {report['n_checked']} checked, {report['n_flagged']} flagged, "
          f"{report['n_dropped']} dropped -> {report_path}")
    return keep


# ---- logging ------------------------------------------------------------------------------------
def step_logger_callback(logger: StepLogger, key_map: dict[str, str]):
    """A TrainerCallback that forwards each TRL log to `logger` under our short metric names.

    Keys not in `key_map` are kept under their TRL names only when they start with a prefix in
    `key_map` (e.g. "rewards/" for per-function GRPO rewards), so the step line stays readable."""
    from transformers import TrainerCallback

    class StepLogCallback(TrainerCallback):
        def __init__(self):
            self.last: dict = {}
            self.summary: dict = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "train_runtime" in logs:          # the end-of-training summary, not a step
                self.summary = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                return
            out = {}
            for k, v in logs.items():
                if not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v) and k != "loss"):
                    continue
                if k in key_map:
                    out[key_map[k]] = v
                else:
                    for prefix, short in key_map.items():
                        if prefix.endswith("/") and k.startswith(prefix) and k.endswith("/mean"):
                            out[short + k[len(prefix):-len("/mean")]] = v
            if out:
                self.last = {**out, "num_tokens": logs.get("num_tokens")}
                logger.step(state.global_step, **out)

    return StepLogCallback()


def quiet_trainer(trainer) -> None:
    """Drop transformers' own log printers: our step line replaces them."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


# ---- export -------------------------------------------------------------------------------------
def export_model(model, tokenizer, out_dir: Path) -> Path:
    """The trained policy (LoRA merged) + tokenizer (chat template) + generation config, HF format."""
    try:
        from peft import PeftModel
        if isinstance(model, PeftModel):
            model = model.merge_and_unload()
    except ImportError:
        pass
    from sft.train import save_model   # the same HF folder SFT writes (eos/pad in the generation config)
    save_model(model, tokenizer, out_dir)
    ckpt = out_dir.parent / "checkpoints"
    if ckpt.is_dir() and not any(ckpt.iterdir()):
        ckpt.rmdir()      # no checkpoints were asked for: do not leave an empty folder behind
    return out_dir


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
