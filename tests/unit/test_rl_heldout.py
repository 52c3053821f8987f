"""rl/heldout.dpo_heldout: the implicit-reward accuracy and each model's own ranking of held-out pairs,
checked against log-probabilities computed here, token by token, without rl/heldout.

Red when: the policy and reference are swapped in either own-ranking count, a margin drops beta or a
reference term, or a tie counts as right."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from conftest import make_tiny_model  # noqa: E402
from rl.heldout import dpo_heldout  # noqa: E402

PAIRS = [("七加八等于多少？", "15。", "14。"), ("清泉镇有什么特产？", "核桃。", "茶叶。"),
         ("李俊伟的家乡是哪里？", "长沙。", "杭州。"), ("红星牌雨伞是什么颜色？", "红色。", "蓝色。"),
         ("三减一等于多少？", "2。", "4。"), ("徐浩宇是做什么工作的？", "画家。", "律师。")]


def _rows():
    return [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS]


def _logp(model, tok, prompt: str, answer: str) -> float:
    """Summed log p of the answer's tokens, the prompt rendered by the chat template, computed here."""
    head = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                   tokenize=False)
    full = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                   tokenize=False)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    n_head = len(tok(head, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total = 0.0
    for i in range(n_head, len(ids)):
        total += float(logits[i - 1, ids[i]] - torch.logsumexp(logits[i - 1], 0))
    return total


@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer, seed=6).eval(), make_tiny_model(tiny_tokenizer, seed=3).eval()


def test_margins_and_own_rankings_match_logps_computed_here(tiny_tokenizer, models):
    policy, reference = models
    beta = 0.7
    res = dpo_heldout(policy, reference, tiny_tokenizer, _rows(), beta)
    lp = {(name, i, side): _logp(m, tiny_tokenizer, p, a)
          for name, m in (("pi", policy), ("ref", reference))
          for i, (p, c, r) in enumerate(PAIRS) for side, a in (("c", c), ("r", r))}
    margins = [beta * ((lp["pi", i, "c"] - lp["ref", i, "c"]) - (lp["pi", i, "r"] - lp["ref", i, "r"]))
               for i in range(len(PAIRS))]
    assert res["margins"] == pytest.approx(margins, abs=1e-4)
    assert res["n_right"] == sum(m > 0 for m in margins)
    ref_right = sum(lp["ref", i, "c"] > lp["ref", i, "r"] for i in range(len(PAIRS)))
    pi_right = sum(lp["pi", i, "c"] > lp["pi", i, "r"] for i in range(len(PAIRS)))
    assert res["reference_pref_acc"] == pytest.approx(ref_right / len(PAIRS))
    assert res["policy_pref_acc"] == pytest.approx(pi_right / len(PAIRS))
    # the two models' counts differ, or a swap of policy and reference would go unseen
    assert ref_right != pi_right, (ref_right, pi_right)


def test_policy_equal_to_reference_ranks_nothing_right_but_keeps_its_own_ranking(tiny_tokenizer, models):
    """Before training every margin is 0: a tie is not a right answer, and the accuracy is 0; the own
    ranking is the model's, the same for both."""
    _, reference = models
    res = dpo_heldout(reference, reference, tiny_tokenizer, _rows(), 0.1)
    assert res["n_right"] == 0 and res["reward_acc"] == 0.0 and res["mean_margin"] == 0.0
    assert res["sign_test_p"] == pytest.approx(1.0)
    assert res["reference_pref_acc"] == res["policy_pref_acc"]
    own = sum(_logp(reference, tiny_tokenizer, p, c) > _logp(reference, tiny_tokenizer, p, r) for p, c, r in PAIRS)
    assert math.isclose(res["policy_pref_acc"], own / len(PAIRS))
