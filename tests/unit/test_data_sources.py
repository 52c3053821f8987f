"""Reading inputs: line batches keep lines whole with the right line numbers and offsets, max_docs,
globs and missing paths, and the per-record parsing that reports file:line."""
import json

import pytest

from data_recipes.sources import DataError, SourceOptions, batches, resolve_inputs
from data_recipes.workers import _records


def _lines(path, batch_bytes, max_docs=0):
    [inp] = resolve_inputs([SourceOptions(path=str(path))], "")
    out = []
    for b in batches(inp, batch_bytes=batch_bytes, max_docs=max_docs):
        out.extend((loc, text, err) for loc, text, err, _ in _records(b, str(path), "jsonl", "text"))
    return out


def test_line_batches_keep_lines_whole_and_numbered(tmp_path):
    p = tmp_path / "a.jsonl"
    texts = [f"第{i}行" + "长" * (i * 7) for i in range(12)]
    p.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts).encode()
                  + b"\n" + json.dumps({"text": "last, no newline"}).encode())
    for batch_bytes in (10, 64, 1 << 20):          # 10 < every line: a line longer than a batch still works
        got = _lines(p, batch_bytes)
        assert [t for _, t, _ in got] == texts + ["last, no newline"]
        assert got[3][0] == f"{p}:4" and got[-1][0] == f"{p}:14"      # line 13 is blank
    assert [t for _, t, _ in _lines(p, 64, max_docs=5)] == texts[:5]


def test_bad_bytes_offset_points_at_the_byte(tmp_path):
    p = tmp_path / "b.jsonl"
    good = json.dumps({"text": "好"}, ensure_ascii=False).encode() + b"\n"
    p.write_bytes(good + b'{"text": "x\xffy"}\n')
    (_, _, _), (loc, text, err) = _lines(p, 1 << 20)
    msgs = [m for b in batches(resolve_inputs([SourceOptions(path=str(p))], "")[0])
            for *_, m in _records(b, str(p), "jsonl", "text") if m]
    assert text is None and err == "utf8" and loc == f"{p}:2"
    assert f"byte offset {len(good) + 11}" in msgs[0] and p.read_bytes()[len(good) + 11] == 0xFF


def test_globs_folders_and_missing_paths(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.jsonl", "d/a.jsonl", "d/sub/c.jsonl"):
        (tmp_path / name).write_text('{"text": "x"}\n')
    got = resolve_inputs([SourceOptions(path="d/**/*.jsonl")], str(tmp_path))
    assert [i.path.split("/d/")[1] for i in got] == ["a.jsonl", "b.jsonl", "sub/c.jsonl"]
    assert len(resolve_inputs([SourceOptions(path="d")], str(tmp_path))) == 3
    with pytest.raises(DataError, match="path not found: .*nope"):
        resolve_inputs([SourceOptions(name="x", path="nope/*.jsonl")], str(tmp_path))
    with pytest.raises(DataError, match="cannot tell the format"):
        (tmp_path / "d" / "e.dat").write_text("x")
        resolve_inputs([SourceOptions(path="d/e.dat")], str(tmp_path))
    hub = resolve_inputs([SourceOptions(hub="org/set", path="local/*.jsonl")], "")[0]
    assert hub.kind == "hub" and hub.spec["path"] == "org/set"        # no data_root: the hub is streamed
