"""`python -m rl.grpo` on a fake finished SFT run with the tiny model: two steps with a small group,
rewards computed and logged per function, KL and completion length, run folder + manifest complete
with the parent link, and prompt decontamination."""
from __future__ import annotations

import json
import math

from core.log import read_metrics
from core.runs import require_finished


def test_grpo_two_steps(tmp_path, tiny_sft_run):
    from rl.grpo import main
    # init_from names the parent's model/ folder: resolved as the run, recorded as the parent (issue 17).
    # Two verbatim copies of demo-bench dev rows, the way scraped exam data holds them.
    import csv
    with open("eval/benchmarks/demo_bench/dev/people_dev.csv", encoding="utf-8") as f:
        dev = list(csv.DictReader(f))[:2]
    copies = tmp_path / "copies.jsonl"
    copies.write_text("".join(json.dumps({k: r[k] for k in ("question", "A", "B", "C", "D", "answer")},
                                         ensure_ascii=False) + "\n" for r in dev), encoding="utf-8")
    out = main(["rl/recipes/demo_grpo.yaml", f"init_from={tiny_sft_run / 'model'}", f"run.root={tmp_path}", "run.name=t",
                f"prompts.mcq_files=[data_recipes/demo/grpo/train_mcq.jsonl,{copies}]", "prompts.heldout_mcq_files=[]",
                "prompts.arithmetic_n=6", "train.max_steps=2", "train.prompts_per_step=2",
                "grpo.num_generations=2", "grpo.max_completion_len_tokens=6", "train.log_every_steps=1",
                "grpo.rewards=[mcq_correct,numeric_answer,answer_format]", "grpo.reward_weights=[1.0,1.0,0.5]",
                "optim.lr=1e-3"])
    manifest = require_finished(out, stage="grpo")
    assert manifest["parent"] == str(tiny_sft_run) and manifest["steps"] == 2
    assert manifest["rewards"] == {"mcq_correct": 1.0, "numeric_answer": 1.0, "answer_format": 0.5}
    assert manifest["data_recipe"]["n_prompts"] > 6 and manifest["tokenizer_sha256"]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["loss"]) and "reward" in r and "reward/answer_format" in r
        assert 0 < r["completion_len"] <= 6 and r["kl"] >= 0
    # Each logged batch held mcq or arithmetic prompts, so at least one task reward was computed.
    assert any("reward/mcq_correct" in r or "reward/numeric_answer" in r for r in rows)
    # The two copies of demo-bench questions are dropped, dev rows are not checked.
    decon = json.loads((out / "decontamination.json").read_text())
    assert decon["n_checked"] == 269 + 2 and decon["n_dropped"] == 2
    report = json.loads((out / "data_report.json").read_text())
    assert report["per_source"]["demo_dev"] == 20 and report["per_source"]["train_mcq"] == 269
    assert "copies" not in report["per_source"]
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out / "model")
    assert (out / "model" / "tokenizer.json").is_file() and (out / "model" / "generation_config.json").is_file()


def test_grpo_config_errors(tmp_path, tiny_sft_run, user_error):
    from rl.grpo import main
    base = [f"init_from={tiny_sft_run}", f"run.root={tmp_path}"]
    assert user_error(main, [*base, "grpo.rewards=[mcq_correct,length_bonus]"]).startswith(
        "config error: grpo.rewards: unknown reward")
    assert "grpo.reward_weights" in user_error(main, [*base, "grpo.reward_weights=[1.0]"])
    assert "num_generations must be >= 2" in user_error(main, [*base, "grpo.num_generations=1"])
    bad = tmp_path / "exam.jsonl"
    bad.write_text('{"instruction": "没有选项", "output": "答案：A"}\n', encoding="utf-8")
    assert user_error(main, [*base, f"prompts.mcq_files=[{bad}]"]).startswith(
        f"data error: {bad}:1: options A-D not found")
    assert not (tmp_path / "grpo").exists()       # config and data mistakes leave no run folder behind
