"""DPO on top of an SFT run: preference recipe -> dedupe + decontamination -> TRL DPOTrainer (or
LLaMA-Factory) -> runs/dpo/<recipe>-<stamp>/ with model/, metrics.jsonl and manifest.json.

The reference model is the SFT run itself (TRL keeps a frozen copy of the initial policy; with LoRA
it disables the adapters). Logged per step: loss, reward margin, implicit-reward accuracy,
chosen/rejected log-probs and rewards.

Run as:
    CPU:  make dpo RECIPE=demo_dpo INIT=runs/sft/<run>
          (= python -m rl.dpo rl/recipes/demo_dpo.yaml init_from=runs/sft/<run> backend=trl)
    GPU:  make dpo RECIPE=zh_dpo INIT=runs/sft/<run>                       (bf16, TRL)
          make dpo RECIPE=zh_dpo INIT=runs/sft/<run> BACKEND=llamafactory  (needs make setup-llamafactory)
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from core.compat import checkpointing_argument
from core.config import ConfigError, parse_args, recipe_name
from core.errors import entrypoint
from core.log import plot_metrics
from core.posttrain import (LlamaFactoryError, LoraOptions, OptimOptions, device_flags, export_policy, load_policy,
                            peft_config, resolve_init, train_quietly, trainer_log_callback)
from core.runs import Run, RunOptions, atomic_write_json, run_folder, shared_data_root
from data_recipes.decontam import DecontamOptions, decontaminate_records
from data_recipes.preference import PreferenceDataError, load_recipe
from rl.heldout import dpo_heldout_check

# TRL's log keys -> ours in metrics.jsonl, in the order a record lists them (TRL's own order).
DPO_KEYS = {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "lr",
            "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected",
            "rewards/accuracies": "reward_acc", "rewards/margins": "reward_margin",
            "logps/chosen": "logp_chosen", "logps/rejected": "logp_rejected"}


@dataclass
class DataOptions:
    """Which preference pairs, and how they are cleaned."""
    recipe: str = "demo"                  # data_recipes/pref_mixes/<name>.yaml (or a path to one)
    data_root: str = ""                   # {data_root} in recipes; empty = $ZHLLM_SHARED_DATA or ../shared/data
    bad_rows: str = ""                    # error | skip; empty = the recipe's choice (default error)
    max_rows: int = 0                     # keep at most this many pairs after dedupe (0 = all)
    heldout_recipe: str = ""              # pairs never trained on, scored after training (rl/heldout.py); "" = none


@dataclass
class DPOOptions:
    """The preference objective."""
    beta: float = 0.1                     # KL strength: higher stays closer to the SFT reference
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])  # TRL loss(es): sigmoid | ipo | hinge | robust ...
    label_smoothing: float = 0.0          # conservative-DPO noise rate (sigmoid loss only)
    max_len_tokens: int = 1024            # prompt + answer tokens per sequence (longer is truncated)
    precompute_ref_logps: bool = False    # score the reference once up front (saves memory on big models)


@dataclass
class TrainOptions:
    """Steps, batch and precision."""
    max_steps: int = 100                  # optimizer steps (0 = run `epochs` over the data)
    epochs: float = 1.0                   # passes over the data when max_steps is 0
    batch_size: int = 4                   # preference pairs per device per micro-step
    grad_accum_steps: int = 1             # micro-steps per optimizer step
    log_every_steps: int = 5              # optimizer steps between step lines
    save_every_steps: int = 0             # checkpoint interval in optimizer steps (0 = final model only)
    seed: int = 0                         # data order and LoRA init
    precision: str = "auto"               # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    gradient_checkpointing: bool = False  # trade compute for memory on long sequences


@dataclass
class DPOConfig:
    init_from: str = ""                   # finished SFT run folder (or an HF model folder) = policy and reference
    backend: str = "trl"                  # trl | llamafactory (runs .venv-llamafactory/bin/llamafactory-cli)
    data: DataOptions = field(default_factory=DataOptions)
    decontam: DecontamOptions = field(default_factory=DecontamOptions)
    dpo: DPOOptions = field(default_factory=DPOOptions)
    lora: LoraOptions = field(default_factory=LoraOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    run: RunOptions = field(default_factory=RunOptions)


def load_pairs(cfg: DPOConfig):
    """The recipe's preference rows, validated and deduped (bad rows stop here, before any run folder)."""
    data_root = Path(cfg.data.data_root) if cfg.data.data_root else shared_data_root()
    return load_recipe(cfg.data.recipe, data_root, bad_rows=cfg.data.bad_rows or None, max_rows=cfg.data.max_rows)


def load_heldout(cfg: DPOConfig) -> list[dict]:
    """The held-out pairs (TRL rows) of `data.heldout_recipe`, or [] without one."""
    if not cfg.data.heldout_recipe:
        return []
    data_root = Path(cfg.data.data_root) if cfg.data.data_root else shared_data_root()
    return load_recipe(cfg.data.heldout_recipe, data_root, bad_rows=cfg.data.bad_rows or None)[1].trl_rows()


def decontaminate_pairs(cfg: DPOConfig, run: Run, recipe: dict, data) -> None:
    """Drop (or flag) pairs that overlap the benchmarks; writes decontamination.json and data_report.json."""
    data_root = Path(cfg.data.data_root) if cfg.data.data_root else shared_data_root()
    records = [(r["source"], r["where"], "\n".join(m["content"] for m in r["prompt"] + r["chosen"] + r["rejected"]))
               for r in data.rows]
    keep = decontaminate_records(records, cfg.decontam, data_root, run.path / "decontamination.json")
    data.rows = [r for r, k in zip(data.rows, keep) if k]
    if not data.rows:
        raise PreferenceDataError("decontamination dropped every preference pair")
    report = {"recipe": recipe["name"], **data.report(), "n_after_decontam": len(data.rows),
              "hash": data.content_hash()}
    atomic_write_json(run.path / "data_report.json", report)
    print(f"data: {recipe['name']}: {len(data.rows)} pairs ({data.n_duplicates} duplicates, {len(data.bad)} bad rows "
          f"skipped) from " + ", ".join(f"{k} [{v['origin']}]" for k, v in data.sources.items()))


def total_steps(cfg: DPOConfig, n_rows: int) -> int:
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps
    per_step = cfg.train.batch_size * cfg.train.grad_accum_steps
    return max(1, math.ceil(math.ceil(n_rows / per_step) * cfg.train.epochs))


def train_trl(cfg: DPOConfig, run: Run, model_dir: Path, rows: list[dict], steps: int) -> dict:
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig, DPOTrainer

    from core.models import count_parameters
    flags = device_flags(cfg.train.precision)
    model, tok = load_policy(model_dir, flags["bf16"])
    args = TRLDPOConfig(
        output_dir=str(run.path / "checkpoints"), max_steps=steps, num_train_epochs=cfg.train.epochs,
        per_device_train_batch_size=cfg.train.batch_size, gradient_accumulation_steps=cfg.train.grad_accum_steps,
        learning_rate=cfg.optim.lr, lr_scheduler_type=cfg.optim.scheduler, warmup_steps=cfg.optim.warmup_steps,
        weight_decay=cfg.optim.weight_decay, max_grad_norm=cfg.optim.max_grad_norm,
        beta=cfg.dpo.beta, loss_type=list(cfg.dpo.loss_type), label_smoothing=cfg.dpo.label_smoothing,
        max_length=cfg.dpo.max_len_tokens, precompute_ref_log_probs=cfg.dpo.precompute_ref_logps,
        logging_steps=cfg.train.log_every_steps, save_strategy="steps" if cfg.train.save_every_steps else "no",
        save_steps=cfg.train.save_every_steps or 500, report_to="none", seed=cfg.train.seed,
        **checkpointing_argument(TRLDPOConfig, cfg.train.gradient_checkpointing), disable_tqdm=True, dataset_num_proc=None,
        **flags)
    callback = trainer_log_callback(run.path / "metrics.jsonl", DPO_KEYS)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config(cfg.lora), callbacks=[callback])
    train_quietly(trainer)
    export_policy(trainer.model, tok, run.path / "model")
    return {"steps": trainer.state.global_step, "tokens_seen": int(callback.last.get("num_tokens") or 0),
            "final": {k: v for k, v in callback.last.items() if k != "num_tokens"},
            "summary": callback.summary, "params": count_parameters(trainer.model)}


# TRL 1.16's DPO losses (trl.DPOConfig.loss_type); an unknown name would fail inside the trainer.
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


def check_config(cfg: DPOConfig) -> None:
    """Config values that no later step may find wrong: checked before anything is loaded or written."""
    if cfg.backend not in ("trl", "llamafactory"):
        raise ConfigError(f"backend must be trl or llamafactory, got {cfg.backend!r}")
    t, o = cfg.train, cfg.dpo
    if t.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be auto|bf16|fp32, got {t.precision!r}")
    for key, value, low in (("train.max_steps", t.max_steps, 0), ("train.batch_size", t.batch_size, 1),
                            ("train.grad_accum_steps", t.grad_accum_steps, 1), ("train.log_every_steps", t.log_every_steps, 1),
                            ("train.save_every_steps", t.save_every_steps, 0), ("data.max_rows", cfg.data.max_rows, 0),
                            ("dpo.max_len_tokens", o.max_len_tokens, 1), ("optim.warmup_steps", cfg.optim.warmup_steps, 0)):
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")
    for key, value in (("dpo.beta", o.beta), ("optim.lr", cfg.optim.lr)):
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if t.max_steps == 0 and not t.epochs > 0:
        raise ConfigError(f"train.epochs must be > 0 when train.max_steps is 0, got {t.epochs}")
    unknown = [x for x in o.loss_type if x not in DPO_LOSSES]
    if unknown or not o.loss_type:
        raise ConfigError(f"dpo.loss_type {unknown or '[]'}: each must be one of {', '.join(DPO_LOSSES)}")
    if not 0 <= o.label_smoothing < 0.5:
        raise ConfigError(f"dpo.label_smoothing must be in [0, 0.5), got {o.label_smoothing}")
    if cfg.backend == "llamafactory":
        from rl.llamafactory_dpo import LF_CLI, LF_LOSSES
        if len(o.loss_type) != 1 or o.loss_type[0] not in LF_LOSSES:
            raise ConfigError(f"the llamafactory backend takes one dpo.loss_type of {sorted(LF_LOSSES)}, got {o.loss_type}")
        if not LF_CLI.is_file():
            raise LlamaFactoryError(f"backend=llamafactory needs {LF_CLI}: run `make setup-llamafactory` first")


@entrypoint
def main(argv: list[str] | None = None) -> Path:
    cfg, recipe_file = parse_args(DPOConfig, argv, prog="rl.dpo")
    check_config(cfg)
    model_dir, parent_manifest = resolve_init(cfg.init_from)
    parent = run_folder(cfg.init_from) if parent_manifest is not None else None
    recipe, data = load_pairs(cfg)
    heldout_rows = load_heldout(cfg)
    with Run.create("dpo", recipe_name(recipe_file, "dpo"), cfg.run) as run:   # locked until the run ends
        run.write_config(cfg)
        print(f"config: {recipe_file or '(defaults)'}\noutput: {run.path}\nparent: {cfg.init_from} (reference model)")
        decontaminate_pairs(cfg, run, recipe, data)    # refused if nothing is left: the new folder goes again
        steps = total_steps(cfg, len(data.rows))
        run.begin()
        if cfg.backend == "trl":
            result = train_trl(cfg, run, model_dir, data.trl_rows(), steps)
        else:
            from rl.llamafactory_dpo import train_llamafactory
            result = train_llamafactory(cfg, run, model_dir, data.rows, steps, DPO_KEYS)
        plot_metrics(run.path / "metrics.jsonl", run.path / "metrics.png",
                     keys=("loss", "reward_margin", "reward_acc"), title=f"DPO {run.path.name}")
        heldout = dpo_heldout_check(model_dir, run.path / "model", heldout_rows, cfg.dpo.beta,
                                    run.path / "heldout.json") if heldout_rows else None
        run.finish(parent=str(parent) if parent else None, init_model=str(model_dir),
                   reference_model=str(model_dir), backend=cfg.backend,
                   data_recipe={"name": recipe["name"], "hash": data.content_hash(), "n_pairs": len(data.rows)},
                   steps=result["steps"], tokens_seen=result["tokens_seen"], final_metrics=result["final"],
                   params=result.get("params"), lora=cfg.lora.enabled,
                   **({"heldout": heldout} if heldout else {}))
    print(f"finished: {run.path}\nnext: make eval BENCH=demo MODEL={run.path}   or   "
          f"make grpo RECIPE=demo_grpo INIT={run.path}")
    return run.path


if __name__ == "__main__":
    main(sys.argv[1:])
