"""Held-out checks of the RL stages: what each stage did, measured on items it never trained on.

- DPO (`dpo_heldout`): on held-out preference pairs, the implicit reward of the trained policy,
  r(y) = beta * (log pi(y|x) - log pi_ref(y|x)), must rank the chosen answer above the rejected one.
  Reported: the share of pairs ranked right (ties count as wrong), the mean margin, and a one-sided
  sign test against a coin flip. Before training pi = pi_ref, so every margin is 0 and the accuracy 0.
  Beside it, each model's own ranking (log pi(chosen) > log pi(rejected)): the reference's is what
  the parent already knew about the held-out items, the policy's what it knows after DPO.
- GRPO (`reward_on_prompts`): greedy completions of held-out prompts scored with the run's own reward
  functions and weights, once by the initial policy and once by the trained one; the difference is
  tested with a paired bootstrap (core.stats) in rl/grpo.py.

Both run with plain transformers on the trained model after the trainer is done (CPU or one GPU),
tokenising conversations with the model's chat template as TRL does; torch is imported inside.
"""
from __future__ import annotations

from pathlib import Path

from core.runs import atomic_write_json
from core.stats import paired_bootstrap, sign_test


def _device(model):
    return next(model.parameters()).device


def completion_logp(model, tokenizer, prompt: list[dict], completion: list[dict]) -> float:
    """Summed log-probability of the completion's tokens after the chat-rendered prompt."""
    import torch
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=True)
    head, full = list(_ids(head)), list(_ids(full))
    if full[:len(head)] != head or len(full) <= len(head):
        raise ValueError("the chat template does not render the prompt as a prefix of prompt + answer")
    ids = torch.tensor([full], device=_device(model))
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    token_logp = logp.gather(1, targets[:, None])[:, 0]
    return float(token_logp[len(head) - 1:].sum())


def _ids(enc):
    return enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc


def dpo_heldout(policy, reference, tokenizer, rows: list[dict], beta: float) -> dict:
    """Implicit-reward accuracy of `policy` against `reference` on held-out TRL rows
    ({"prompt": [...], "chosen": [...], "rejected": [...]}), with the per-pair margins."""
    margins, ref_right, policy_right = [], 0, 0
    for r in rows:
        pc = completion_logp(policy, tokenizer, r["prompt"], r["chosen"])
        pr = completion_logp(policy, tokenizer, r["prompt"], r["rejected"])
        rc = completion_logp(reference, tokenizer, r["prompt"], r["chosen"])
        rr = completion_logp(reference, tokenizer, r["prompt"], r["rejected"])
        margins.append(beta * ((pc - rc) - (pr - rr)))
        ref_right += rc > rr
        policy_right += pc > pr
    right = sum(m > 0 for m in margins)
    n = len(margins)
    return {"n_pairs": n, "reward_acc": right / n if n else 0.0, "n_right": right,
            "mean_margin": sum(margins) / n if n else 0.0, "sign_test_p": sign_test(right, n),
            "reference_pref_acc": ref_right / n if n else 0.0, "policy_pref_acc": policy_right / n if n else 0.0,
            "margins": [round(m, 6) for m in margins]}


def greedy_completions(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int,
                       batch_size: int = 16) -> list[str]:
    """Greedy replies to chat prompts (left-padded batches, stop at the tokenizer's eos)."""
    import torch
    out = []
    device = _device(model)
    for s in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                 for p in prompts[s:s + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False).to(device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def reward_on_prompts(model, tokenizer, rows: list[dict], reward_funcs: list, weights: list[float],
                      max_new_tokens: int) -> tuple[list[float], list[str]]:
    """(weighted total reward per prompt, the replies): TRL's sum of weight x reward, a None
    (reward not applicable to the row) counting 0."""
    replies = greedy_completions(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens)
    completions = [[{"role": "assistant", "content": t}] for t in replies]
    cols = {k: [r.get(k) for r in rows] for k in ("task", "answer", "choices")}
    totals = [0.0] * len(rows)
    for f, w in zip(reward_funcs, weights):
        for i, v in enumerate(f(completions, **cols)):
            totals[i] += w * (v or 0.0)
    return totals, replies


def reward_delta(before: list[float], after: list[float], seed: int = 0) -> dict:
    """Mean held-out reward before and after, and the paired bootstrap of the difference."""
    n = len(before)
    return {"n_prompts": n, "reward_init": sum(before) / n if n else 0.0, "reward_trained": sum(after) / n if n else 0.0,
            "paired_bootstrap": paired_bootstrap(before, after, 10000, seed)}


def dpo_heldout_check(reference_dir: Path, policy_dir: Path, rows: list[dict], beta: float, out_path: Path) -> dict:
    """`dpo_heldout` of the exported policy against its reference folder; writes out_path (with the
    margins) and returns the summary for manifest.json."""
    from core.models import load_model, load_tokenizer
    tok = load_tokenizer(policy_dir)
    res = dpo_heldout(load_model(policy_dir).eval(), load_model(reference_dir).eval(), tok, rows, beta)
    atomic_write_json(out_path, res)
    print(f"held-out pairs: implicit-reward accuracy {res['reward_acc']:.3f} ({res['n_right']}/{res['n_pairs']}), "
          f"mean margin {res['mean_margin']:+.4f}, sign test p = {res['sign_test_p']:.2g}; own ranking "
          f"(log p chosen > rejected): reference {res['reference_pref_acc']:.3f}, policy {res['policy_pref_acc']:.3f}")
    return {k: v for k, v in res.items() if k != "margins"}


def grpo_heldout_check(init_dir: Path, policy_dir: Path, rows: list[dict], reward_funcs: list, weights: list[float],
                       max_new_tokens: int, out_path: Path, seed: int = 0) -> dict:
    """Greedy held-out reward of the initial and the trained policy (`reward_on_prompts`), the paired
    bootstrap of the difference; writes out_path (with every reply) and returns the summary."""
    from core.models import load_model, load_tokenizer
    tok = load_tokenizer(policy_dir)
    before, replies_before = reward_on_prompts(load_model(init_dir).eval(), tok, rows, reward_funcs, weights,
                                               max_new_tokens)
    after, replies_after = reward_on_prompts(load_model(policy_dir).eval(), tok, rows, reward_funcs, weights,
                                             max_new_tokens)
    res = reward_delta(before, after, seed)
    atomic_write_json(out_path, {**res, "items": [
        {"where": r.get("where"), "answer": r.get("answer"), "reward_init": b, "reward_trained": a,
         "reply_init": rb, "reply_trained": ra}
        for r, b, a, rb, ra in zip(rows, before, after, replies_before, replies_after)]})
    bs = res["paired_bootstrap"]
    print(f"held-out prompts: mean reward {res['reward_init']:.3f} (init) -> {res['reward_trained']:.3f} "
          f"(trained) on {res['n_prompts']}; difference {bs['diff']:+.3f}, 95% CI [{bs['ci95'][0]:+.3f}, "
          f"{bs['ci95'][1]:+.3f}]")
    return res
