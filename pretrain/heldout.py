"""The held-out check of a pretraining run: per-document loss on text it never trained on, against
the same documents with their tokens shuffled (same tokens, order destroyed: the loss of a model
that learnt only which tokens are frequent). Learnt structure shows as held-out loss well below the
shuffled line; the per-document difference gets a paired bootstrap 95% CI (core.stats).

Configured in the recipe's `heldout:` section (files of held-out documents, .jsonl with a "text"
field or .txt with one document per line); pretrain/train.py runs it on the exported model/ and
writes `<run>/heldout.json` and a summary into manifest.json.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.errors import UserError
from core.runs import atomic_write_json
from core.stats import paired_bootstrap


class HeldoutError(UserError, ValueError):
    """A held-out file that is missing or has no documents; the message names the file (and line)."""
    kind = "data"


@dataclass
class HeldoutOptions:
    """Held-out documents scored at the end of the run (empty `files` = no check)."""
    files: list[str] = field(default_factory=list)  # .jsonl ({"text": ...}) or .txt (one document per line)
    max_docs: int = 400                   # score at most this many documents (the first ones)
    seed: int = 0                         # the token shuffle


def read_docs(files: list[str], max_docs: int) -> list[str]:
    docs: list[str] = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise HeldoutError(f"held-out file not found: {path}")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    text = json.loads(line).get("text")
                except (json.JSONDecodeError, AttributeError):
                    raise HeldoutError(f"{path}:{i}: not a JSON object with a 'text' field") from None
                if not isinstance(text, str):
                    raise HeldoutError(f"{path}:{i}: 'text' is not a string")
            else:
                text = line
            docs.append(text)
    if not docs:
        raise HeldoutError(f"no held-out documents in {', '.join(files)}")
    return docs[:max_docs]


def doc_losses(model, docs_ids: list[list[int]]) -> list[float]:
    """Mean next-token loss (nats) of each document, one forward per document."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for ids in docs_ids:
            x = torch.tensor([ids], device=device)
            out.append(float(model(input_ids=x, labels=x).loss))
    return out


def heldout_check(model, tokenizer, opts: HeldoutOptions, max_len: int, out_path: Path) -> dict:
    """Score the held-out documents and their token-shuffled copies; write out_path; return the summary."""
    rng = random.Random(opts.seed)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    docs_ids, shuffled = [], []
    for text in read_docs(opts.files, opts.max_docs):
        body = tokenizer.encode(text, add_special_tokens=False)[:max_len - 1]
        if len(body) < 2:
            continue
        mixed = body[:]
        rng.shuffle(mixed)
        docs_ids.append([eot] + body)   # documents start after <|endoftext|> in the shards too
        shuffled.append([eot] + mixed)
    model.eval()
    real, rand = doc_losses(model, docs_ids), doc_losses(model, shuffled)
    n_tok = sum(len(d) - 1 for d in docs_ids)
    loss = sum(l * (len(d) - 1) for l, d in zip(real, docs_ids)) / n_tok
    loss_shuffled = sum(l * (len(d) - 1) for l, d in zip(rand, shuffled)) / n_tok
    summary = {"n_docs": len(docs_ids), "n_tokens": n_tok, "loss": loss, "loss_shuffled": loss_shuffled,
               "per_doc_diff": paired_bootstrap(rand, real, 10000, opts.seed),
               "files": [str(f) for f in opts.files]}
    atomic_write_json(out_path, {**summary, "doc_loss": real, "doc_loss_shuffled": rand})
    bs = summary["per_doc_diff"]
    print(f"held-out: loss {loss:.4f} on {len(docs_ids)} documents ({n_tok:,} tokens) vs {loss_shuffled:.4f} "
          f"token-shuffled; per-document difference {bs['diff']:+.4f}, 95% CI [{bs['ci95'][0]:+.4f}, "
          f"{bs['ci95'][1]:+.4f}]")
    return summary
