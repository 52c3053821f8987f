"""The LLaMA-Factory backend of `rl.dpo` (`backend=llamafactory`): the same preference rows and run
folder, trained by `llamafactory-cli train` from its own environment (.venv-llamafactory, made by
`make setup-llamafactory`; LLaMA-Factory pins transformers<=5.6 and trl<=0.24, so it cannot share .venv).

What it writes under the run folder:
    llamafactory/data/pairs.json + dataset_info.json   the rows in LLaMA-Factory's ShareGPT ranking format
    llamafactory/train.yaml                            its config (stage: dpo), kept for reproduction
    llamafactory/output/                               its output_dir (trainer_state.json, adapter or model)
    llamafactory.log                                   its console output
then collects the result into the common layout: model/ (LoRA merged, our tokenizer and chat template)
and metrics.jsonl (from trainer_state.json, under the TRL backend's metric names).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from core.config import ConfigError
from core.posttrain import LlamaFactoryError, device_flags, export_policy, metrics_from_state
from core.runs import REPO_ROOT, atomic_write_json, atomic_write_text

LF_CLI = REPO_ROOT / ".venv-llamafactory" / "bin" / "llamafactory-cli"
# Our loss names -> LLaMA-Factory's `pref_loss` (it supports fewer than TRL).
LF_LOSSES = {"sigmoid": "sigmoid", "hinge": "hinge", "ipo": "ipo", "orpo": "orpo", "simpo": "simpo"}


def to_sharegpt(row: dict) -> dict:
    """A normalised preference row -> LLaMA-Factory ShareGPT ranking row (system turn in its own column)."""
    system = "\n".join(m["content"] for m in row["prompt"] if m["role"] == "system")
    tag = {"user": "human", "assistant": "gpt"}
    out = {"conversations": [{"from": tag[m["role"]], "value": m["content"]} for m in row["prompt"]
                             if m["role"] != "system"],
           "chosen": {"from": "gpt", "value": row["chosen"][0]["content"]},
           "rejected": {"from": "gpt", "value": row["rejected"][0]["content"]},
           "system": system}      # always present: LLaMA-Factory reads the column for every row
    return out


DATASET_INFO = {"zhllm_pref": {
    "file_name": "pairs.json", "formatting": "sharegpt", "ranking": True,
    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"},
    "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
             "system_tag": "system"}}}


def write_inputs(cfg, run_dir: Path, model_dir: Path, rows: list[dict], steps: int, flags: dict) -> Path:
    """Dataset files and train.yaml under <run>/llamafactory/; returns the YAML path."""
    losses = list(cfg.dpo.loss_type)
    if len(losses) != 1 or losses[0] not in LF_LOSSES:
        raise ConfigError(f"the llamafactory backend takes one dpo.loss_type of {sorted(LF_LOSSES)}, got {losses}")
    lf = run_dir / "llamafactory"
    atomic_write_text(lf / "data" / "pairs.json", json.dumps([to_sharegpt(r) for r in rows], ensure_ascii=False))
    atomic_write_json(lf / "data" / "dataset_info.json", DATASET_INFO)
    t, o = cfg.train, cfg.optim
    conf = {
        "model_name_or_path": str(Path(model_dir).resolve()), "trust_remote_code": False,
        "stage": "dpo", "do_train": True, "finetuning_type": "lora" if cfg.lora.enabled else "full",
        "pref_beta": cfg.dpo.beta, "pref_loss": LF_LOSSES[losses[0]], "dpo_label_smoothing": cfg.dpo.label_smoothing,
        # ChatML as our tokenizer renders it, with no injected default system prompt.
        "dataset": "zhllm_pref", "dataset_dir": str((lf / "data").resolve()), "template": "chatml",
        "default_system": "", "cutoff_len": cfg.dpo.max_len_tokens, "overwrite_cache": True,
        "output_dir": str((lf / "output").resolve()), "overwrite_output_dir": True, "logging_steps": t.log_every_steps,
        "save_strategy": "steps" if t.save_every_steps else "no", "save_steps": t.save_every_steps or 500,
        "plot_loss": False, "report_to": "none", "seed": t.seed,
        "per_device_train_batch_size": t.batch_size, "gradient_accumulation_steps": t.grad_accum_steps,
        "learning_rate": o.lr, "max_steps": steps, "num_train_epochs": t.epochs, "lr_scheduler_type": o.scheduler,
        "warmup_steps": o.warmup_steps, "weight_decay": o.weight_decay, "max_grad_norm": o.max_grad_norm,
        "gradient_checkpointing": t.gradient_checkpointing, "bf16": flags["bf16"], "use_cpu": flags["use_cpu"],
    }
    if cfg.lora.enabled:
        conf.update(lora_rank=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    lora_target=",".join(cfg.lora.target_modules))
    path = lf / "train.yaml"
    atomic_write_text(path, "# written by rl/llamafactory_dpo.py; run: llamafactory-cli train train.yaml\n"
                      + yaml.safe_dump(conf, sort_keys=False, allow_unicode=True))
    return path


def collect_model(cfg, output_dir: Path, model_dir: Path, out: Path) -> int:
    """LLaMA-Factory's output -> <run>/model: full weights as saved, or the LoRA adapter merged into the
    parent; always with the parent's tokenizer (LLaMA-Factory may rewrite its chat template)."""
    import torch

    from core.models import count_parameters, load_model, load_tokenizer
    tok = load_tokenizer(model_dir)
    if cfg.lora.enabled:
        from peft import PeftModel
        model = PeftModel.from_pretrained(load_model(model_dir, dtype=torch.float32), output_dir)
    else:
        model = load_model(output_dir, dtype=torch.float32)
    export_policy(model, tok, out)
    return count_parameters(model)


def train_llamafactory(cfg, run, model_dir: Path, rows: list[dict], steps: int, key_map: dict[str, str]) -> dict:
    """Train with llamafactory-cli; metrics.jsonl under `key_map` (the TRL backend's DPO names)."""
    flags = device_flags(cfg.train.precision)
    yaml_path = write_inputs(cfg, run.path, model_dir, rows, steps, flags)
    if not LF_CLI.is_file():
        raise LlamaFactoryError(f"backend=llamafactory needs {LF_CLI}: run `make setup-llamafactory` first "
                                f"(its config is written to {yaml_path})")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1",
           "WANDB_DISABLED": "true"}
    log_path = run.path / "llamafactory.log"
    print(f"llamafactory: {LF_CLI} train {yaml_path}  (log: {log_path})", flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run([str(LF_CLI), "train", str(yaml_path.resolve())], cwd=yaml_path.parent, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-25:])
        raise LlamaFactoryError(f"llamafactory-cli train failed (exit {proc.returncode}); "
                                f"last lines of {log_path}:\n{tail}")
    output_dir = run.path / "llamafactory" / "output"
    state = output_dir / "trainer_state.json"
    records = metrics_from_state(state, run.path / "metrics.jsonl", key_map) if state.is_file() else []
    params = collect_model(cfg, output_dir, model_dir, run.path / "model")
    n_steps = json.loads(state.read_text())["global_step"] if state.is_file() else steps
    return {"steps": n_steps, "tokens_seen": 0, "final": records[-1] if records else {}, "params": params}
