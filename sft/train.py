"""Supervised fine-tuning: an SFT data recipe (data_recipes/sft_mixes/) on top of a finished run or an
HF model folder, through TRL's SFTTrainer (default) or LLaMA-Factory, full or LoRA.

Order of work: resolve the parent -> inherit unset hyperparameters from its config.yaml (each one
logged) -> load, filter and render the mix (structural errors stop here, before any folder is
written) -> decontaminate against the benchmarks -> train -> write model/ (HF, with the chat
template), samples.md (answers to fixed prompts), manifest.json last.

    runs/sft/<recipe>-<stamp>/
      config.yaml  data_recipe.yaml  data_report.json  decontamination.json  metrics.jsonl  loss.png
      model/  adapter/ (LoRA only)  samples.md  manifest.json

The loss is on assistant tokens only: labels come from the chat template's {% generation %} spans
(the mask TRL's `assistant_only_loss` builds), computed once in data_recipes/sft_formats.render so that
truncation is counted and the golden-id tests cover exactly what trains.

Run as:
    CPU:  make sft RECIPE=demo INIT=runs/pretrain/<run>
          (= python -m sft.train sft/recipes/demo.yaml init_from=runs/pretrain/<run> backend=trl)
          make sft RECIPE=zh_mix_small INIT=<run> ARGS="lora.enabled=true train.max_steps=20"
    GPU:  make sft RECIPE=zh_mix INIT=runs/pretrain/<run>                      (bf16, TRL)
          make sft RECIPE=zh_mix INIT=runs/pretrain/<run> BACKEND=llamafactory (make setup-llamafactory first)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.compat import checkpointing_argument
from core.config import ConfigError, dump_yaml, parse_args, recipe_name
from core.errors import entrypoint
from core.log import plot_metrics
from core.posttrain import (Inherit, LlamaFactoryError, LoraOptions, TrainingError, device_flags, export_policy,
                            inherit, peft_config, resolve_init, train_quietly, trainer_log_callback)
from core.runs import Run, RunOptions, atomic_write_json, atomic_write_text, run_folder
from data_recipes import sft_formats
from data_recipes.sft_mix import MixError, load_mix, load_recipe, mix_path, run_decontam

# Trainer log keys -> ours in metrics.jsonl (num_tokens also gives tok_per_s).
SFT_KEYS = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm", "num_tokens": "tokens",
            "mean_token_accuracy": "token_acc"}


@dataclass
class DataOptions:
    """Which SFT mix, and how its examples become training sequences."""
    recipe: str = "demo"                  # data_recipes/sft_mixes/<name>.yaml (or a path to one)
    mix_overrides: list[str] = field(default_factory=list)  # key.sub=value overrides of the data recipe
    max_seq_len_tokens: int | None = None  # longest training sequence; unset = the parent's, else 1024
    truncation: str = "truncate"          # longer examples: truncate (keep the start) | drop
    packing: bool = False                 # pack several examples per sequence (TRL bfd, padding-free)


@dataclass
class OptimOptions:
    """AdamW with a cosine schedule. Unset (null) values come from the parent run's config."""
    lr: float | None = None               # peak learning rate; unset = the parent's optim.lr, else 2e-5
    warmup_steps: int = 10                # linear warmup in optimizer steps
    scheduler: str = "cosine"             # transformers lr_scheduler_type
    weight_decay: float | None = None     # unset = the parent's, else 0.0
    max_grad_norm: float | None = None    # gradient clipping; unset = the parent's grad clip, else 1.0


@dataclass
class TrainOptions:
    """Steps, batch, precision."""
    max_steps: int = 0                    # optimizer steps (0 = `epochs` passes over the data)
    epochs: float = 1.0                   # passes over the data when max_steps is 0
    batch_size: int = 8                   # sequences per device per micro-step
    grad_accum_steps: int = 1             # micro-steps per optimizer step
    log_every_steps: int = 5              # optimizer steps between step lines
    save_every_steps: int = 0             # checkpoint interval (0 = final model only)
    seed: int | None = None               # data order, LoRA init; unset = the parent's, else 0
    precision: str | None = None          # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32; unset = the parent's
    activation_checkpointing: bool = False  # recompute activations in backward (less memory, slower)


@dataclass
class SampleOptions:
    """The quick check after training: greedy answers to fixed prompts, written to samples.md."""
    prompts: list[str] = field(default_factory=lambda: ["你是谁？", "中国的首都是哪里？",
                                                        "请用一句话介绍一下长城。", "Who are you?"])
    max_new_tokens: int = 64


@dataclass
class LlamaFactoryOptions:
    """The llamafactory backend (its own venv from `make setup-llamafactory`)."""
    venv: str = ".venv-llamafactory"      # folder with bin/llamafactory-cli
    template: str = "chatml"              # LLaMA-Factory template name matching our ChatML template
    extra: dict[str, Any] = field(default_factory=dict)  # more keys for its train YAML, passed as is
    timeout_s: int = 0                    # kill llamafactory-cli after this long (0 = no limit)


@dataclass
class SFTConfig:
    init_from: str = ""                   # finished run folder (runs/pretrain/<run>) or an HF model folder
    backend: str = "trl"                  # trl | llamafactory
    data: DataOptions = field(default_factory=DataOptions)
    lora: LoraOptions = field(default_factory=LoraOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    samples: SampleOptions = field(default_factory=SampleOptions)
    llamafactory: LlamaFactoryOptions = field(default_factory=LlamaFactoryOptions)
    run: RunOptions = field(default_factory=RunOptions)


# What SFT takes from its parent run's config.yaml when the recipe leaves it unset (None above): the
# parent's field per parent stage, else the fallback. tests/unit/test_sft_inherit.py checks each field.
_OPTIM = ("pretrain", "sft", "dpo", "grpo")
INHERITS = [
    Inherit("optim.lr", {stage: "optim.lr" for stage in _OPTIM}, 2e-5),
    Inherit("optim.weight_decay", {stage: "optim.weight_decay" for stage in _OPTIM}, 0.0),
    Inherit("optim.max_grad_norm", {"pretrain": "optim.grad_clip_norm", "sft": "optim.max_grad_norm",
                                    "dpo": "optim.max_grad_norm", "grpo": "optim.max_grad_norm"}, 1.0),
    Inherit("train.seed", {stage: "train.seed" for stage in _OPTIM}, 0),
    Inherit("train.precision", {stage: "train.precision" for stage in _OPTIM}, "auto"),
    Inherit("data.max_seq_len_tokens", {"pretrain": "data.seq_len_tokens", "sft": "data.max_seq_len_tokens"}, 1024),
]


def training_rows(examples, data: DataOptions) -> tuple[list[dict], dict]:
    """input_ids/labels per example, cut to max_seq_len_tokens; counts of what was cut or dropped."""
    rows, counts = [], {"n_examples": len(examples), "truncated": 0, "dropped_too_long": 0,
                        "dropped_no_assistant_tokens": 0, "truncated_where": []}
    if data.truncation not in ("truncate", "drop"):
        raise ConfigError(f"data.truncation must be truncate or drop, got {data.truncation!r}")
    for ex in examples:
        ids, labels = ex.input_ids, ex.labels
        if len(ids) > data.max_seq_len_tokens:
            if data.truncation == "drop":
                counts["dropped_too_long"] += 1
                continue
            cut = sft_formats.truncate(ids, labels, data.max_seq_len_tokens)
            if cut is None:
                counts["dropped_no_assistant_tokens"] += 1
                continue
            ids, labels = cut
            counts["truncated"] += 1
            if len(counts["truncated_where"]) < 20:
                counts["truncated_where"].append(f"{ex.source} {ex.where}: {len(ex.input_ids)} tokens")
        rows.append({"input_ids": ids, "labels": labels})
    if not rows:
        raise MixError("no training sequences left after truncation")
    counts["n_sequences"] = len(rows)
    counts["n_tokens"] = sum(len(r["input_ids"]) for r in rows)
    counts["n_loss_tokens"] = sum(sum(l != -100 for l in r["labels"]) for r in rows)
    return rows, counts


def train_trl(cfg: SFTConfig, run: Run, model_dir: Path, tokenizer, rows: list[dict]) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig, SFTTrainer

    from core.models import count_parameters, load_model
    flags = device_flags(cfg.train.precision)
    torch.manual_seed(cfg.train.seed)
    model = load_model(model_dir, dtype=torch.float32)
    if cfg.lora.enabled:
        from peft import get_peft_model
        model = get_peft_model(model, peft_config(cfg.lora))
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = count_parameters(model)
    print(f"model: {n_all:,} parameters, {n_train:,} trainable ({'LoRA' if cfg.lora.enabled else 'full'})")
    args = TRLSFTConfig(
        output_dir=str(run.path / "checkpoints"), max_steps=cfg.train.max_steps or -1,
        num_train_epochs=cfg.train.epochs, per_device_train_batch_size=cfg.train.batch_size,
        gradient_accumulation_steps=cfg.train.grad_accum_steps, learning_rate=cfg.optim.lr,
        lr_scheduler_type=cfg.optim.scheduler, warmup_steps=cfg.optim.warmup_steps,
        weight_decay=cfg.optim.weight_decay, max_grad_norm=cfg.optim.max_grad_norm,
        logging_steps=cfg.train.log_every_steps, logging_first_step=True,
        save_strategy="steps" if cfg.train.save_every_steps else "no",
        save_steps=cfg.train.save_every_steps or 500, report_to="none", seed=cfg.train.seed,
        max_length=cfg.data.max_seq_len_tokens, packing=cfg.data.packing, disable_tqdm=True,
        dataloader_num_workers=0, **checkpointing_argument(TRLSFTConfig, cfg.train.activation_checkpointing), **flags)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[trainer_log_callback(run.path / "metrics.jsonl", SFT_KEYS)])
    out = train_quietly(trainer)
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    tokens = max([h.get("num_tokens", 0) for h in state.log_history] + [0])
    if not losses or not all(math.isfinite(l) for l in losses):
        raise TrainingError(f"training loss is not finite: {losses[-5:]}")
    if cfg.lora.enabled:
        trainer.model.save_pretrained(run.path / "adapter")
        tokenizer.save_pretrained(run.path / "adapter")
    export_policy(trainer.model, tokenizer, run.path / "model")
    return {"steps": state.global_step, "tokens_seen": int(tokens), "final_loss": losses[-1],
            "train_loss": out.training_loss, "trainable_params": n_train, "params": n_all}


def write_samples(model_dir: Path, opts: SampleOptions, path: Path, title: str) -> None:
    """Greedy answers of the saved model/ to fixed prompts (a smoke test anyone can read)."""
    import torch

    from core.models import load_model, load_tokenizer
    tok = load_tokenizer(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(model_dir, dtype=torch.float32).to(device).eval()
    lines = [f"# Samples: {title}", "", f"Greedy decoding of `model/`, at most {opts.max_new_tokens} new tokens, "
             "no system prompt.", ""]
    for prompt in opts.prompts:
        enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True, return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=opts.max_new_tokens, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        lines += [f"## {prompt}", "", answer or "(empty)", ""]
    atomic_write_text(path, "\n".join(lines))


def check_config(cfg: SFTConfig) -> None:
    """Config values that no later step may find wrong: checked before anything is loaded or written."""
    if cfg.backend not in ("trl", "llamafactory"):
        raise ConfigError(f"backend must be trl or llamafactory, got {cfg.backend!r}")
    if cfg.data.truncation not in ("truncate", "drop"):
        raise ConfigError(f"data.truncation must be truncate or drop, got {cfg.data.truncation!r}")
    t = cfg.train
    if t.precision not in (None, "auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be auto|bf16|fp32, got {t.precision!r}")
    for key, value, low in (("train.max_steps", t.max_steps, 0), ("train.batch_size", t.batch_size, 1),
                            ("train.grad_accum_steps", t.grad_accum_steps, 1), ("train.log_every_steps", t.log_every_steps, 1),
                            ("train.save_every_steps", t.save_every_steps, 0), ("optim.warmup_steps", cfg.optim.warmup_steps, 0),
                            ("lora.r", cfg.lora.r, 1), ("samples.max_new_tokens", cfg.samples.max_new_tokens, 1)):
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")
    if t.max_steps == 0 and not t.epochs > 0:
        raise ConfigError(f"train.epochs must be > 0 when train.max_steps is 0, got {t.epochs}")
    for key, value in (("optim.lr", cfg.optim.lr), ("data.max_seq_len_tokens", cfg.data.max_seq_len_tokens)):
        if value is not None and not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if cfg.backend == "llamafactory":
        from sft.llamafactory import cli_path
        if not cli_path(cfg.llamafactory.venv).is_file():
            raise LlamaFactoryError(f"{cli_path(cfg.llamafactory.venv)} not found: run `make setup-llamafactory` "
                                    f"first (its own venv, see README)")


@entrypoint
def main(argv: list[str] | None = None) -> Path:
    cfg, recipe = parse_args(SFTConfig, argv, prog="sft.train")
    check_config(cfg)
    model_dir, parent_manifest = resolve_init(cfg.init_from)   # an unfinished parent stops here, before the imports
    import datasets
    import transformers

    from core.models import load_tokenizer
    datasets.disable_progress_bars()   # our step lines are the progress report
    transformers.utils.logging.disable_progress_bar()
    parent = run_folder(cfg.init_from) if parent_manifest is not None else None
    print(f"sft: recipe {recipe or '(defaults)'} | data {mix_path(cfg.data.recipe)} | init {model_dir}"
          f" | parent {parent or 'none (HF folder)'} | backend {cfg.backend}")
    inherited = inherit(cfg, parent, (parent_manifest or {}).get("stage"), INHERITS)
    mc = model_dir / "config.json"
    max_pos = json.loads(mc.read_text(encoding="utf-8")).get("max_position_embeddings") if mc.is_file() else None
    if max_pos and cfg.data.max_seq_len_tokens > max_pos:
        print(f"WARNING: data.max_seq_len_tokens {cfg.data.max_seq_len_tokens} > the model's "
              f"max_position_embeddings {max_pos}: positions past it were never trained")
    tokenizer = load_tokenizer(model_dir)
    mix = load_recipe(cfg.data.recipe, cfg.data.mix_overrides)
    result = load_mix(mix, tokenizer)       # bad rows, decontamination, truncation: all before any folder
    for p in result.problems:
        print(f"  bad row ({p['kind']}) {p['where']}: {p['detail']}")
    examples, decon = run_decontam(result)
    rows, counts = training_rows(examples, cfg.data)
    print(f"data: {len(result.examples)} examples from {len(result.stats)} sources, "
          f"{decon['n_flagged']} flagged by decontamination ({decon['policy']}), {counts['truncated']} truncated, "
          f"{counts['n_sequences']} sequences, {counts['n_tokens']:,} tokens ({counts['n_loss_tokens']:,} in the loss)")

    with Run.create("sft", recipe_name(recipe, "sft"), cfg.run) as run:   # locked until the run ends
        print(f"run folder: {run.path}")
        run.write_config(cfg)
        atomic_write_text(run.path / "data_recipe.yaml", dump_yaml(mix))
        atomic_write_json(run.path / "decontamination.json", decon)
        atomic_write_json(run.path / "data_report.json", {**result.report(), "sequences": counts})
        run.begin()
        try:
            if cfg.backend == "trl":
                out = train_trl(cfg, run, model_dir, tokenizer, rows)
            else:
                from sft import llamafactory
                out = llamafactory.train(cfg, run, model_dir, tokenizer, examples)
        except (TrainingError, LlamaFactoryError) as e:
            raise type(e)(f"{e}; {run.path} is left unfinished (no manifest.json)") from None
        plot_metrics(run.path / "metrics.jsonl", run.path / "loss.png", keys=("loss", "lr"), title=run.path.name)
        write_samples(run.path / "model", cfg.samples, run.path / "samples.md", f"sft/{run.path.name}")
        run.finish(parent=str(parent) if parent else None, init_from=cfg.init_from, backend=cfg.backend,
                   finetuning="lora" if cfg.lora.enabled else "full",
                   data_recipe={"name": mix.name, "hash": result.hash}, inherited=inherited,
                   decontamination={k: decon[k] for k in ("policy", "n_checked", "n_flagged", "n_dropped")},
                   n_examples=len(examples), sequences=counts["n_sequences"], truncated=counts["truncated"], **out)
    demo = mix.name == "demo"
    print(f"done: {run.path}\nnext: make eval BENCH={'demo' if demo else 'ceval'} MODEL={run.path} "
          f"PROTOCOL=chat-0shot-gen   |   make dpo RECIPE={'demo_dpo' if demo else 'zh_dpo'} INIT={run.path}")
    return run.path


if __name__ == "__main__":
    main()
