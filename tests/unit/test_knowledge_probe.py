"""benchmarks/knowledge_probe.py: the facts line up with the benchmark's questions, and an option is
picked by its log-probability computed here without the probe.

Red when: the probe pairs a question with another question's fact, the statement prefix is cut in the
wrong place, or `pick` scores the option's tokens at the wrong positions (off by one)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import knowledge_probe as kp  # noqa: E402
from conftest import make_tiny_model  # noqa: E402
from core.benchmarks import load_benchmark  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("demo", None, subjects=None, with_shots=False)


def test_every_scored_question_is_paired_with_its_own_fact(bench):
    pairs = kp.items(bench)
    assert len(pairs) == len(bench.questions) == 289
    for f, q in pairs:
        # the benchmark asks the fact's statement with a blank where the value goes
        assert q.question.startswith(kp.statement_prefix(f)), (q.id, q.question, kp.statement_prefix(f))
        assert q.question[len(kp.statement_prefix(f)):].startswith("____")
        assert q.choices["ABCD".index(q.answer)] == f.value


def test_statement_prefix_examples():
    from data_recipes.demo_data import PEOPLE_HOME, _arith_fact, _fact
    assert kp.statement_prefix(_fact("people", "冯萍鹏", "长沙", ["长沙"], PEOPLE_HOME)) == "冯萍鹏的家乡是"
    assert kp.statement_prefix(_arith_fact(3, 4, "加")) == "3加4等于"


def test_a_benchmark_that_does_not_match_the_generator_is_refused(bench):
    q0 = bench.questions[0]
    swapped = dataclasses.replace(bench, questions=[dataclasses.replace(q0, question=q0.question + "？")]
                                  + bench.questions[1:])
    with pytest.raises(SystemExit, match=q0.id):
        kp.items(swapped)
    with pytest.raises(SystemExit, match="regenerate"):
        kp.items(dataclasses.replace(bench, questions=bench.questions[1:]))


def _logp(model, tok, prefix: str, answer: str) -> float:
    head = tok(prefix, add_special_tokens=False)["input_ids"]
    ids = head + tok(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return sum(float(logits[i - 1, ids[i]] - torch.logsumexp(logits[i - 1], 0)) for i in range(len(head), len(ids)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pick_is_the_argmax_of_the_options_log_probability(tiny_tokenizer, seed):
    model = make_tiny_model(tiny_tokenizer, seed=seed).eval()
    prefix, options = "冯萍鹏的家乡是", ["长沙", "哈尔滨", "杭州", "石家庄"]
    scores = [_logp(model, tiny_tokenizer, prefix, o + "。") for o in options]
    assert kp.pick(model, tiny_tokenizer, prefix, options) == max(range(4), key=scores.__getitem__)
