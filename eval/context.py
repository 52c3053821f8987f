"""The context policy: every prompt fits the model's context before any backend sees it, and every
result says how many did not.

The context length `max_len` (tokens) is the model config's `max_position_embeddings` (or the
config's other name for it), or the tokenizer's `model_max_length` where that is smaller; the eval
key `max_len=` overrides both. A prompt fits when its tokens, counted as the backends send them
([bos] + text for the logit protocols, the text alone for generation), plus its longest scored
continuation (one letter token; `max_new_tokens` for generation) are at most `max_len`.

A prompt that does not fit:
1. loses in-context examples, the last one first, one at a time, until it fits: OpenCompass's
   policy (its inferencers drop the last in-context example while the prompt is over `max_seq_len`);
2. still too long at zero shots, its left end is cut to the longest right end that fits, so the
   question's end and the answer slot ("答案：", or the chat template's assistant turn) stay:
   lm-eval's policy (it keeps the last `max_length` tokens of the context).
Each over-long prompt counts once: in `shots_reduced` if dropping examples was enough, otherwise in
`left_truncated`. A prompt that fits is left exactly as built. The fitting happens in eval/run.py,
before any backend, so hf and vLLM score the same prompts.

    ctx = ContextFit.for_protocol(tokenizer, protocol, model_path, max_len=0, max_new_tokens=0)
    fitted = ctx.fit(lambda k: build_prompt(..., n_shots=k), protocol.shots)   # .prompt .shots .how
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.config import ConfigError
from eval.protocols import Prompt

# Config keys that hold the trained context length, in the order they are looked for.
LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "max_seq_len")
# A tokenizer without a limit reports transformers' VERY_LARGE_INTEGER (1e30): no limit at all.
NO_LIMIT = 10**9
OUTCOMES = ("fits", "shots_reduced", "left_truncated")


def model_config(model_path) -> dict:
    """The model's config as a dict: config.json of a folder, else transformers' config of a hub id."""
    p = Path(model_path)
    if p.is_dir():
        f = p / "config.json"
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    try:
        from transformers import AutoConfig

        from core.models import register_variants
        register_variants()
        return AutoConfig.from_pretrained(str(model_path)).to_dict()
    except (OSError, ValueError):
        return {}


def context_length(model_path, tokenizer, override: int = 0) -> tuple[int, str]:
    """(max_len in tokens, where it came from)."""
    if override > 0:
        return int(override), "max_len="
    cfg = model_config(model_path)
    found = [(cfg.get(k) or (cfg.get("text_config") or {}).get(k), k) for k in LENGTH_KEYS]
    found = [(int(v), k) for v, k in found if isinstance(v, int) and not isinstance(v, bool) and v > 0][:1]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < NO_LIMIT:
        found.append((tok_max, "model_max_length"))
    if not found:
        raise ConfigError(f"cannot tell the context length of {model_path}: its config has none of "
                          f"{', '.join(LENGTH_KEYS)} and its tokenizer no model_max_length; pass max_len=<tokens>")
    return min(found)


@dataclass(frozen=True)
class Fitted:
    prompt: Prompt
    tokens: int          # prompt tokens as the backend will count them (bos included where it is sent)
    shots: int           # in-context examples kept
    how: str             # fits | shots_reduced | left_truncated


class ContextFit:
    """Fits prompts to `max_len` tokens, keeping `reserve` tokens free for the scored continuation."""

    def __init__(self, tokenizer, max_len: int, reserve: int, bos: list[int], source: str = ""):
        self.tokenizer, self.max_len, self.reserve, self.bos, self.source = tokenizer, max_len, reserve, bos, source
        if max_len - reserve - len(bos) < 1:
            raise ConfigError(f"max_len {max_len} leaves no room for a prompt after the {reserve} token(s) "
                              f"reserved for the answer; raise max_len or lower max_new_tokens")

    @classmethod
    def for_protocol(cls, tokenizer, protocol, model_path, max_len: int = 0, max_new_tokens: int = 0) -> "ContextFit":
        from eval.backends.hf import bos_ids
        length, source = context_length(model_path, tokenizer, max_len)
        if protocol.scoring == "logits":          # one letter token is scored after [bos] + prompt
            return cls(tokenizer, length, 1, bos_ids(tokenizer), source)
        return cls(tokenizer, length, max_new_tokens or protocol.max_new_tokens, [], source)

    def count(self, text: str) -> int:
        return len(self.bos) + len(self.tokenizer.encode(text, add_special_tokens=False))

    def fits(self, n_tokens: int) -> bool:
        return n_tokens + self.reserve <= self.max_len

    def fit(self, build: Callable[[int], Prompt], shots: int) -> Fitted:
        """The prompt `build(shots)` fitted by the policy; `build(k)` makes the prompt with k examples."""
        prompt = build(shots)
        n = self.count(prompt.text)
        if self.fits(n):
            return Fitted(prompt, n, shots, "fits")
        for k in range(shots - 1, -1, -1):
            prompt = build(k)
            n = self.count(prompt.text)
            if self.fits(n):
                return Fitted(prompt, n, k, "shots_reduced")
        text = self.cut_left(prompt.text)
        return Fitted(Prompt("", text), self.count(text), 0, "left_truncated")

    def cut_left(self, text: str) -> str:
        """The longest right end of `text` that fits (bisected over character offsets: the backends
        tokenize text, so the cut is made in text and counted with the same tokenizer)."""
        lo, hi = 0, len(text)          # text[lo:] does not fit; text[hi:] == "" fits (checked in __init__)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.fits(self.count(text[mid:])):
                hi = mid
            else:
                lo = mid
        return text[hi:]


def context_record(ctx: ContextFit, subjects: list[str], fitted: list[Fitted]) -> dict:
    """The result's `context` field: totals and the same counts per subject (core/results.py checks it)."""
    def counts(items) -> dict:
        return {"prompts": len(items), "shots_reduced": sum(f.how == "shots_reduced" for f in items),
                "left_truncated": sum(f.how == "left_truncated" for f in items)}
    per: dict[str, list] = {}
    for s, f in zip(subjects, fitted):
        per.setdefault(s, []).append(f)
    return {"max_len": ctx.max_len, "max_len_from": ctx.source, "reserved": ctx.reserve, **counts(fitted),
            "per_subject": {s: counts(items) for s, items in per.items()}}


def context_line(record: dict) -> str:
    return (f"context: max_len {record['max_len']} ({record['max_len_from']}), {record['reserved']} reserved | "
            f"{record['prompts']} prompts | {record['shots_reduced']} shots reduced | "
            f"{record['left_truncated']} left-truncated")


def context_warning(record: dict) -> str | None:
    """One warning line when any prompt did not fit, else None."""
    k, m = record["shots_reduced"], record["left_truncated"]
    if not k and not m:
        return None
    return (f"warning: {k + m} of {record['prompts']} prompts did not fit max_len {record['max_len']}: "
            f"{k} lost in-context examples (OpenCompass's policy), {m} were cut at the left end even at "
            f"zero shots (lm-eval's policy); the result's 'context' field has the counts per subject")
