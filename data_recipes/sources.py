"""Where documents come from: local files (jsonl/json/parquet/txt/csv, globs under `data_root`) and
hub datasets streamed with `datasets.load_dataset(..., streaming=True)`.

A source in a recipe:

    sources:
      - {name: skypile, hub: Skywork/SkyPile-150B, text_field: text, path: "SkyPile-150B/data/*.jsonl"}

streams from the hub unless `data_root` is set, in which case `path` (a glob relative to
`data_root`) is read instead: the same recipe runs on a local copy with `data_root=/mnt/corpora`.

The main process reads inputs in order and hands *batches* to the workers: raw byte blocks of
JSON Lines / text files (cut at line ends; the workers decode and parse them, so a bad line is
reported as `file:line`), or lists of already-read records for the other formats. Nothing holds a
whole file except a plain `.json` array file, which the json module can only read whole (use JSON
Lines for large data).
"""
from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from core.errors import UserError
from core.runs import REPO_ROOT

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
           ".txt": "txt", ".csv": "csv"}


class DataError(UserError, RuntimeError):
    """A structural problem with the inputs (missing path, wrong column, unreadable file)."""
    kind = "data"


@dataclass
class SourceOptions:
    """One entry of `sources:` in a data recipe."""
    name: str = ""            # label in reports (default: path or hub id)
    path: str = ""            # local file, folder or glob ("a/*.jsonl,b/**/*.parquet"), relative to data_root
    hub: str = ""             # hub dataset id, streamed when data_root is empty (or path is unset)
    hub_config: str = ""      # hub dataset config name
    data_dir: str = ""        # hub data_dir (e.g. a StarCoder language folder)
    data_files: str = ""      # hub data_files pattern (a slice of a big dataset, or local files with hub: json)
    split: str = "train"      # hub split
    revision: str = ""        # hub revision (commit) for reproducibility
    format: str = "auto"      # jsonl | json | parquet | txt | csv | auto (by file extension)
    text_field: str = "text"  # field with the document text; dotted for nested ("meta.content")
    txt_doc: str = "file"     # txt files: one document per "file" or per "line"
    max_docs: int = 0         # read only the first N records (lines) of each file / hub stream (0 = all)


@dataclass
class Input:
    """A resolved input: one local file or one hub stream."""
    index: int
    source: str
    kind: str                 # "file" | "hub"
    path: str                 # file path or hub id
    format: str
    text_field: str
    txt_doc: str = "file"
    size_bytes: int = 0
    identity: str = ""        # file identity (dedupe.file_identity) or the hub spec
    spec: dict | None = None  # hub arguments


def resolve_root(data_root: str) -> Path | None:
    """data_root relative to the working directory, else to the repository root."""
    if not data_root:
        return None
    p = Path(os.path.expanduser(os.path.expandvars(data_root)))
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def uses_local(src: SourceOptions, data_root: str) -> bool:
    return bool(src.path) and (bool(data_root) or not src.hub)


def source_name(src: SourceOptions) -> str:
    return src.name or src.path or src.hub


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in FORMATS.values():
            raise DataError(f"{path}: unknown format '{fmt}' (known: {sorted(set(FORMATS.values()))})")
        return fmt
    suffixes = [s for s in path.suffixes if s != ".gz"]
    if suffixes and suffixes[-1] in FORMATS:
        return FORMATS[suffixes[-1]]
    raise DataError(f"{path}: cannot tell the format from the extension; set format: in the source "
                    f"(one of jsonl, json, parquet, txt, csv)")


def local_files(src: SourceOptions, data_root: str) -> list[Path]:
    """Every file a local source names, sorted per pattern; a pattern matching nothing is an error."""
    root = resolve_root(data_root)
    files: list[Path] = []
    for pattern in [p.strip() for p in src.path.split(",") if p.strip()]:
        full = Path(pattern) if Path(pattern).is_absolute() or root is None else root / pattern
        if full.is_dir():
            matched = sorted(p for p in full.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif glob.has_magic(str(full)):
            matched = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
        else:
            matched = [full] if full.is_file() else []
        if not matched:
            where = f" (data_root={data_root!r} -> {root})" if root else ""
            raise DataError(f"source '{source_name(src)}': path not found: {full}{where}")
        files.extend(matched)
    return files


def resolve_inputs(sources: list[SourceOptions], data_root: str) -> list[Input]:
    if not sources:
        raise DataError("the recipe lists no sources")
    out: list[Input] = []
    for src in sources:
        name = source_name(src)
        if uses_local(src, data_root):
            for f in local_files(src, data_root):
                out.append(Input(len(out), name, "file", str(f), _detect_format(f, src.format), src.text_field,
                                 src.txt_doc, size_bytes=f.stat().st_size))
        elif src.hub:
            spec = {"path": src.hub, "name": src.hub_config or None, "data_dir": src.data_dir or None,
                    "data_files": src.data_files or None, "split": src.split, "revision": src.revision or None}
            out.append(Input(len(out), name, "hub", src.hub, "records", src.text_field, spec=spec,
                             identity="hub:" + json.dumps(spec, sort_keys=True)))
        else:
            raise DataError(f"source '{name}': set `path` (with data_root for local copies) or `hub`")
    return out


# ---- batches ----------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Work for one worker call. kind "lines": raw bytes of whole lines starting at (line, offset);
    kind "records": [(location, record or text)]."""
    input_index: int
    kind: str
    first_line: int = 0
    first_offset: int = 0
    data: bytes = b""
    records: list | None = None


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def line_chunks(inp: Input, read, line: int = 1, offset: int = 0) -> Iterator[Batch]:
    """Batches of whole lines from the blocks `read()` returns (b"" at the end), numbered from
    (line, offset); a line longer than a block is carried into the next. Also serves the
    scale-out's byte ranges (data_recipes/scaleout_plan.py)."""
    carry = b""
    while True:
        block = read()
        data = carry + block
        if not block:
            if data:
                yield Batch(inp.index, "lines", line, offset, data)
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:                 # one line longer than a block: keep reading
            carry = data
            continue
        chunk, carry = data[:cut], data[cut:]
        yield Batch(inp.index, "lines", line, offset, chunk)
        line += chunk.count(b"\n")
        offset += len(chunk)


def _line_batches(inp: Input, batch_bytes: int, max_lines: int) -> Iterator[Batch]:
    with _open_binary(inp.path) as f:
        for b in line_chunks(inp, lambda: f.read(batch_bytes)):
            n = b.data.count(b"\n")
            if max_lines and b.first_line - 1 + n >= max_lines:
                end = -1
                for _ in range(max_lines - (b.first_line - 1)):
                    end = b.data.index(b"\n", end + 1)
                yield Batch(inp.index, "lines", b.first_line, b.first_offset, b.data[:end + 1])
                return
            yield b


def _record_batches(inp: Input, rows: Iterator[tuple[str, object]], batch_docs: int, max_docs: int) -> Iterator[Batch]:
    buf = []
    for i, item in enumerate(rows):
        if max_docs and i >= max_docs:
            break
        buf.append(item)
        if len(buf) >= batch_docs:
            yield Batch(inp.index, "records", records=buf)
            buf = []
    if buf:
        yield Batch(inp.index, "records", records=buf)


def _json_rows(inp: Input) -> Iterator[tuple[str, object]]:
    with _open_binary(inp.path) as f:
        raw = f.read()
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{inp.path}: invalid UTF-8 at byte offset {e.start} ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{inp.path}:{e.lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
    if isinstance(obj, dict):   # {"data": [...]} style: the first list value
        lists = [v for v in obj.values() if isinstance(v, list)]
        if not lists:
            raise DataError(f"{inp.path}: a .json input must be a list of records (or an object holding one)")
        obj = lists[0]
    if not isinstance(obj, list):
        raise DataError(f"{inp.path}: a .json input must be a list of records, got {type(obj).__name__}")
    for i, rec in enumerate(obj):
        yield f"record {i}", rec


def read_utf8(path: str | Path, error: type[Exception] = DataError) -> str:
    """A whole text file; invalid UTF-8 raises `error` naming file:line and the byte offset."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: invalid UTF-8 at byte offset {e.start} ({e.reason})") from None


def json_array_rows(path: str | Path, text: str, error: type[Exception] = DataError) -> Iterator[tuple[str, object]]:
    """(where, element) for each element of a file holding one top-level JSON array, decoded one
    element at a time. `where` is `file:line: row N`, the line the element starts on and its index
    (from 0, as in `jq '.[N]'`), so a row is found even when the whole array is on one line. A
    malformed file raises `error` with file:line:column."""
    dec, NL = json.JSONDecoder(), "\n"
    pos = len(text) - len(text.lstrip())
    if text[pos:pos + 1] != "[":
        raise error(f"{path}:{text.count(NL, 0, pos) + 1}: expected a JSON array of records (or use .jsonl)")
    pos, line, counted, row = pos + 1, 1, 0, 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise error(f"{path}:{text.count(NL) + 1}: unterminated JSON array (no closing ']')")
        if text[pos] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{e.lineno}:{e.colno}: row {row}: invalid JSON: {e.msg}") from None
        yield f"{path}:{line}: row {row}", obj
        row += 1


def _csv_rows(inp: Input) -> Iterator[tuple[str, object]]:
    with _open_binary(inp.path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8", newline="")
        reader = csv.DictReader(f)
        try:
            if reader.fieldnames is None:
                return
            if inp.text_field.split(".")[0] not in reader.fieldnames:
                raise DataError(f"{inp.path}: no column '{inp.text_field}' (columns: {', '.join(reader.fieldnames)}); "
                                f"set text_field: in the source")
            for row in reader:
                yield f"line {reader.line_num}", row
        except UnicodeDecodeError as e:
            raise DataError(f"{inp.path}: invalid UTF-8 near line {reader.line_num + 1} ({e.reason})") from None


def _parquet_rows(inp: Input) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(inp.path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{inp.path}: not a readable parquet file ({e})") from None
    column = inp.text_field.split(".")[0]
    names = pf.schema_arrow.names
    if column not in names:
        raise DataError(f"{inp.path}: no column '{column}' (columns: {', '.join(names)}); set text_field: in the source")
    i = 0
    for rb in pf.iter_batches(batch_size=1024, columns=[column]):
        for value in rb.column(0).to_pylist():
            yield f"row {i}", {column: value}
            i += 1


def _txt_file_rows(inp: Input) -> Iterator[tuple[str, object]]:
    with _open_binary(inp.path) as f:
        raw = f.read()
    yield "file", raw      # decoded by the worker, so bad bytes are quarantined like any record


def _hub_rows(inp: Input) -> Iterator[tuple[str, object]]:
    import datasets
    spec = {k: v for k, v in inp.spec.items() if v is not None}
    try:
        ds = datasets.load_dataset(streaming=True, **spec)
    except Exception as e:  # offline, gated, unknown id: say which source and how to use a local copy
        raise DataError(f"hub source '{inp.source}' ({inp.path}) cannot be streamed: {type(e).__name__}: {e}. "
                        f"For a local copy set data_root=<folder>; the source's `path` is read under it") from None
    for i, rec in enumerate(ds):
        yield f"row {i}", rec


def batches(inp: Input, batch_bytes: int = 1 << 20, batch_docs: int = 256, max_docs: int = 0) -> Iterator[Batch]:
    """The batches of one input, in order."""
    if inp.kind == "hub":
        yield from _record_batches(inp, _hub_rows(inp), batch_docs, max_docs)
    elif inp.format == "jsonl" or (inp.format == "txt" and inp.txt_doc == "line"):
        yield from _line_batches(inp, batch_bytes, max_docs)
    elif inp.format == "txt":
        yield from _record_batches(inp, _txt_file_rows(inp), 1, max_docs)
    elif inp.format == "json":
        yield from _record_batches(inp, _json_rows(inp), batch_docs, max_docs)
    elif inp.format == "csv":
        yield from _record_batches(inp, _csv_rows(inp), batch_docs, max_docs)
    elif inp.format == "parquet":
        yield from _record_batches(inp, _parquet_rows(inp), batch_docs, max_docs)
    else:
        raise DataError(f"{inp.path}: unsupported format {inp.format}")


def get_field(record, dotted: str):
    """record[a][b] for 'a.b'; KeyError naming the available keys when absent."""
    cur = record
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            keys = ", ".join(map(str, cur.keys())) if isinstance(cur, dict) else type(cur).__name__
            raise KeyError(f"no field '{dotted}' (fields: {keys})")
        cur = cur[part]
    return cur
