"""Evaluation protocols: named, versioned recipes for turning a question into a prompt and a model's
output into an answer. The name and version are recorded in every result file; change a prompt or
the scoring and the version goes up.

| name              | shots     | prompt                                  | answer                                  |
|-------------------|-----------|-----------------------------------------|-----------------------------------------|
| base-5shot-logits | 5 (dev)   | C-Eval paper: header + 5 solved dev     | argmax of next-token logits over A/B/C/D|
|                   |           | questions + question, ends "答案："      |                                         |
| chat-0shot-gen    | 0         | chat template, "直接给出正确答案的选项"   | greedy, eval.extract; unparsed = wrong  |
| chat-0shot-cot    | 0         | chat template, "逐步分析...最后以答案：X" | greedy (longer), final answer extracted |
| steel-compat      | 0         | Steel-LLM's chat prompt (eval/steel.py) | Steel's regexes + random/closest fallback|

A prompt is split into `prefix` (shared by every question of a subject: header + shots) and
`suffix` (the question), so the hf backend can run the prefix once and reuse its KV cache. A prompt
longer than the model's context is fitted by eval/context.py (fewer shots, then a left cut) before
any backend sees it.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from core.benchmarks import LETTERS, BenchmarkDataError, BenchSpec, Question
from core.config import ConfigError
from core.results import PROTOCOL_NAMES
from core.runs import RunError
from eval import steel
from eval.extract import extract_choice


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    shots: int
    scoring: str              # "logits" | "generation"
    chat: bool                # rendered with the model's chat template
    max_new_tokens: int       # generation budget (generation protocols)
    prompt_format: str        # one-line description recorded in results
    averaging: str = "micro+macro"
    label: str = ""           # a warning printed and recorded with the result

    def record(self) -> dict:
        d = asdict(self)
        d.pop("chat")
        return d


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("base-5shot-logits", 1, 5, "logits", False, 0,
             "C-Eval paper answer-only 5-shot: '<header>\\n\\n' + 5 x '<q>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\n答案：<X>\\n\\n'"
             " + '<q>\\nA. ..\\n...\\n答案：'; argmax of next-token logits over the tokens A/B/C/D"),
    Protocol("chat-0shot-gen", 1, 0, "generation", True, 32,
             "chat template, user: '以下是关于<subject>的单项选择题，请直接给出正确答案的选项。\\n\\n<q>\\nA. ..\\n...'; "
             "greedy; eval.extract.extract_choice; unparsed counts wrong"),
    Protocol("chat-0shot-cot", 1, 0, "generation", True, 512,
             "chat template, user: '以下是关于<subject>的单项选择题，请逐步分析，最后一行以“答案：X”给出...'; "
             "greedy; last answer marker extracted; unparsed counts wrong"),
    Protocol("steel-compat", 1, 0, "generation", True, 64,
             "Steel-LLM eval_chat.py / eval_CMMLU.py: system 'You are a helpful assistant.', user "
             "'以下是一道单选题:\\n<q>\\n\\nA. ..\\n...请给出答案。\\n'; greedy 64 tokens; Steel's regex chain",
             label="STEEL-COMPAT: reproduces Steel-LLM's published protocol incl. its forced-choice fallback "
                   "(CMMLU: random letter, seeded; C-Eval: closest option). Not comparable to our other protocols."),
]}
# The result contract (core/results.py) names the protocols a result may carry: exactly these.
assert tuple(PROTOCOLS) == PROTOCOL_NAMES, f"eval/protocols.py {tuple(PROTOCOLS)} != core.results {PROTOCOL_NAMES}"


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass(frozen=True)
class Prompt:
    prefix: str      # shared by all questions of a subject ("" for 0-shot chat protocols)
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.suffix

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]


def question_block(q: Question, answer_prefix: str, answer: str = "") -> str:
    """'<question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\n答案：<answer>' (C-Eval's answer-only format)."""
    opts = "".join(f"\n{l}. {c}" for l, c in zip(LETTERS, q.choices))
    return f"{q.question.strip()}{opts}\n{answer_prefix}{answer}"


def subject_names(spec: BenchSpec, subjects: dict, subject: str) -> dict:
    en, zh = subjects.get(subject, [subject, subject, ""])[:2]
    return {"subject_en": en, "subject_zh": zh}


def fewshot_prefix(spec: BenchSpec, names: dict, shots: list[Question], n_shots: int) -> str:
    if len(shots) < n_shots:
        raise BenchmarkDataError(f"{spec.name}/{shots[0].subject if shots else '?'}: {n_shots} shots needed, "
                         f"{len(shots)} in {spec.shot_split}")
    head = spec.instruction.format(**names)
    return head + "".join(question_block(s, spec.answer_prefix, s.answer) + "\n\n" for s in shots[:n_shots])


def chat_messages(protocol: Protocol, spec: BenchSpec, names: dict, q: Question) -> list[dict]:
    opts = "".join(f"\n{l}. {c}" for l, c in zip(LETTERS, q.choices))
    if protocol.name == "chat-0shot-gen":
        return [{"role": "user", "content": f"以下是关于{names['subject_zh']}的单项选择题，请直接给出正确答案的选项。"
                                            f"\n\n{q.question.strip()}{opts}"}]
    if protocol.name == "chat-0shot-cot":
        return [{"role": "user", "content": f"以下是关于{names['subject_zh']}的单项选择题，请逐步分析，"
                                            f"最后一行以“答案：X”的格式给出正确选项（X 为 A、B、C 或 D）。"
                                            f"\n\n{q.question.strip()}{opts}"}]
    if protocol.name == "steel-compat":
        return [{"role": "system", "content": steel.SYSTEM},
                {"role": "user", "content": steel.user_message(q.question, q.choices, spec.steel_blank)}]
    raise ValueError(f"{protocol.name} is not a chat protocol")


def render_chat(tokenizer, messages: list[dict]) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise RunError("this model's tokenizer has no chat template; chat protocols need one "
                         "(use base-5shot-logits for a base model)")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build_prompt(protocol: Protocol, spec: BenchSpec, subjects: dict, q: Question,
                 shots: list[Question], tokenizer=None, prefix_cache: dict | None = None,
                 n_shots: int | None = None) -> Prompt:
    """The prompt of `q` with the protocol's shots, or the first `n_shots` of them (the context
    policy, eval/context.py, drops examples from the end); prefixes are memoised per (subject, shots)."""
    names = subject_names(spec, subjects, q.subject)
    if protocol.scoring == "logits":
        k = protocol.shots if n_shots is None else n_shots
        key = (q.subject, k)
        if prefix_cache is not None and key in prefix_cache:
            prefix = prefix_cache[key]
        else:
            prefix = fewshot_prefix(spec, names, shots, k) if k else spec.instruction.format(**names)
            if prefix_cache is not None:
                prefix_cache[key] = prefix
        return Prompt(prefix, question_block(q, spec.answer_prefix))
    return Prompt("", render_chat(tokenizer, chat_messages(protocol, spec, names, q)))


def parse_answer(protocol: Protocol, spec: BenchSpec, q: Question, generated: str,
                 seed: int) -> tuple[str | None, str | None]:
    """(answer letter or None, fallback used or None) for a generation protocol."""
    if protocol.name == "steel-compat":
        return steel.extract(spec.steel_extractor, generated, q, seed)
    return extract_choice(generated, list(q.choices)), None
