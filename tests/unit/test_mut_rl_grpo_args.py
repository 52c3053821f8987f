"""Where GRPO's reward weights (and the rest of the recipe) reach TRL: every GRPOConfig field TRL
receives equals the recipe value it comes from, the weights in the rewards' order, and the weighted
reward TRL forms from them equals the sum written out by hand (closes mutmut survivors of
rl/grpo.py's grpo_args; the equivalent ones are in tests/mutation_equivalent.md)."""
from types import SimpleNamespace

import pytest

from core.config import parse_args
from rl.grpo import GRPOConfig, check_config, grpo_args
from rl.rewards import answer_format, mcq_correct, numeric_answer

OVERRIDES = ["grpo.rewards=[answer_format,mcq_correct,numeric_answer]", "grpo.reward_weights=[0.25,2.0,0.75]",
             "grpo.num_generations=3", "grpo.max_completion_len_tokens=17", "grpo.temperature=0.7", "grpo.beta=0.02",
             "grpo.loss_type=grpo", "grpo.scale_rewards=batch", "grpo.mask_truncated=true", "train.max_steps=9",
             "train.prompts_per_step=4", "train.grad_accum_steps=2", "train.log_every_steps=3", "train.seed=5",
             "optim.lr=3e-6", "optim.warmup_steps=2", "optim.weight_decay=0.1", "optim.max_grad_norm=0.5",
             "optim.scheduler=linear"]


@pytest.mark.parametrize("save_every", [0, 7])
def test_trl_receives_the_recipe(tmp_path, save_every):
    cfg, _ = parse_args(GRPOConfig, [*OVERRIDES, f"train.save_every_steps={save_every}"], prog="rl.grpo")
    funcs = check_config(cfg, {"use_cpu": True, "bf16": False})
    assert funcs == [answer_format, mcq_correct, numeric_answer]
    args = grpo_args(cfg, SimpleNamespace(path=tmp_path), {"use_cpu": True, "bf16": False})
    want = {"output_dir": str(tmp_path / "checkpoints"), "max_steps": 9, "per_device_train_batch_size": 6,
            "gradient_accumulation_steps": 2, "num_generations": 3, "max_completion_length": 17, "temperature": 0.7,
            "beta": 0.02, "loss_type": "grpo", "scale_rewards": "batch", "reward_weights": [0.25, 2.0, 0.75],
            "mask_truncated_completions": True, "learning_rate": 3e-6, "warmup_steps": 2, "weight_decay": 0.1,
            "max_grad_norm": 0.5, "logging_steps": 3, "seed": 5, "disable_tqdm": True, "log_completions": False,
            "use_cpu": True, "bf16": False, "use_vllm": False}
    assert {k: getattr(args, k) for k in want} == want
    assert getattr(args.lr_scheduler_type, "value", None) == "linear" and args.report_to in ([], "none", ["none"])
    strategy = getattr(args.save_strategy, "value", args.save_strategy)
    assert (strategy, args.save_steps) == (("no", 500) if not save_every else ("steps", 7))
    # TRL's per-completion reward: the weighted sum of the functions that apply (None = left out)
    comps, tasks, answers = ["答案：B", "答案：7"], ["mcq", "arith"], ["B", "8"]
    per_func = [f(comps, answer=answers, task=tasks) for f in funcs]
    weighted = [sum(w * r[i] for w, r in zip(args.reward_weights, per_func) if r[i] is not None) for i in range(2)]
    assert weighted == pytest.approx([0.25 * 1.0 + 2.0 * 1.0, 0.25 * 1.0 + 0.75 * (0.1 + 0.4 * (1 - 1 / 8))])


def test_vllm_generation_arguments(tmp_path):
    cfg, _ = parse_args(GRPOConfig, ["generation.vllm_gpu_memory_utilization=0.45"], prog="rl.grpo")
    cfg.generation.use_vllm = True          # grpo_args only; check_config would ask for vLLM itself
    args = grpo_args(cfg, SimpleNamespace(path=tmp_path), {"use_cpu": True, "bf16": False})
    assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization) == (True, "colocate", 0.45)


def test_explicit_arguments_do_not_lean_on_trl_defaults(tmp_path, monkeypatch):
    """grpo_args sets the scheduler, the reporting, completion logging and checkpointing itself: with
    a TRL config whose defaults are the opposite ones (transformers 4.x reported to every installed
    integration by default), the recipe's values still arrive; the batch size stays an int."""
    import dataclasses

    import trl

    @dataclasses.dataclass
    class FlippedDefaults(trl.GRPOConfig):
        report_to: None | str | list[str] = "tensorboard"
        log_completions: bool = True
        lr_scheduler_type: str = "constant"

    monkeypatch.setattr(trl, "GRPOConfig", FlippedDefaults)
    flags = {"use_cpu": True, "bf16": False}
    for checkpointing in (True, False):
        cfg, _ = parse_args(GRPOConfig, ["optim.scheduler=cosine", "train.prompts_per_step=3", "grpo.num_generations=4",
                                         "train.grad_accum_steps=2", f"train.gradient_checkpointing={checkpointing}"],
                            prog="rl.grpo")
        args = grpo_args(cfg, SimpleNamespace(path=tmp_path), flags)
        assert isinstance(args, FlippedDefaults) and args.report_to == [] and args.log_completions is False
        assert getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "cosine"
        ckpt = getattr(args, "activation_checkpointing", getattr(args, "gradient_checkpointing", None))
        assert ckpt is checkpointing
        assert type(args.per_device_train_batch_size) is int and args.per_device_train_batch_size == 6
