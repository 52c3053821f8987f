"""Answer extraction for multiple-choice generations: `extract_choice(text) -> 'A'|'B'|'C'|'D'|None`.

Used by the generation protocols (chat-0shot-gen, chat-0shot-cot, steel-compat) and by the RL
rewards (rl/rewards.py). An answer that cannot be read is None, and the protocols count None as
wrong and report it; this function never guesses.

The patterns, tried in this order (the first rule that yields an answer wins):

1. Answer markers. The LAST marker in the text wins, so a chain of thought that weighs options
   before concluding is read at its conclusion:
   Chinese  答案是C / 答案：C / 答案为（C） / 正确答案是 C / 正确选项为C / 故选C / 应选 B / 选 B。 /
            选择B / 选项B正确 / 答案应该是B
   English  the answer is (B) / Answer: B / correct answer is B / correct option: B / choose B /
            option B is correct
   A marker followed by several different letters ("答案是AB", "A和C") is ambiguous: None.
2. The whole reply is a letter, optionally bracketed or punctuated: "B", "(B)", "B.", "【C】", "Ｂ".
3. The reply starts with a letter and a delimiter: "B. 广州", "C：因为...", "D、".
4. With `choices` given: exactly one option's full text appears in the reply -> its letter
   (the longest match wins when one option contains another, e.g. "12" and "120").
5. Exactly one distinct stand-alone letter A-D appears anywhere (not inside an English word, not
   the English article "A" before a lower-case word). Two or more distinct letters: None.

Full-width letters (ＡＢＣＤ) are normalised to ASCII first.
"""
from __future__ import annotations

import re

LETTERS = ("A", "B", "C", "D")

_FULLWIDTH = str.maketrans("ＡＢＣＤａｂｃｄ：（）", "ABCDabcd:()")

# A stand-alone letter: not part of a longer Latin word.
_L = r"(?<![A-Za-z])([A-D](?:\s*(?:[、,，和与及/&]|and|or)?\s*[A-D])*)(?![A-Za-z])"
_OPEN = r"[\s:：是为為\(\（【\[「『\"“'‘*]*"

_MARKERS = [
    # Chinese: 答案 / 正确答案 / 正确选项 / 最终答案 ... (是|为|：|应该是|应选) LETTER
    r"(?:最终|正确|最佳)?(?:答案|选项)(?:应该|应当|应|就|即)?(?:是|为|為|选|選|:|：)+" + _OPEN + _L,
    # 故选C / 所以选B / 应选 B / 选 B。 / 选择B / 选择答案B
    r"(?:故|因此|所以|应|應|我)?(?:选择|選擇|选|選)(?:项|項|答案)?" + _OPEN + _L,
    # 选项B正确 / B项正确 / B选项是正确的
    r"(?:选项|選項)\s*" + _L + r"\s*(?:是)?(?:正确|對|对)",
    _L + r"\s*(?:项|项是|选项)(?:是)?(?:正确|对)",
    # English
    r"(?i:answer|option|choice)\s*(?i:is|should be|would be|:)?\s*(?i:option|choice)?" + _OPEN + _L,
    r"(?i:choose|select|pick|go with)\s*(?i:option|choice)?" + _OPEN + _L,
    r"(?i:option|choice)\s*" + _L + r"\s*(?i:is correct|is right)",
]
_MARKER_RES = [re.compile(p) for p in _MARKERS]

_WHOLE = re.compile(r"^[\s\(\（【\[「\"“'*]*([A-D])[\s\)\）】\]」\"”'*.。．:：、,，!！]*$")
_LEADING = re.compile(r"^[\s\(\（【\[*]*([A-D])\s*[\)\）】\]]?\s*[.。．:：、,，)\s]")
_LONE = re.compile(r"(?<![A-Za-z])([A-D])(?![A-Za-z])")


def _is_article(text: str, i: int) -> bool:
    """The English article "A" ("A cat ...") is not an answer."""
    return text[i] == "A" and text[i + 1:i + 2] == " " and text[i + 2:i + 3].islower()


def _letters_of(group: str) -> set[str]:
    return set(re.findall(r"[A-D]", group))


def _from_markers(text: str) -> str | None | bool:
    """The letter after the last answer marker; None if that marker names several letters;
    False if there is no marker at all."""
    best: tuple[int, str] | None = None
    for rx in _MARKER_RES:
        for m in rx.finditer(text):
            if best is None or m.start() >= best[0]:
                best = (m.start(), m.group(1))
    if best is None:
        return False
    letters = _letters_of(best[1])
    return letters.pop() if len(letters) == 1 else None


def extract_choice(text: str | None, choices: list[str] | None = None) -> str | None:
    """The chosen letter A-D in a model's reply, or None when it cannot be read unambiguously.

    `choices`: the four option texts, enabling rule 4 (the reply quotes one option's text)."""
    if not text:
        return None
    text = text.translate(_FULLWIDTH)
    marked = _from_markers(text)
    if marked is not False:
        return marked
    stripped = text.strip()
    m = _WHOLE.match(stripped)
    if m:
        return m.group(1)
    m = _LEADING.match(stripped + " ")
    if m and not _is_article(stripped, m.start(1)):
        return m.group(1)
    if choices:
        hits = [(len(c.strip()), LETTERS[i]) for i, c in enumerate(choices[:4])
                if c and c.strip() and c.strip() in stripped]
        if hits:
            hits.sort(reverse=True)
            # Ambiguous only if two options of the same (longest) length both appear.
            if len(hits) == 1 or hits[0][0] > hits[1][0]:
                return hits[0][1]
            return None
    lone = {m.group(1) for m in _LONE.finditer(stripped) if not _is_article(stripped, m.start(1))}
    return lone.pop() if len(lone) == 1 else None
