"""Capability regression tests: each post-training stage, run through its real entrypoint on a tiny
model and a toy task, must still do its job on items it never trained on, in seconds.

Every test runs twice: as is, where the capability check must pass, and with the fault named in its
docstring injected (a monkeypatch of the pipeline, not of the test's own check), where the same check
must fail. A test whose check cannot tell a working stage from a broken one fails on its second run.
"""
import json
import random

import pytest
import yaml

from core.stats import paired_bootstrap
from data_recipes import sft_formats
from eval.extract import extract_choice

WORDS = ["苹果", "香蕉", "西瓜", "葡萄", "桃子", "梨子", "橘子", "草莓", "樱桃", "柠檬", "芒果", "菠萝"]


def _mcq(rng: random.Random, i: int) -> dict:
    opts = rng.sample(WORDS, 4)
    return {"question": f"第{i}题：下面哪个是水果{rng.choice(WORDS)}？", **dict(zip("ABCD", opts)),
            "answer": rng.choice("ABCD")}


def _prompt(row: dict) -> str:
    return row["question"] + "".join(f"\n{l}. {row[l]}" for l in "ABCD")


def _parse_rate(model_dir, rows) -> float:
    from core.models import load_model, load_tokenizer
    from rl.heldout import greedy_completions
    tok = load_tokenizer(model_dir)
    replies = greedy_completions(load_model(model_dir).eval(), tok, [[{"role": "user", "content": _prompt(r)}]
                                                                     for r in rows], max_new_tokens=8)
    # the taught format: the reply opens with "答案：" and names a letter. Parsing alone is not enough: a
    # model that learnt the prompts continues them with "A. 苹果", which extract_choice maps to a letter.
    return sum(t.strip().startswith("答案：") and extract_choice(t, [r[l] for l in "ABCD"]) is not None
               for t, r in zip(replies, rows)) / len(rows)


def _invert_mask(monkeypatch):
    """The fault: labels on the prompt tokens instead of the assistant's (a broken assistant-only mask)."""
    render = sft_formats.render

    def broken(tokenizer, messages, *a, **k):
        ids, labels = render(tokenizer, messages, *a, **k)
        return ids, [t if l == -100 else -100 for t, l in zip(ids, labels)]
    monkeypatch.setattr(sft_formats, "render", broken)


@pytest.mark.parametrize("fault", [None, "inverted_mask"])
def test_sft_teaches_the_answer_format(tmp_path, tiny_sft_run, monkeypatch, fault):
    """SFT on 96 multiple-choice prompts answered "答案：<letter>" takes the rate of replies in that
    format that parse (eval.extract) on 32 prompts it never saw from < 20% (the tiny random model) to > 90%.
    Fault (shown red by the second parameter): the assistant-only mask inverted, so the loss falls on
    the prompt: the parse rate stays near the untrained model's."""
    from sft.train import main
    rng = random.Random(0)
    train, heldout = [_mcq(rng, i) for i in range(96)], [_mcq(rng, 1000 + i) for i in range(32)]
    with open(tmp_path / "fmt.jsonl", "w", encoding="utf-8") as f:
        for r in train:
            f.write(json.dumps({"messages": [{"role": "user", "content": _prompt(r)},
                                             {"role": "assistant", "content": f"答案：{r['answer']}"}]},
                               ensure_ascii=False) + "\n")
    mix = tmp_path / "fmt.yaml"
    mix.write_text(yaml.safe_dump({"name": "fmt", "data_root": str(tmp_path), "decontam": {"enabled": False},
                                   "sources": [{"name": "fmt", "format": "messages", "path": "fmt.jsonl"}]}),
                   encoding="utf-8")
    before = _parse_rate(tiny_sft_run / "model", heldout)
    if fault:
        _invert_mask(monkeypatch)
    run = main(["sft/recipes/demo.yaml", f"init_from={tiny_sft_run}", f"data.recipe={mix}", f"run.root={tmp_path}",
                "train.max_steps=80", "train.batch_size=16", "optim.lr=5e-3", "optim.warmup_steps=2",
                "samples.prompts=[]", "train.log_every_steps=20"])
    after = _parse_rate(run / "model", heldout)
    assert before < 0.2
    works = after > 0.9
    assert works == (fault is None), f"parse rate {before:.2f} -> {after:.2f} (fault: {fault})"


def _pairs(rng: random.Random, n: int, start: int) -> list[dict]:
    return [{"prompt": f"第{start + i}个问题：{rng.choice(WORDS)}好吃吗？", "chosen": f"好吃，{rng.choice(WORDS)}很甜。",
             "rejected": f"不好，{rng.choice(WORDS)}很酸。"} for i in range(n)]


@pytest.mark.parametrize("fault", [None, "swapped_pairs"])
def test_dpo_prefers_chosen_on_heldout_pairs(tmp_path, tiny_sft_run, monkeypatch, fault):
    """DPO on 64 pairs (chosen "好吃…", rejected "不好…") reaches implicit-reward accuracy > 0.75 on 32
    held-out pairs (rl/heldout.py, written into the manifest).
    Fault (shown red by the second parameter): chosen and rejected swapped on their way to the trainer
    (a DPO sign error): the held-out accuracy falls to about 0."""
    from rl import dpo
    rng = random.Random(1)
    for name, rows in (("train", _pairs(rng, 64, 0)), ("heldout", _pairs(rng, 32, 1000))):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                encoding="utf-8")
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"sources": [{"name": name, "path": str(tmp_path / f"{name}.jsonl")}]}),
                                               encoding="utf-8")
    if fault:
        train_trl = dpo.train_trl
        monkeypatch.setattr(dpo, "train_trl", lambda cfg, run, model_dir, rows, steps: train_trl(
            cfg, run, model_dir, [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows], steps))
    run = dpo.main(["rl/recipes/demo_dpo.yaml", f"init_from={tiny_sft_run}", f"run.root={tmp_path}",
                f"data.recipe={tmp_path / 'train.yaml'}", f"data.heldout_recipe={tmp_path / 'heldout.yaml'}",
                "decontam.benchmarks=[]", "train.max_steps=12", "train.batch_size=8", "optim.lr=2e-3",
                "optim.warmup_steps=0", "train.log_every_steps=6"])
    acc = json.loads((run / "manifest.json").read_text())["heldout"]["reward_acc"]
    assert (acc > 0.75) == (fault is None), f"held-out implicit-reward accuracy {acc:.2f} (fault: {fault})"


def toy_fruit(completions, **_):
    """Toy reward: the share of a reply's characters that belong to fruit names (varies within a group)."""
    from rl.rewards import completion_text
    chars = set("".join(WORDS))
    return [sum(ch in chars for ch in t) / max(len(t), 1) for t in map(completion_text, completions)]


@pytest.mark.parametrize("fault", [None, "zeroed_reward"])
def test_grpo_raises_reward_on_heldout_prompts(tmp_path, tiny_sft_run, monkeypatch, fault):
    """GRPO with a reward that varies within each group (the share of fruit characters in the reply)
    raises the greedy reward on 24 held-out prompts above the init model's, paired bootstrap 95% CI > 0.
    Fault (shown red by the second parameter): the reward zeroed on its way to the trainer: every
    group has one reward, no gradient, the held-out reward does not move."""
    from rl import rewards
    from rl.grpo import main
    rng = random.Random(2)
    for name, n, start in (("train", 48, 0), ("heldout", 24, 1000)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(_mcq(rng, start + i), ensure_ascii=False) + "\n"
                                                        for i in range(n)), encoding="utf-8")
    monkeypatch.setitem(rewards.REWARDS, "toy_fruit",
                        toy_fruit if fault is None else lambda completions, **_: [0.0] * len(completions))
    run = main(["rl/recipes/demo_grpo.yaml", f"init_from={tiny_sft_run}", f"run.root={tmp_path}",
                f"prompts.mcq_files=[{tmp_path / 'train.jsonl'}]", f"prompts.heldout_mcq_files=[{tmp_path / 'heldout.jsonl'}]",
                "prompts.bench_dev=[]", "prompts.arithmetic_n=0", "decontam.benchmarks=[]",
                "grpo.rewards=[toy_fruit]", "grpo.reward_weights=[1.0]", "grpo.num_generations=4",
                "grpo.max_completion_len_tokens=8", "grpo.beta=0.0", "grpo.temperature=1.0",
                "train.max_steps=16", "train.prompts_per_step=4", "optim.lr=5e-3", "train.log_every_steps=4"])
    h = json.loads((run / "heldout.json").read_text())
    bs = paired_bootstrap([i["reward_init"] for i in h["items"]], [i["reward_trained"] for i in h["items"]])
    assert (bs["ci95"][0] > 0) == (fault is None), f"held-out reward {h['reward_init']:.3f} -> {h['reward_trained']:.3f}"
