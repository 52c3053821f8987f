"""The built-in demo data: committed files = the generator's output, and the train / bench / held-out
split holds in the files themselves (not only in the generator's intent)."""
import json

import pytest

from data_recipes import demo_data as D
from data_recipes.demo_data import render_all

POST_TRAINING = ["sft/chat.jsonl", "sft/exam_alpaca.jsonl", "dpo/pairs.jsonl", "grpo/train_mcq.jsonl"]
HELDOUT = ["dpo/heldout_pairs.jsonl", "grpo/heldout_mcq.jsonl"]


def test_committed_demo_files_match_the_generator():
    """The shipped demo corpus/benchmark are exactly what data_recipes/demo_data.py generates."""
    stale = [str(p) for p, text in render_all().items()
             if not p.is_file() or p.read_text(encoding="utf-8") != text]
    assert not stale, f"regenerate with `python -m data_recipes.demo_data`: {stale}"


def _text(rel: str) -> str:
    return (D.DEMO_DIR / rel).read_text(encoding="utf-8")


def _mentions(fact: D.Fact) -> list[str]:
    """Strings that would reveal a fact's entity in a row: the name, or a problem's digit and numeral stems."""
    if fact.kind != "arithmetic":
        return [fact.entity]
    return [fact.question.split("____")[0], fact.chat_q.replace("多少？", "")]


@pytest.fixture(scope="module")
def world():
    return D.world()


def test_no_benchmark_or_heldout_entity_in_any_post_training_row(world):
    """By construction: no scored benchmark item's entity (and no held-out entity) is named in any SFT,
    DPO or GRPO training row; the benchmark's val rows are exactly the bench part's facts."""
    rows = "\n".join(_text(f) for f in POST_TRAINING)
    for part in ("bench", "heldout"):
        leaked = [m for f in world.of(part) for m in _mentions(f) if m in rows]
        assert not leaked, f"{part} entities in post-training rows: {leaked[:5]}"
    val = {q for rows_ in D.benchmark().values() for q in (r["question"] for r in rows_[5:])}
    assert val == {f.question for f in world.of("bench")}
    dev = {r["question"] for rows_ in D.benchmark().values() for r in rows_[:5]}
    assert dev <= {f.question for f in world.of("train")}


def test_heldout_rows_are_heldout_entities_that_pretraining_states(world):
    """The held-out DPO pairs and GRPO prompts ask about held-out entities only; every bench and held-out
    entity is stated in the pretraining corpus (where the model has to learn it)."""
    for rel in HELDOUT:
        for line in _text(rel).splitlines():
            row = json.loads(line)
            q = row.get("prompt") or row["question"]
            assert any(m in q for f in world.of("heldout") for m in _mentions(f)), q
    corpus = "\n".join(_text(f"corpus/{n}") for n in ("entities.jsonl", "arithmetic.jsonl"))
    missing = [f.entity for part in ("bench", "heldout") for f in world.of(part)
               if f.kind != "arithmetic" and f.entity not in corpus]
    assert not missing


def test_sft_mcq_wordings_differ_from_eval_prompts():
    """Like data_recipes/sft_formats.py: the demo's SFT instructions share no 6-character run with any
    eval prompt (Steel-LLM trained on its own eval prompt text)."""
    from core.benchmarks import load_spec
    from eval.protocols import PROTOCOLS, chat_messages
    spec = load_spec("demo")
    q = type("Q", (), {"question": "题", "choices": ("a", "b", "c", "d")})()
    evals = [spec.instruction.format(subject_zh=zh, subject_en=en) + spec.answer_prefix
             for en, zh, _ in D.BENCH_SUBJECTS.values()]
    for name in ("chat-0shot-gen", "chat-0shot-cot"):
        evals += [m["content"] for en, zh, _ in D.BENCH_SUBJECTS.values()
                  for m in chat_messages(PROTOCOLS[name], spec, {"subject_en": en, "subject_zh": zh}, q)]
    for ours in D.MCQ_INSTRUCTIONS:
        for zh in (v[1] for v in D.BENCH_SUBJECTS.values()):
            text = ours.format(zh=zh)
            runs = {text[i:i + 6] for i in range(len(text) - 5)}
            assert not any(r in e for r in runs for e in evals), text
