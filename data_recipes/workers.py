"""The per-batch work of a data build, run in worker processes (or inline with num_workers=1).

- `clean_batch`: decode/parse a batch, apply the operator chain, and compute the exact hash and
  MinHash band keys of every surviving document (the expensive, parallel part of dedupe). The
  keep/drop decision that needs global state is made afterwards, in order, by the main process.
- `tokenize_chunk`: tokenise one byte range of the cleaned corpus into uint16/uint32 ids with the
  separator after each document.

`ordered_map` keeps at most a few batches in flight (Pool.imap would read the whole corpus into
its task queue) and returns results in input order, so any worker count gives identical output.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections import Counter, deque
from typing import Callable, Iterable, Iterator

import numpy as np

from data_recipes.clean import Chain, load_plugins
from data_recipes.dedupe import MinHasher, exact_key
from data_recipes.sources import Batch, get_field

KEEP, DROP, ERROR = 0, 1, 2
SNIPPET_CHARS = 200

_state: dict = {}


def ordered_map(fn: Callable, items: Iterable, num_workers: int, initializer: Callable, initargs: tuple,
                window: int = 0) -> Iterator:
    """fn over items in order, in `num_workers` processes (inline when 1) with bounded read-ahead."""
    if num_workers <= 1:
        initializer(*initargs)
        for it in items:
            yield fn(it)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(num_workers, initializer, initargs) as pool:
        pending: deque = deque()
        window = window or 2 * num_workers + 2
        for it in items:
            pending.append(pool.apply_async(fn, (it,)))
            if len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---- cleaning ----------------------------------------------------------------------------------------
def init_clean(spec: dict) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    load_plugins(spec["plugins"])
    _state["chain"] = Chain(spec["operators"])
    _state["inputs"] = spec["inputs"]
    _state["exact"] = spec["exact"]
    _state["minhash"] = MinHasher(**spec["near"]) if spec["near"] else None


def _records(batch: Batch, path: str, fmt: str, field: str):
    """(location, text or None, error kind, error message) for each record of a batch."""
    if batch.kind == "lines":
        line, offset = batch.first_line, batch.first_offset
        for raw in batch.data.split(b"\n"):
            loc = f"{path}:{line}"
            here = offset
            line += 1
            offset += len(raw) + 1
            if here == 0 and raw.startswith(b"\xef\xbb\xbf"):      # a UTF-8 byte order mark
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                s = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield loc, None, "utf8", f"{loc}: invalid UTF-8 at byte offset {here + e.start} ({e.reason})"
                continue
            if fmt == "txt":
                yield loc, s, None, None
                continue
            try:
                rec = json.loads(s)
            except json.JSONDecodeError as e:
                yield loc, None, "json", f"{loc}: malformed JSON: {e.msg} (column {e.colno})"
                continue
            yield (loc, *_field(rec, field, loc))
        return
    for where, value in batch.records:
        loc = f"{path} {where}" if where != "file" else path
        if isinstance(value, bytes):
            try:
                yield loc, value.decode("utf-8"), None, None
            except UnicodeDecodeError as e:
                yield loc, None, "utf8", f"{loc}: invalid UTF-8 at byte offset {e.start} ({e.reason})"
        elif isinstance(value, str):
            yield loc, value, None, None
        else:
            yield (loc, *_field(value, field, loc))


def _field(rec, field: str, loc: str):
    try:
        text = get_field(rec, field)
    except KeyError as e:
        return None, "missing_field", f"{loc}: {e.args[0]}"
    if not isinstance(text, str):
        return None, "wrong_type", f"{loc}: field '{field}' is {type(text).__name__}, expected a string"
    return text, None, None


def clean_batch(batch: Batch):
    """(input index, [result tuples], stats) for one batch."""
    path, fmt, field = _state["inputs"][batch.input_index]
    chain, minhash, exact = _state["chain"], _state["minhash"], _state["exact"]
    results, modified = [], Counter()
    chars_in = 0
    for loc, text, err, msg in _records(batch, path, fmt, field):
        if text is None:
            results.append((ERROR, loc, err, msg, ""))
            continue
        chars_in += len(text)
        out, op, reason, changed = chain(text)
        modified.update(changed)
        if op is None and not out:
            op, reason = "empty", "empty after cleaning"
        if op is not None:
            results.append((DROP, loc, op, reason, out[:SNIPPET_CHARS]))
            continue
        line = json.dumps({"text": out}, ensure_ascii=False).encode("utf-8") + b"\n"
        results.append((KEEP, loc, line, exact_key(out) if exact else None,
                        minhash.band_keys(out) if minhash is not None else None, len(out)))
    return batch.input_index, results, {"chars_in": chars_in, "modified": dict(modified)}


# ---- tokenising --------------------------------------------------------------------------------------
def init_tokenize(tokenizer_json: str, dtype: str, sep_id: int) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_json)
    # A document that contains the literal text "<|im_end|>" must not become the special token.
    tok.encode_special_tokens = True
    _state.update(tokenizer=tok, dtype=np.dtype(dtype), sep=sep_id)


def tokenize_chunk(chunk: tuple[str, int, int]):
    """(token ids with a separator after each document, tokens per document, bytes read)."""
    path, start, end = chunk
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    texts = [json.loads(line)["text"] for line in data.split(b"\n") if line]
    encs = _state["tokenizer"].encode_batch(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) + 1 for e in encs), dtype=np.int64, count=len(encs))
    tokens = np.empty(int(lengths.sum()), dtype=_state["dtype"])
    pos = 0
    for e, n in zip(encs, lengths.tolist()):
        tokens[pos:pos + n - 1] = e.ids
        tokens[pos + n - 1] = _state["sep"]
        pos += n
    return tokens, lengths, len(data)
