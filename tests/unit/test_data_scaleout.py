"""Scale-out builds (data_recipes/scaleout*.py) give exactly what `make data` gives.

Without the `data` extra only the pure parts run: the dedupe sweep against `Deduper`, the work
plan, and the shard plan against `ShardWriter`. With it (`make setup-data`), the local executor
with 1 and 4 tasks and (marked `backends`, for CI's backend stage) a local Ray instance with 2 CPUs
build the same corpus: one JSON Lines file and one parquet file (so the work is split inside
files), a malformed line, the demo corpus's exact and near duplicates and one planted near
duplicate. Kept documents, quarantine, tokenizer, shards and cache key must equal `make data`'s.
"""
import json
import random

import numpy as np
import pytest

from data_recipes.dedupe import Deduper
from data_recipes.scaleout_dedupe import collisions, partition, sweep
from data_recipes.scaleout_plan import all_units, count_line_ends, number_lines, plan_tasks, unit_batches
from data_recipes.scaleout_shards import plan_shards
from data_recipes.shards import ShardWriter
from data_recipes.sources import Input, batches

OPS = [{"name": "nfkc_normalize"}, {"name": "whitespace_normalize"}, {"name": "traditional_to_simplified"},
       {"name": "length_filter", "min_chars": 10}, {"name": "special_char_filter", "max_ratio": 0.25},
       {"name": "cjk_ratio_filter", "min_ratio": 0.05},
       {"name": "repetition_filter", "max_repeated_line_ratio": 0.3, "ngram_chars": 10, "max_repeated_ngram_ratio": 0.5}]


# ---- pure parts (always run) -------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bucketed_sweep_makes_deduper_decisions(seed):
    """Random documents over a small key pool (many collisions, chains A~B~C): the buckets + sweep
    drop exactly the documents `Deduper.check` drops in order, for the same reasons."""
    rng = random.Random(seed)
    n, bands = 400, 4
    exact = [rng.randrange(60) for _ in range(n)]
    near = [np.array([rng.randrange(300) * 7 + b for b in range(bands)], dtype=np.uint64) for _ in range(n)]
    near[5][0] = 0                                         # 0 and 1 are one key in U64Set
    near[9][0] = 1
    d = Deduper(exact=True, near=True)
    want = [(i, 1 if r[0] == "exact_dedupe" else 2) for i in range(n)
            if (r := d.check(exact[i] + 1, near[i])) is not None]
    docs = np.arange(n, dtype=np.uint64)
    ex = np.concatenate([collisions(p) for p in partition(np.array(exact, dtype=np.uint64) + 1, docs, 3)])
    nr = np.concatenate([collisions(p) for p in partition(np.concatenate(near), np.repeat(docs, bands), 3)])
    got = [tuple(r) for r in sweep(ex, nr).tolist()]
    assert got == want and 0 < len(want) < n
    assert 2 in {r for _, r in want} and 1 in {r for _, r in want}


def _jsonl(path, n, bad_line=None):
    lines = [json.dumps({"text": f"第{i}篇文档，内容是{'甲乙丙丁'[i % 4] * (i % 17 + 1)}。"}, ensure_ascii=False)
             for i in range(n)]
    if bad_line is not None:
        lines[bad_line] = '{"text": broken'
    path.write_text("\n".join(lines), encoding="utf-8")         # no newline after the last line
    return lines


def test_one_file_is_split_into_ranges_that_read_like_the_whole(tmp_path):
    lines = _jsonl(tmp_path / "a.jsonl", 500, bad_line=333)
    inp = Input(0, "a", "file", str(tmp_path / "a.jsonl"), "jsonl", "text", size_bytes=(tmp_path / "a.jsonl").stat().st_size)
    plan = plan_tasks([inp], set(), {}, 4)
    assert [len(units) for units in plan] == [1, 1, 1, 1]        # --tasks means something for one file
    units = list(all_units(plan))
    assert units[0].start == 0 and units[-1].end == inp.size_bytes
    assert all(a.end == b.start for a, b in zip(units, units[1:]))
    number_lines(plan, {(u.input_index, u.start): count_line_ends(inp.path, u.start, u.end) for u in units})
    whole = b"".join(b.data for b in batches(inp, 1 << 20))
    parts = [(b.first_line, b.first_offset, b.data) for u in units for b in unit_batches(inp, u, 1000, 10, 0)]
    assert b"".join(p[2] for p in parts) == whole == (tmp_path / "a.jsonl").read_bytes()
    for first_line, offset, data in parts:                       # every batch knows its true line number
        assert first_line == whole[:offset].count(b"\n") + 1
        assert data.split(b"\n")[0].decode() == lines[first_line - 1]


def test_parquet_is_split_between_row_groups(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": [f"行{i}" for i in range(230)]}), tmp_path / "b.parquet", row_group_size=20)
    size = (tmp_path / "b.parquet").stat().st_size
    inp = Input(0, "b", "file", str(tmp_path / "b.parquet"), "parquet", "text", size_bytes=size)
    plan = plan_tasks([inp], set(), {}, 3)
    units = list(all_units(plan))
    assert len(units) == 3 and all(u.kind == "rows" for u in units)
    got = [rec for u in units for b in unit_batches(inp, u, 1 << 20, 7, 0) for rec in b.records]
    want = [rec for b in batches(inp, 1 << 20, 7) for rec in b.records]
    assert got == want


@pytest.mark.parametrize("limit", [1, 50, 333, 10_000])
def test_shard_plan_cuts_where_shard_writer_cuts(tmp_path, limit):
    rng = np.random.default_rng(limit)
    lens = [rng.integers(1, 40, size=k) for k in (17, 0, 55, 3, 120)]     # one task with no documents
    writer = ShardWriter(tmp_path / "s", "uint16", limit)
    for ln in lens:
        if len(ln):
            writer.add(np.zeros(int(ln.sum()), dtype=np.uint16), ln)
    want = [(e["num_docs"], e["num_tokens"]) for e in writer.close()]
    plan = plan_shards(lens, limit)
    got = [(sum(p[2] - p[1] for p in s), sum(p[4] - p[3] for p in s)) for s in plan]
    assert got == want and len(want) > (1 if limit < 10_000 else 0)


# ---- end to end (needs the `data` extra) --------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A recipe over one big JSON Lines file and one parquet file, and its `make data` build."""
    pytest.importorskip("datatrove", reason="optional `data` extra not installed (make setup-data)")
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from data_recipes.build import main as build_main
    from data_recipes.demo_data import pretrain_corpus
    root = tmp_path_factory.mktemp("scaleout")
    c = pretrain_corpus()
    texts = [t for k in sorted(c) for t in c[k][::2]]               # half of it: exact and near duplicates stay
    story = max(c["stories.jsonl"], key=len)
    planted = story[: len(story) // 2] + "嗯" + story[len(story) // 2:]       # one character added
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts]
    lines.insert(100, '{"text": broken')
    lines.append(json.dumps({"text": planted}, ensure_ascii=False))
    (root / "in").mkdir()
    (root / "in" / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": c["facts.jsonl"][:200] + texts[:40]}), root / "in" / "b.parquet", row_group_size=40)
    recipe = root / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "data_root": str(root / "in"), "sources": [{"name": "a", "path": "a.jsonl"}, {"name": "b", "path": "b.parquet"}],
        "clean": {"operators": OPS}, "num_workers": 1,
        "tokenizer": {"vocab_size": 600, "compare_baseline": False, "heldout_every_docs": 20},
        "shards": {"shard_size_tokens": 20000, "batch_bytes": 65536}}, allow_unicode=True), encoding="utf-8")
    ref = build_main([str(recipe), f"run.root={root / 'ref'}"])
    drops = {r["name"]: r["dropped"] for r in json.loads((ref / "report.json").read_text())["operators"]}
    assert drops["exact_dedupe"] > 0 and drops["near_dedupe"] > 1        # the corpus exercises both
    return {"recipe": recipe, "root": root, "ref": ref, "planted_line": len(lines)}


def _same_as_make_data(corpus, out):
    ref = corpus["ref"]
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (ref, out))
    for k in ("shards", "num_tokens", "num_docs", "dtype", "vocab_size", "doc_sep_id", "tokenizer_sha256", "content_hash"):
        assert a[k] == b[k], k
    for e in b["shards"]:                                         # and the files are the listed ones
        assert (out / e["file"]).read_bytes() == (ref / e["file"]).read_bytes()
        assert np.array_equal(np.load(out / e["docs_file"]), np.load(ref / e["docs_file"]))
    kept = lambda d: b"".join(p.read_bytes() for p in sorted((d / "cleaned").glob("*.jsonl")))  # noqa: E731
    assert kept(out) == kept(ref)
    assert (out / "quarantine.jsonl").read_bytes() == (ref / "quarantine.jsonl").read_bytes()
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (ref, out))
    assert ra["operators"] == rb["operators"] and ra["sources"] == rb["sources"]


def _planted_drop(out, line: int):
    q = [json.loads(l) for l in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    return [(r["operator"], r["loc"].rsplit(":", 1)[1]) for r in q if r["loc"].endswith(f"a.jsonl:{line}")]


@pytest.mark.parametrize("tasks", [1, 4])
def test_local_executor_builds_what_make_data_builds(corpus, tasks):
    from data_recipes.scaleout import main
    out = main([str(corpus["recipe"]), f"run.root={corpus['root'] / f'local{tasks}'}", "--executor=local",
                f"--tasks={tasks}", "--workers=2"])
    _same_as_make_data(corpus, out)
    report = json.loads((out / "report.json").read_text())
    assert report["scaleout"]["units"] >= tasks                   # both files were cut for 4 tasks
    assert _planted_drop(out, corpus["planted_line"]) == [("near_dedupe", str(corpus["planted_line"]))]


@pytest.mark.backends
def test_ray_executor_builds_what_make_data_builds(corpus):
    """CI's backend stage: a local Ray instance (ray.init, 2 CPUs), 2 tasks."""
    pytest.importorskip("ray", reason="optional `data` extra not installed (make setup-data)")
    import ray
    from data_recipes.scaleout import main
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        out = main([str(corpus["recipe"]), f"run.root={corpus['root'] / 'ray'}", "--executor=ray", "--tasks=2",
                    "--mem-per-cpu-gb=0.5"])
    finally:
        ray.shutdown()
    _same_as_make_data(corpus, out)
    assert _planted_drop(corpus["ref"], corpus["planted_line"]) == [("near_dedupe", str(corpus["planted_line"]))]
    assert _planted_drop(out, corpus["planted_line"]) == _planted_drop(corpus["ref"], corpus["planted_line"])


@pytest.mark.parametrize("case", ["bad_line_fails", "wrong_text_field", "nothing_survives"])
def test_user_errors_read_as_in_make_data(tmp_path, capsys, case):
    """A task's user error stops the scale-out with make data's message (the first in input order)."""
    pytest.importorskip("datatrove", reason="optional `data` extra not installed (make setup-data)")
    import yaml
    from data_recipes.build import main as build_main
    from data_recipes.scaleout import main
    (tmp_path / "in").mkdir()
    _jsonl(tmp_path / "in" / "a.jsonl", 300, bad_line=250 if case == "bad_line_fails" else None)
    over = {"bad_line_fails": {"on_error": "fail"},
            "wrong_text_field": {"sources": [{"path": "a.jsonl", "text_field": "body"}]},
            "nothing_survives": {"clean": {"operators": [{"name": "length_filter", "min_chars": 10_000}]}}}[case]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data_root": str(tmp_path / "in"), "sources": [{"path": "a.jsonl"}],
                                      "clean": {"operators": []}, **over}, allow_unicode=True), encoding="utf-8")
    want = {"bad_line_fails": "a.jsonl:251", "wrong_text_field": "'body'", "nothing_survives": "first rejected"}[case]
    errors = []
    for run, extra in ((build_main, []), (main, ["--executor=local", "--tasks=3", "--workers=2"])):
        with pytest.raises(SystemExit) as e:
            run([str(recipe), f"run.root={tmp_path / 'runs'}", *extra])
        assert e.value.code == 2
        errors.append([l for l in capsys.readouterr().err.splitlines() if "error:" in l][-1])
    assert errors[0] == errors[1] and want in errors[0]
    left = (tmp_path / "runs" / "data").glob("*")
    assert not [p.name for p in left if not p.name.endswith(".lock")]           # no folder, no temporary one
