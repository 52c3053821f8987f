"""The `steel-compat` protocol: Steel-LLM's published chat evaluation, reproduced so our models can
be set beside its C-Eval 41.9 / CMMLU 36.1 honestly. Reimplemented from the behaviour of its
scripts (github.com/zhanshijinwat/Steel-LLM, eval/eval_chat.py for C-Eval, eval/eval_CMMLU.py +
eval/mp_utils.py for CMMLU, commit 00349e44); not our recommended protocol.

What it does (both benchmarks): 0-shot, chat template with the system message
"You are a helpful assistant.", user message `以下是一道单选题:\n{question}\n\n{A. ..\nB. ..\n
C. ..\nD. ..\n}请给出答案。\n` (C-Eval first rewrites "____。" to "( )", CMMLU deletes "____"),
greedy decoding, at most 64 new tokens. The reply is always turned into a letter:

- C-Eval (`qwen-ceval`, from Qwen's evaluate_chat_ceval.py): option texts in the reply are replaced
  by their letters, then "选/选择 X" / "答案是 X" style patterns, then "X 正确 / X 符合", then a
  leading letter, then the first stand-alone letter; if none, the option whose text is closest to
  the reply (Steel used `thefuzz.process.extractOne`; we use difflib's ratio, which may pick a
  different option on some replies: an approximation, recorded as fallback "closest").
- CMMLU (`cmmlu`, from CMMLU's mp_utils.extract_choice): a leading letter, then CMMLU's regex
  chain, then the last "X ... 正确/当选", then "是 X", then the only letter mentioned; if none, a
  RANDOM letter. We keep that random fallback (it is part of the published numbers) but seed it
  per question (seed + question id) so reruns agree, and count it (fallback "random").

Accuracy is averaged per subject (Steel prints the subject average), which is our acc_macro.
"""
from __future__ import annotations

import difflib
import hashlib
import random
import re

from core.benchmarks import LETTERS
from core.config import ConfigError

SYSTEM = "You are a helpful assistant."


def user_message(question: str, choices: tuple[str, ...] | list[str], blank: list[str] | tuple = ()) -> str:
    block = question + "\n\n" + "".join(f"{l}. {c}\n" for l, c in zip(LETTERS, choices))
    if len(blank) == 2:
        block = block.replace(blank[0], blank[1])
    return f"以下是一道单选题:\n{block}请给出答案。\n"


# ---- C-Eval: Qwen's chain ------------------------------------------------------------------------
_NEG = r"(?:不|非)"
_QWEN_PATTERNS = [
    # 答案是A | 选项是A | 应该选A选项 (a 不/非 before the verb vetoes the match)
    re.compile(r"(?:(?:选|选择|选定)[：:]?\s*|(?:(?:答案|选项)(?![^ABCD]{0,10}?" + _NEG +
               r"[^ABCD]{0,10}?(?:是|选|为|：|:|】))[^ABCD]{0,10}?(?:是|选|为|：|:|】))[^ABCD]{0,10}?)"
               r"(A|B|C|D)(?:选项)?(?:\)|。|\.|，|,|．|、|A|B|C|D|$|：|:|\)|）)"),
    # A选项正确 | A选项符合题意
    re.compile(r"(A|B|C|D)(?:选?项)?(?![^ABCD]{0,4}?" + _NEG + r"[^ABCD]{0,4}?(?:正确|对[的，。：]|符合))"
               r"[^ABCD]{0,4}?(?:正确|对[的，。：]|符合)"),
    re.compile(r"^[\(（]?(A|B|C|D)(?:。|\)|）|\.|，|,|．|：|:|$)"),
    re.compile(r"(?<![a-zA-Z])(A|B|C|D)(?![a-zA-Z=])"),
]


def _qwen_preprocess(reply: str, question: str, choices) -> str:
    """Replace a restated question stem by 答案是 and option texts by their letters (longest first)."""
    parts = question.rstrip("。").split("。")[-1].split("_")
    if len(parts[0].strip()) > 4:
        reply = reply.replace(parts[0], "答案是")
    if len(parts[-1].strip()) > 4:
        reply = reply.replace(parts[-1], "")
    for letter, text in sorted(zip(LETTERS, choices), key=lambda kv: len(kv[1]), reverse=True):
        reply = reply.replace(text.rstrip("。"), letter)
    return reply


def extract_qwen_ceval(reply: str, question: str, choices) -> tuple[str, str | None]:
    """(letter, fallback or None)."""
    gen = _qwen_preprocess(reply, question, choices)
    for rx in _QWEN_PATTERNS:
        m = rx.search(gen)
        if m:
            return m.group(1), None
    scores = [difflib.SequenceMatcher(None, reply, c).ratio() for c in choices]
    return LETTERS[scores.index(max(scores))], "closest"


# ---- CMMLU: CMMLU's chain with a random fallback -------------------------------------------------
_CMMLU_SINGLE = [
    (r"答案(选项)?(是|为)：? ?([ABCD])", 3), (r"答案(是|为)选项 ?([ABCD])", 2), (r"故?选择?：? ?([ABCD])", 1),
    (r"([ABCD]) ?选?项(是|为)?正确", 1), (r"正确的?选项(是|为) ?([ABCD])", 2), (r"答案(应该)?(是|为)([ABCD])", 3),
    (r"选项 ?([ABCD]) ?(是|为)?正确", 1), (r"选择答案 ?([ABCD])", 1), (r"答案?：?([ABCD])", 1),
    (r"([ABCD])(选?项)?是?符合题意", 1), (r"答案选项：? ?([ABCD])", 1), (r"答案(选项)?为(.*?)([ABCD])", 3),
]
_CMMLU_LAST = [r"([ABCD])(.*?)当选", r"([ABCD])(.*?)正确"]


def _seeded_letter(seed: int, qid: str) -> str:
    h = int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()[:16], 16)
    return random.Random(h).choice(LETTERS)


def extract_cmmlu(reply: str, seed: int, qid: str) -> tuple[str, str | None]:
    reply = str(reply).replace("\n", "")    # Steel stores the reply with newlines removed
    if reply and reply[0] in LETTERS:
        return reply[0], None
    for pattern, group in _CMMLU_SINGLE:
        m = re.search(pattern, reply, re.M)
        if m:
            return m.group(group), None
    for pattern in _CMMLU_LAST:
        m = re.search(pattern, reply, re.M)
        if m:
            answer = m.group(1)
            # CMMLU walks forward to the last "X ... 正确" inside the match.
            while m:
                answer = m.group(1)
                m = re.search(pattern, m.group(0)[1:], re.M)
            return answer, None
    m = re.search(r"[^不]是：? ?([ABCD])", reply, re.M)
    if m:
        return m.group(1), None
    m = re.match(r"^[^ABCD]*([ABCD])[^ABCD]*$", reply)
    if m:
        return m.group(1), None
    return _seeded_letter(seed, qid), "random"


def extract(kind: str, reply: str, question, seed: int) -> tuple[str, str | None]:
    """Steel's forced-choice extraction for benchmark style `kind` ("qwen-ceval" | "cmmlu")."""
    if kind == "cmmlu":
        return extract_cmmlu(reply, seed, question.id)
    if kind == "qwen-ceval":
        return extract_qwen_ceval(reply, question.question, question.choices)
    raise ConfigError(f"unknown steel_extractor {kind!r} (qwen-ceval | cmmlu)")
