"""The `llamafactory` backend of sft/train.py: the same SFT data recipe trained by LLaMA-Factory.

LLaMA-Factory 0.9.5 pins transformers<=5.6, trl<=0.24, peft<=0.18.1, so it runs from its own venv
(`make setup-llamafactory`) as `llamafactory-cli train <yaml>`. This module
  1. exports the decontaminated mix as a LLaMA-Factory dataset (dataset_info.json + <recipe>.json),
  2. writes the train YAML (same hyperparameters as the trl backend) and runs the CLI,
  3. collects the output into our run folder layout: metrics.jsonl from trainer_state.json, adapter/
     (LoRA), model/ (LoRA merged here with our peft, or the full weights) with OUR tokenizer files.

Tokenizer compatibility: transformers 5.6 reads the tokenizer our 5.24 saves (`TokenizersBackend`
exists there) and gives the same ids; tests/stages/test_sft_llamafactory.py checks it when the venv
exists. Its `chatml` template is our ChatML; its assistant labels also cover the "\n" after
<|im_end|> (ours stop at <|im_end|>), one token per turn of difference.

Run as (through sft/train.py):
    CPU:  make sft RECIPE=demo INIT=runs/pretrain/<run> BACKEND=llamafactory ARGS="lora.enabled=true"
    GPU:  make sft RECIPE=zh_mix INIT=runs/pretrain/<run> BACKEND=llamafactory
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from core.posttrain import LlamaFactoryError, export_policy, metrics_from_state
from core.runs import REPO_ROOT, atomic_write_text
from data_recipes.sft_mix import export_llamafactory

# trainer_state.json log keys -> ours in metrics.jsonl (as the trl backend names them).
LF_SFT_KEYS = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm", "num_input_tokens_seen": "tokens"}
# Lines of llamafactory-cli's output worth echoing; everything goes to <run>/llamafactory/train.log.
_ECHO = ("[WARNING", "[ERROR", "[INFO|20", "{'loss'", "{'train_", "***", "  train_", "  epoch", "Traceback", "Error")


def cli_path(venv: str) -> Path:
    p = Path(venv)
    return (p if p.is_absolute() else REPO_ROOT / p) / "bin" / "llamafactory-cli"


def train_yaml(cfg, model_dir: Path, dataset_dir: Path, dataset: str, output_dir: Path, cpu: bool) -> dict:
    """LLaMA-Factory's train arguments for our resolved SFT config (same hyperparameters as trl)."""
    lora = cfg.lora
    y = {
        "model_name_or_path": str(model_dir), "trust_remote_code": False,
        "stage": "sft", "do_train": True,
        "finetuning_type": "lora" if lora.enabled else "full",
        "dataset": dataset, "dataset_dir": str(dataset_dir), "template": cfg.llamafactory.template,
        "cutoff_len": cfg.data.max_seq_len_tokens, "packing": cfg.data.packing,
        # LLaMA-Factory's plain `packing` lets packed examples attend to each other; `neat_packing`
        # gives them block-diagonal masks, as TRL's padding-free packing does in the trl backend.
        "neat_packing": cfg.data.packing,
        "train_on_prompt": False,          # loss on assistant turns only, as in the trl backend
        "overwrite_cache": True, "preprocessing_num_workers": 1, "dataloader_num_workers": 0,
        "output_dir": str(output_dir), "overwrite_output_dir": True, "logging_steps": cfg.train.log_every_steps,
        "save_strategy": "steps" if cfg.train.save_every_steps else "no", "plot_loss": False,
        "report_to": "none", "per_device_train_batch_size": cfg.train.batch_size,
        "gradient_accumulation_steps": cfg.train.grad_accum_steps, "learning_rate": cfg.optim.lr,
        "num_train_epochs": cfg.train.epochs, "lr_scheduler_type": cfg.optim.scheduler,
        "warmup_steps": cfg.optim.warmup_steps, "weight_decay": cfg.optim.weight_decay,
        "max_grad_norm": cfg.optim.max_grad_norm, "seed": cfg.train.seed,
        "bf16": (not cpu) and cfg.train.precision in ("auto", "bf16"),
        "disable_gradient_checkpointing": not cfg.train.activation_checkpointing,
        "include_num_input_tokens_seen": "non_padding",   # -> tokens_seen in our manifest
    }
    if cfg.train.max_steps:
        y["max_steps"] = cfg.train.max_steps
    if cfg.train.save_every_steps:
        y["save_steps"] = cfg.train.save_every_steps
    if cpu:
        y["use_cpu"] = True
    if lora.enabled:
        y.update({"lora_rank": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
                  "lora_target": ",".join(lora.target_modules)})
    y.update(cfg.llamafactory.extra)
    return y


def prepare(cfg, run_path: Path, model_dir: Path, examples, dataset: str, cpu: bool) -> Path:
    """Write <run>/llamafactory/{data/, train.yaml}; returns the YAML path."""
    lf = run_path / "llamafactory"
    export_llamafactory(examples, lf / "data", dataset)
    y = train_yaml(cfg, model_dir.resolve(), lf / "data", dataset, lf / "output", cpu)
    atomic_write_text(lf / "train.yaml", yaml.safe_dump(y, sort_keys=False, allow_unicode=True))
    return lf / "train.yaml"


def train(cfg, run, model_dir: Path, tokenizer, examples) -> dict:
    """Run llamafactory-cli and collect its output into `run`, model/ written as the trl backend writes
    it (core.posttrain.export_policy). Raises LlamaFactoryError on any failure."""
    import math

    import torch

    from core.models import load_model

    cli = cli_path(cfg.llamafactory.venv)
    if not cli.is_file():
        raise LlamaFactoryError(f"{cli} not found: run `make setup-llamafactory` first (its own venv, see README)")
    cpu = not torch.cuda.is_available()
    yaml_path = prepare(cfg, run.path, model_dir, examples, "sft_" + run.recipe, cpu)
    out_dir = run.path / "llamafactory" / "output"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1",
           "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "") if not cpu else ""}
    env.pop("PYTHONPATH", None)  # our venv's packages must not leak into LLaMA-Factory's
    print(f"llamafactory: {cli} train {yaml_path}", flush=True)
    log_path = run.path / "llamafactory" / "train.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([str(cli), "train", str(yaml_path)], cwd=run.path / "llamafactory", env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if line.lstrip().startswith(_ECHO) or "Error" in line:
                sys.stdout.write(line)
        try:
            rc = proc.wait(timeout=cfg.llamafactory.timeout_s or None)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise LlamaFactoryError(f"llamafactory-cli ran past {cfg.llamafactory.timeout_s}s "
                                    f"(log: {log_path})") from None
    if rc != 0:
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise LlamaFactoryError(f"llamafactory-cli exited {rc}; last lines of {log_path}:\n{tail}")
    state_path = out_dir / "trainer_state.json"
    if not state_path.is_file():
        raise LlamaFactoryError(f"llamafactory-cli finished but wrote no {state_path}")
    records = metrics_from_state(state_path, run.path / "metrics.jsonl", LF_SFT_KEYS)
    losses = [float(r["loss"]) for r in records]
    if not losses or not all(math.isfinite(x) for x in losses):
        raise LlamaFactoryError(f"llamafactory training loss missing or not finite: {losses[-5:]}")
    if cfg.lora.enabled:
        from peft import PeftModel
        adapter = run.path / "adapter"
        adapter.mkdir(exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not (out_dir / name).is_file():
                raise LlamaFactoryError(f"LoRA run wrote no {out_dir / name}")
            shutil.copy2(out_dir / name, adapter / name)
        tokenizer.save_pretrained(adapter)
        model = PeftModel.from_pretrained(load_model(model_dir, dtype=torch.float32), adapter)
    else:
        model = load_model(out_dir, dtype=torch.float32)
    export_policy(model, tokenizer, run.path / "model")  # our tokenizer files, not LLaMA-Factory's re-save
    for weights in out_dir.glob("*.safetensors"):      # now in model/ (and adapter/): no second copy
        weights.unlink()
    state = json.loads(state_path.read_text(encoding="utf-8"))
    tokens = max([int(h.get("num_input_tokens_seen", 0)) for h in state.get("log_history", [])] + [0])
    return {"steps": int(state.get("global_step", 0)), "tokens_seen": tokens, "final_loss": losses[-1],
            "llamafactory_yaml": str(yaml_path.relative_to(run.path))}
