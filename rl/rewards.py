"""Rule-based rewards for GRPO: multiple-choice correctness, answer format, numeric answers.

Each function has TRL's reward signature `f(completions, **columns) -> list[float | None]`, where the
prompt dataset's columns arrive as keyword lists: `task` ("mcq" | "arith"), `answer` (a letter or a
number as text) and `choices` (four option texts; empty for arithmetic). A reward that does not
apply to a row returns None (TRL records NaN and leaves it out of that reward's mean), so one mixed
prompt set trains both tasks.

Why partial credit: GRPO's advantage is reward minus the group mean, so a reward equal for every
completion of a prompt gives zero gradient. Early in training nearly every answer is wrong; the
format reward and the near-miss credit of `numeric_answer` keep the group rewards apart.

The expected answer format (also stated in the prompts, data_recipes/rl_prompts.py) is a last line
`答案：<letter or number>`.
"""
from __future__ import annotations

import math
import re

from eval.extract import extract_choice

# "答案：38", "答案是 C", "最终答案为-2.5": the marker and the token after it.
_MARKER = re.compile(r"(?:最终)?答案\s*(?:是|为|為|:|：)\s*[\(（【]?\s*([A-DＡ-Ｄ](?![A-Za-z])|[-−]?[0-9０-９][0-9０-９,，.]*(?:/[0-9]+)?|[零〇一二两三四五六七八九十百千万]+)")
_NUMBER = re.compile(r"[-−]?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000}


def completion_text(completion) -> str:
    """TRL passes a string (standard prompts) or [{"role": "assistant", "content": ...}] (chat prompts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    return ""


def zh_to_number(text: str) -> int | None:
    """Chinese numerals up to 99,999,999 ("三十八", "一百零五", "两千", "十二万三千") -> int; None if not one."""
    if not text or any(ch not in _ZH_DIGITS and ch not in _ZH_UNITS and ch != "万" for ch in text):
        return None
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        elif ch in _ZH_UNITS:
            section += (1 if digit is None else digit) * _ZH_UNITS[ch]
            digit = None
        else:  # 万
            total += (section + (digit or 0)) * 10000
            section, digit = 0, None
    return total + section + (digit or 0)


def parse_number(token: str) -> float | None:
    """'38', '-2.5', '1,000', '3/4', '３８', '三十八' -> float; None if unreadable."""
    if token is None:
        return None
    t = token.strip().translate(str.maketrans("０１２３４５６７８９−，", "0123456789-,")).rstrip(".,")
    zh = zh_to_number(t)
    if zh is not None:
        return float(zh)
    t = t.replace(",", "")
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            return float(num) / float(den) if float(den) != 0 else None
        return float(t)
    except ValueError:
        return None


def final_number(text: str) -> float | None:
    """The number after the last answer marker, else the last number in the text."""
    markers = list(_MARKER.finditer(text))
    for m in reversed(markers):
        v = parse_number(m.group(1))
        if v is not None:
            return v
    nums = _NUMBER.findall(text.translate(str.maketrans("０１２３４５６７８９−", "0123456789-")))
    return parse_number(nums[-1]) if nums else None


def _answer_line_ok(text: str, task: str) -> tuple[int, bool]:
    """(number of answer markers with a token of the task's kind, whether the last one ends the reply)."""
    hits = []
    for m in _MARKER.finditer(text):
        tok = m.group(1)
        is_letter = tok.translate(str.maketrans("ＡＢＣＤ", "ABCD")) in ("A", "B", "C", "D")
        if (task == "mcq" and is_letter) or (task != "mcq" and not is_letter and parse_number(tok) is not None):
            hits.append(m)
    if not hits:
        return 0, False
    tail = text[hits[-1].end():]
    return len(hits), re.fullmatch(r"[\s。.．!！)）】]*", tail) is not None


# ---- the reward functions (their __name__ is the metric name: rewards/<name>/mean) ---------------
def mcq_correct(completions, answer, task, choices=None, **_) -> list[float | None]:
    """1.0 when the extracted letter (eval.extract.extract_choice) equals the key, else 0.0; None off-task."""
    out: list[float | None] = []
    for i, (c, key, t) in enumerate(zip(completions, answer, task)):
        if t != "mcq":
            out.append(None)
            continue
        opts = list(choices[i]) if choices is not None and choices[i] else None
        out.append(1.0 if extract_choice(completion_text(c), opts) == str(key).strip().upper() else 0.0)
    return out


def answer_format(completions, task, **_) -> list[float]:
    """0.5 for an answer line `答案：<token>` of the right kind (letter for mcq, number for arith),
    +0.25 when it is the only one, +0.25 when nothing but punctuation follows it; 0.0 without one."""
    out = []
    for c, t in zip(completions, task):
        n, at_end = _answer_line_ok(completion_text(c), t)
        out.append(0.0 if n == 0 else 0.5 + 0.25 * (n == 1) + 0.25 * at_end)
    return out


def numeric_answer(completions, answer, task, **_) -> list[float | None]:
    """Arithmetic rows: 1.0 exact (to 1e-6 relative), else 0.1 + 0.4 * max(0, 1 - |err| / max(|key|, 1))
    for any readable number (near misses score higher), 0.0 when no number can be read; None off-task."""
    out: list[float | None] = []
    for c, key, t in zip(completions, answer, task):
        if t != "arith":
            out.append(None)
            continue
        want = parse_number(str(key))
        got = final_number(completion_text(c))
        if want is None:
            raise ValueError(f"numeric_answer: the key {key!r} is not a number")
        if got is None or not math.isfinite(got):
            out.append(0.0)
        elif abs(got - want) <= 1e-6 * max(1.0, abs(want)):
            out.append(1.0)
        else:
            out.append(0.1 + 0.4 * max(0.0, 1.0 - abs(got - want) / max(abs(want), 1.0)))
    return out


REWARDS = {f.__name__: f for f in (mcq_correct, answer_format, numeric_answer)}


def get_rewards(names: list[str]) -> list:
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; known: {sorted(REWARDS)}")
    return [REWARDS[n] for n in names]
