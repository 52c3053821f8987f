"""How a scale-out build cuts its inputs into tasks, and how a task reads its share.

The inputs, in the order `make data` reads them, are one stream of bytes. `plan_tasks` cuts that
stream into `tasks` contiguous parts of about equal size, so task order is document order:

- a JSON Lines / one-document-per-line text file is cut inside, at the first line end after the
  cut point (a seek and one readline, no scan), so a one-file corpus still feeds every task;
- a parquet file is cut between row groups (their sizes come from the footer);
- a gzip, `.json`, `.csv` or one-document-per-file text input, or any file of a source with
  `max_docs` (its "first N lines" needs the line count), goes whole to the task where it starts.

A byte range does not know its first line number: the scan stage counts the line ends of every
range (fast, ~1 GB/s) and `number_lines` turns the counts into first lines, so quarantine
locations read `file:line` exactly as in `make data`. `unit_batches` then yields the same
`sources.Batch`es the one-machine build makes, for one unit only; `workers.clean_batch` does the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from data_recipes.sources import Batch, DataError, Input, batches, line_chunks

LINE_FORMATS = ("jsonl",)


@dataclass
class Unit:
    """One piece of one input: whole, a byte range of lines [start, end), or row groups [start, end)."""
    input_index: int
    kind: str                 # "whole" | "lines" | "rows"
    start: int = 0
    end: int = 0
    first: int = 0            # lines: number of the first line (set by `number_lines`); rows: index of the first row
    weight: int = 0           # bytes, for balancing


def _line_based(inp: Input) -> bool:
    return inp.format in LINE_FORMATS or (inp.format == "txt" and inp.txt_doc == "line")


def splittable(inp: Input, max_docs: int) -> str | None:
    """"lines", "rows" or None (read whole) for one input."""
    if inp.kind != "file" or max_docs or inp.path.endswith(".gz"):
        return None
    if _line_based(inp):
        return "lines"
    return "rows" if inp.format == "parquet" else None


def cut_after_newline(f, pos: int, size: int) -> int:
    """The offset just after the first line end at or after byte `pos - 1` (a line boundary >= pos)."""
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    f.seek(pos - 1)
    f.readline()
    return min(f.tell(), size)


def _row_groups(inp: Input) -> list[tuple[int, int]]:
    """(rows, bytes) of each row group of a parquet file."""
    import pyarrow.parquet as pq
    try:
        meta = pq.ParquetFile(inp.path).metadata
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{inp.path}: not a readable parquet file ({e})") from None
    return [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]


def _pieces(inp: Input, how: str | None, cuts: list[int]) -> list[tuple[int, Unit]]:
    """(byte position inside the input, unit) for each piece of one input, cut near the positions `cuts`."""
    if how == "lines":
        bounds = []
        with open(inp.path, "rb") as f:
            for c in cuts:
                b = cut_after_newline(f, c, inp.size_bytes)
                if 0 < b < inp.size_bytes and (not bounds or b > bounds[-1]):
                    bounds.append(b)
        edges = [0, *bounds, inp.size_bytes]
        return [(a, Unit(inp.index, "lines", a, b, weight=b - a)) for a, b in zip(edges, edges[1:])]
    if how == "rows":
        groups = _row_groups(inp)
        if groups:
            scale = inp.size_bytes / (sum(b for _, b in groups) or 1)   # footer sizes are uncompressed
            starts = [0.0]
            for _, nbytes in groups:
                starts.append(starts[-1] + nbytes * scale)
            # cut before the first row group that starts at or after each cut point
            bounds = sorted({g for c in cuts for g in range(1, len(groups)) if starts[g] >= c and starts[g - 1] < c})
            edges = [0, *bounds, len(groups)]
            return [(int(starts[a]), Unit(inp.index, "rows", a, b, first=sum(r for r, _ in groups[:a]),
                                          weight=int(starts[b] - starts[a]))) for a, b in zip(edges, edges[1:])]
    return [(0, Unit(inp.index, "whole", weight=inp.size_bytes))]


def plan_tasks(inputs: list[Input], skip: set[int], max_docs: dict[str, int], tasks: int) -> list[list[Unit]]:
    """`tasks` contiguous lists of units, about equal in bytes, in document order (some may be empty)."""
    todo = [i for i in inputs if i.index not in skip]
    total = sum(i.size_bytes for i in todo)
    targets = [total * k // tasks for k in range(1, tasks)]       # global cut points
    out: list[list[Unit]] = [[] for _ in range(tasks)]
    offset = 0
    for inp in todo:
        inside = [t - offset for t in targets if offset < t < offset + inp.size_bytes]
        for pos, u in _pieces(inp, splittable(inp, max_docs.get(inp.source, 0)), inside):
            out[sum(1 for t in targets if t <= offset + pos)].append(u)   # the task whose share it starts in
        offset += inp.size_bytes
    return out


def all_units(plan: list[list[Unit]]) -> Iterator[Unit]:
    for units in plan:
        yield from units


def number_lines(plan: list[list[Unit]], counts: dict[tuple[int, int], int]) -> None:
    """Set each line range's first line number from the line-end counts of the ranges before it."""
    next_line: dict[int, int] = {}
    for u in all_units(plan):
        if u.kind != "lines":
            continue
        u.first = next_line.get(u.input_index, 1)
        next_line[u.input_index] = u.first + counts[(u.input_index, u.start)]


def count_line_ends(path: str, start: int, end: int, block: int = 8 << 20) -> int:
    """Line ends in [start, end) (every range but a file's last ends just after one)."""
    n = 0
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start
        while left > 0:
            data = f.read(min(block, left))
            if not data:
                break
            n += data.count(b"\n")
            left -= len(data)
    return n


def _range_batches(inp: Input, u: Unit, batch_bytes: int) -> Iterator[Batch]:
    """`sources._line_batches` for one byte range: whole lines, numbered from `u.first`."""
    with open(inp.path, "rb") as f:
        f.seek(u.start)
        left = u.end - u.start

        def read() -> bytes:
            nonlocal left
            block = f.read(min(batch_bytes, left)) if left > 0 else b""
            left -= len(block)
            return block
        yield from line_chunks(inp, read, u.first, u.start)


def _row_batches(inp: Input, u: Unit, batch_docs: int) -> Iterator[Batch]:
    """`sources._parquet_rows` for row groups [start, end), rows numbered from `u.first`."""
    import pyarrow.parquet as pq
    pf = pq.ParquetFile(inp.path)
    column = inp.text_field.split(".")[0]
    names = pf.schema_arrow.names
    if column not in names:
        raise DataError(f"{inp.path}: no column '{column}' (columns: {', '.join(names)}); set text_field: in the source")
    i, buf = u.first, []
    for rb in pf.iter_batches(batch_size=1024, row_groups=list(range(u.start, u.end)), columns=[column]):
        for value in rb.column(0).to_pylist():
            buf.append((f"row {i}", {column: value}))
            i += 1
            if len(buf) >= batch_docs:
                yield Batch(inp.index, "records", records=buf)
                buf = []
    if buf:
        yield Batch(inp.index, "records", records=buf)


def unit_batches(inp: Input, u: Unit, batch_bytes: int, batch_docs: int, max_docs: int) -> Iterator[Batch]:
    if u.kind == "lines":
        return _range_batches(inp, u, batch_bytes)
    if u.kind == "rows":
        return _row_batches(inp, u, batch_docs)
    return batches(inp, batch_bytes, batch_docs, max_docs)
