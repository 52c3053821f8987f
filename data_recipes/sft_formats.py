"""SFT row formats -> chat messages, and chat messages -> token ids with an assistant-only loss mask.

Every normaliser turns one row into `[{"role", "content"}, ...]` with an optional leading system
turn followed by user/assistant pairs, or reports why it cannot (`(kind, detail)`): missing_fields,
empty, role_order, bad_value. Used by data_recipes/sft_mix.py.

The MCQ prompts here are ours and deliberately differ from every evaluation prompt in
eval/protocols.py (Steel-LLM trained on its eval prompt text); tests/unit/test_sft_formats.py checks it.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from core.config import ConfigError
from core.errors import UserError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_response", "mcq", "identity")
LETTERS = "ABCD"
_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                 "bot": "assistant", "chatgpt": "assistant", "system": "system"}

# Our MCQ wording (plain and chain-of-thought). Not the eval wording: no "以下是关于…的单项选择题",
# no "答案：" answer prefix, options as "(A) …" rather than "A. …".
MCQ_PLAIN_PROMPT = "请阅读这道选择题，从给出的选项里挑出正确的那一个。\n\n题目：{question}\n{options}"
MCQ_PLAIN_ANSWER = "正确答案是{letter}。"
MCQ_COT_PROMPT = "请阅读这道选择题，先一步步分析，再说出哪一项正确。\n\n题目：{question}\n{options}"
MCQ_COT_ANSWER = "{explanation}\n因此，正确答案是{letter}。"
_CONCLUSION_RE = re.compile(r"(故选|故答案为|所以选|所以答案[为是]|答案[为是])[:：]?\s*[A-E]+\s*[。.．]?\s*$")


class TemplateError(UserError, ValueError):
    """A tokenizer whose chat template cannot mark the assistant tokens (no loss mask possible)."""
    kind = "data"


class RowError(Exception):
    """A row that cannot be used; counted and reported per source by the caller, not raised further."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def _get(row: dict, key: str, fields: dict, required: bool = True):
    k = fields.get(key, key)
    v = row.get(k) if isinstance(row, dict) else None
    if required and (v is None or (isinstance(v, str) and not v.strip())):
        raise RowError("missing_fields", f"no '{k}'" + (f" (mapped from '{key}')" if k != key else "")
                       + f"; row keys: {sorted(row)[:8] if isinstance(row, dict) else type(row).__name__}")
    return v


def _text(v, what: str) -> str:
    if not isinstance(v, str):
        raise RowError("bad_value", f"{what} is {type(v).__name__}, expected a string")
    return v.strip()


def alpaca(row: dict, fields: dict) -> list[dict]:
    instruction = _text(_get(row, "instruction", fields), "instruction")
    inp = _get(row, "input", fields, required=False) or ""
    user = instruction + ("\n" + _text(inp, "input") if str(inp).strip() else "")
    msgs = []
    system = _get(row, "system", fields, required=False)
    if system:
        msgs.append({"role": "system", "content": _text(system, "system")})
    for turn in _get(row, "history", fields, required=False) or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise RowError("bad_value", "history entries must be [user, assistant] pairs")
        msgs += [{"role": "user", "content": _text(turn[0], "history")},
                 {"role": "assistant", "content": _text(turn[1], "history")}]
    return msgs + [{"role": "user", "content": user},
                   {"role": "assistant", "content": _text(_get(row, "output", fields), "output")}]


def sharegpt(row: dict, fields: dict) -> list[dict]:
    conv = _get(row, "conversations", fields)
    if not isinstance(conv, list):
        raise RowError("bad_value", "conversations is not a list")
    out = []
    for t in conv:
        role = _ROLE_ALIASES.get(str(t.get("from", "")).lower()) if isinstance(t, dict) else None
        if role is None:
            raise RowError("role_order", f"unknown speaker {t.get('from') if isinstance(t, dict) else t!r}")
        out.append({"role": role, "content": _text(t.get("value"), "value")})
    system = _get(row, "system", fields, required=False)
    return ([{"role": "system", "content": _text(system, "system")}] if system else []) + out


def messages(row: dict, fields: dict) -> list[dict]:
    msgs = _get(row, "messages", fields)
    if not isinstance(msgs, list):
        raise RowError("bad_value", "messages is not a list")
    out = []
    for m in msgs:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise RowError("missing_fields", "a message without role/content")
        role = _ROLE_ALIASES.get(str(m["role"]).lower())
        if role is None:
            raise RowError("role_order", f"unknown role {m['role']!r}")
        out.append({"role": role, "content": _text(m["content"], "content")})
    return out


def prompt_response(row: dict, fields: dict) -> list[dict]:
    return [{"role": "user", "content": _text(_get(row, "prompt", fields), "prompt")},
            {"role": "assistant", "content": _text(_get(row, "response", fields), "response")}]


def mcq(row: dict, fields: dict, style: str) -> list[dict]:
    question = _text(_get(row, "question", fields), "question")
    options = [_text(_get(row, c, fields), c) for c in LETTERS]
    extra = _get(row, "E", fields, required=False)
    if extra and str(extra).strip():
        raise RowError("filtered:not_four_options", "a fifth option")
    answer = str(_get(row, "answer", fields)).strip().upper().rstrip("。.")
    if len(answer) != 1 or answer not in LETTERS:
        raise RowError("filtered:not_single_choice", f"answer {answer!r}")
    opts = "\n".join(f"({l}) {o}" for l, o in zip(LETTERS, options))
    if style == "plain":
        prompt, reply = MCQ_PLAIN_PROMPT, MCQ_PLAIN_ANSWER.format(letter=answer)
    elif style == "cot":
        expl = _get(row, "explanation", fields, required=False) or ""
        expl = _CONCLUSION_RE.sub("", _text(expl, "explanation")).strip()
        if len(expl) < 10:
            raise RowError("filtered:no_explanation", "cot needs an explanation of >= 10 characters")
        prompt, reply = MCQ_COT_PROMPT, MCQ_COT_ANSWER.format(explanation=expl, letter=answer)
    else:
        raise ConfigError(f"mcq_style must be plain or cot, got {style!r}")
    return [{"role": "user", "content": prompt.format(question=question, options=opts)},
            {"role": "assistant", "content": reply}]


def check_conversation(msgs: list[dict]) -> None:
    """[system] user assistant (user assistant)*, every content non-empty."""
    if not msgs or any(not m["content"] for m in msgs):
        raise RowError("empty", "empty conversation or an empty turn")
    body = msgs[1:] if msgs[0]["role"] == "system" else msgs
    want = ["user", "assistant"] * (len(body) // 2 + 1)
    roles = [m["role"] for m in body]
    if not body or roles != want[:len(roles)] or roles[-1] != "assistant":
        raise RowError("role_order", "roles " + "/".join(m["role"] for m in msgs)
                       + " (expected [system] user/assistant pairs ending with assistant)")


def normalise_rows(rows: Iterable[tuple[str, dict]], src) -> Iterator[tuple[str, list | None, tuple | None]]:
    """(where, messages, None) or (where, None, (kind, detail)); filtered:* kinds are not errors."""
    for where, row in rows:
        try:
            if not isinstance(row, dict):
                raise RowError("bad_value", f"row is {type(row).__name__}, expected an object")
            if src.format == "mcq":
                msgs = mcq(row, src.fields, src.mcq_style)
            else:
                msgs = {"alpaca": alpaca, "sharegpt": sharegpt, "messages": messages,
                        "prompt_response": prompt_response}[src.format](row, src.fields)
            check_conversation(msgs)
        except RowError as e:
            yield where, None, (e.kind, e.detail)
            continue
        yield where, msgs, None


# ---- rendering ---------------------------------------------------------------------------------------
def check_template(tokenizer) -> None:
    tpl = getattr(tokenizer, "chat_template", None) or ""
    if "{% generation %}" not in tpl.replace("{%-", "{%").replace("-%}", "%}"):
        raise TemplateError("the tokenizer's chat template has no {% generation %} tags, so assistant tokens "
                         "cannot be masked; use the template of data_recipes/tokenizer/")


def render(tokenizer, msgs: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) through the chat template; labels are -100 outside assistant turns (the
    {% generation %} spans: assistant content and its <|im_end|>)."""
    out = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    return ids, [t if m else -100 for t, m in zip(ids, mask)]


def truncate(ids: list[int], labels: list[int], max_len: int) -> tuple[list[int], list[int]] | None:
    """Keep the first `max_len` tokens; None when no assistant token survives (nothing to learn)."""
    ids, labels = ids[:max_len], labels[:max_len]
    return (ids, labels) if any(l != -100 for l in labels) else None
