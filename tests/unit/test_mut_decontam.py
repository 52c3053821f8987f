"""Decontamination decisions against a brute-force reading of the module docstring's rule, on random
small benchmarks and texts over a tiny alphabet (many partial overlaps, ties at the threshold); the
report against the hits; benchmark folders, options and worker plumbing exactly (closes mutmut
survivors of data_recipes/decontam.py; the equivalent ones are in tests/mutation_equivalent.md)."""
from __future__ import annotations

import csv
import json
import os
import random

import pytest

from core.benchmarks import load_questions
from data_recipes import decontam
from data_recipes.decontam import BenchItem, Decontaminator, DecontamError, DecontamOptions
from data_recipes.decontam_tokens import tokenize

ALPHABET = "山水火木金土日月天地人口"
EPS = 1e-9


def toks(text: str) -> tuple:
    t, _, _ = tokenize([text])
    return tuple(t[:-1].tolist())                      # without the separator


def grams(seq: tuple, k: int) -> set:
    return {seq[i:i + k] for i in range(len(seq) - k + 1)}


def reference(items: list[BenchItem], text: str, n: int, theta: float, min_item: int) -> list[tuple[int, float]]:
    """The docstring's rule, one item at a time: a part of >= n tokens is covered by the share of its
    distinct n-grams found in the text, a shorter part by occurring whole; score = covered tokens /
    all tokens; a hit needs score >= threshold (all tokens when the item is shorter than n) and an
    anchor: the stem covered >= threshold (with a stem under 2n tokens also threshold of the option
    tokens), or the long options alone covering threshold of the item."""
    t = toks(text)
    hits = []
    for idx, it in enumerate(items):
        parts = [toks(p) for p in (it.question, *it.options)]
        lens = [len(p) for p in parts]
        total = sum(lens)
        if lens[0] == 0 or total < min_item:
            continue
        need = total if total < n else theta * total
        covered, long_opts, short_opts, stem_cov, short_stem = 0.0, 0.0, 0.0, None, False
        for j, p in enumerate(parts):
            if len(p) >= n:
                g = grams(p, n)
                cov = len(g & grams(t, n)) / len(g)
                covered += cov * len(p)
                if j == 0:
                    stem_cov = cov
                else:
                    long_opts += cov * len(p)
            elif len(p) > 0 and p in grams(t, len(p)):
                covered += len(p)
                if j == 0:
                    short_stem = True
                else:
                    short_opts += len(p)
        by_options = long_opts >= theta * total - EPS
        stem_seen = (stem_cov is not None and stem_cov >= theta - EPS) or short_stem
        opts_ok = long_opts + short_opts >= theta * (total - lens[0]) - EPS
        if (by_options or (stem_seen and (lens[0] >= 2 * n or opts_ok))) and covered >= need - EPS:
            hits.append((idx, covered / total))
    return sorted(hits, key=lambda h: -h[1])


def random_case(rng: random.Random):
    def word(lo, hi):
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))
    items = [BenchItem("b", "test", "s", f"s/test/{i}", word(0 if i % 9 == 0 else 1, 14),
                       [word(0, 7) for _ in range(4)]) for i in range(12)]
    texts = []
    for _ in range(40):
        it = rng.choice(items)
        pieces = [p for p in (it.question, *it.options) if rng.random() < 0.7]
        pieces = [p[rng.randint(0, len(p) // 3):] if rng.random() < 0.3 else p for p in pieces]
        rng.shuffle(pieces)
        texts.append("，".join(pieces + [word(0, 6)]))
    return items, texts


@pytest.mark.parametrize("n,theta,min_item", [(3, 0.5, 5), (2, 0.5, 1), (4, 0.75, 3), (1, 0.5, 2), (5, 0.3, 5)])
def test_decisions_equal_the_rule_by_brute_force(n, theta, min_item):
    rng = random.Random(f"{n}{theta}{min_item}")
    n_hits = 0
    for _ in range(8):
        items, texts = random_case(rng)
        decon = Decontaminator(items, ngram_tokens=n, threshold=theta, min_item_tokens=min_item)
        assert decon.n_skipped_short == sum(1 for it in items if not toks(it.question)
                                            or sum(len(toks(p)) for p in (it.question, *it.options)) < min_item)
        got = decon.check_batch(texts)
        for text, found in zip(texts, got):
            want = reference(items, text, n, theta, min_item)
            assert [i for i, _ in found] == [i for i, _ in want], text
            assert [s for _, s in found] == pytest.approx([s for _, s in want])
            n_hits += len(want)
    assert n_hits > 20                                   # the cases do produce hits


def test_index_of_short_items_only_and_limits():
    short = [BenchItem("b", "test", "s", "s/test/0", "山水火", ["木", "金", "", ""])]
    d = Decontaminator(short, ngram_tokens=8, threshold=1.0, min_item_tokens=1)
    assert [i for i, _ in d.check_batch(["山水火 木 金", "山水 木"])[0]] == [0]
    assert Decontaminator([], ngram_tokens=decontam.MAX_NGRAM).check_batch(["山水"]) == [[]]
    for kw, msg in (({"threshold": 1.5}, "threshold must be in (0, 1], got 1.5"),
                    ({"threshold": 0}, "threshold must be in (0, 1], got 0"),
                    ({"ngram_tokens": 64}, "ngram_tokens must be in [1, 63], got 64"),
                    ({"ngram_tokens": 0}, "ngram_tokens must be in [1, 63], got 0")):
        with pytest.raises(DecontamError) as e:
            Decontaminator([], **kw)
        assert str(e.value) == msg


def test_edges_of_the_rule():
    # an item of exactly n tokens is not "shorter than one n-gram": the threshold applies, not "whole"
    d = Decontaminator([BenchItem("b", "test", "s", "s/test/0", "山水", ["火", "木", "", ""])], ngram_tokens=4,
                       threshold=0.5, min_item_tokens=1)
    assert d.check_batch(["山水 火"]) == [[(0, 0.75)]]
    # a short stem's first tokens (its lookup key) without the whole stem anchor nothing, however many
    # option tokens the text holds
    item = BenchItem("b", "test", "s", "s/test/0", "山水火木金土", ["日月天", "地人口", "东南西", "北上下"])
    d = Decontaminator([item], ngram_tokens=8, threshold=0.5, min_item_tokens=1)
    assert d.check_batch(["山水火木 日月天 地人口 东南西 北上下"]) == [[]]
    assert d.check_batch(["山水火木金土 日月天 地人口 东南西 北上下"]) == [[(0, 1.0)]]


def write_csv(path, rows, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        csv.writer(f).writerows(rows)


def test_benchmark_folders(tmp_path):
    write_csv(tmp_path / "b" / "val" / "law_val.csv", [["Question", "A", "B", "C", "D"], ["第一行\r\n第二行", "a", "b", "c", "d"]],
              bom=True)
    write_csv(tmp_path / "b" / "test" / "math.csv", [["A", "B", "C", "D", "question"], ["1", "2", "3", "4", "几？"]])
    items = decontam.read_benchmark_dir("x", tmp_path / "b")
    assert [(i.benchmark, i.split, i.subject, i.id, i.question, i.options) for i in items] == [
        ("x", "test", "math", "math/test/0", "几？", ["1", "2", "3", "4"]),
        ("x", "val", "law", "law/val/0", "第一行\r\n第二行", ["a", "b", "c", "d"])]
    bad = tmp_path / "bad"
    for rows, msg in (([], "header needs question,A,B,C,D columns, got []"),
                      ([["A", "B", "C", "D", "question"], ["1", "2", "3", "4"]], "4 fields, expected 5")):
        write_csv(bad / "dev" / "x.csv", rows)
        with pytest.raises(DecontamError) as e:
            decontam.read_benchmark_dir("x", bad)
        f = bad / "dev" / "x.csv"
        assert str(e.value) == (f"{f}:1: {msg}" if not rows else f"{f}:2: {msg}")
    with pytest.raises(DecontamError) as e:
        decontam.read_benchmark_dir("x", tmp_path / "empty")
    assert str(e.value) == f"benchmark 'x': no <split>/*.csv files under {tmp_path / 'empty'}"


def test_benchmark_items_by_spec(tmp_path):
    items = decontam.load_benchmark_items("demo", None)
    qs = load_questions("demo")
    assert [(i.benchmark, i.split, i.subject, i.id, i.question, i.options) for i in items] == [
        ("demo", q.split, q.subject, q.id, q.question, list(q.choices)) for q in qs]
    assert {i.split for i in items} >= {"dev", "val"}
    with pytest.raises(DecontamError) as e:
        decontam.load_benchmark_items("nosuch", None)
    assert str(e.value) == "benchmark 'nosuch': no eval/benchmarks/nosuch.yaml spec and no folder given"
    with pytest.raises(DecontamError) as e:
        decontam.load_benchmark_items("demo", tmp_path / "none")
    assert str(e.value).startswith("benchmark 'demo': ")


def test_from_benchmarks_sources_and_options(tmp_path, capsys):
    missing = tmp_path / "gone"
    d = Decontaminator.from_benchmarks({"gone": str(missing), "demo": ""}, on_missing="warn")
    n_demo = len(load_questions("demo"))
    assert d.n == 8 and d.threshold == 0.5 and len(d.items) == n_demo
    assert d.describe() == {"gone": {"source": f"missing:{missing}", "n_items": 0},
                            "demo": {"source": "builtin", "n_items": n_demo}}
    assert capsys.readouterr().out == f"WARNING: benchmark 'gone' not found at {missing}: cannot decontaminate against it\n"
    write_csv(tmp_path / "b" / "test" / "x.csv", [["question", "A", "B", "C", "D"], ["山水火木金土", "a", "b", "c", "d"]])
    d = Decontaminator.from_benchmarks({"b": tmp_path / "b"}, min_item_tokens=100)
    assert d.describe() == {"b": {"source": f"local:{tmp_path / 'b'}", "n_items": 1}} and d.n_skipped_short == 1
    with pytest.raises(DecontamError) as e:
        Decontaminator.from_benchmarks({"gone": str(missing)})
    assert str(e.value) == (f"benchmark 'gone' not found at {missing}: cannot decontaminate against it "
                            "(set decontam.on_missing=warn to continue without it)")


def test_report_against_the_hits(tmp_path):
    items = [BenchItem("b1", "test", "s", "s/test/0", "山水火木金土日月天地" + "。" * 200, ["人口", "", "", ""]),
             BenchItem("b2", "dev", "t", "t/dev/0", "东南西北上下左右前后", ["中", "", "", ""])]
    d = Decontaminator(items, ngram_tokens=3, threshold=0.5, sources={"b1": "x", "b2": "y", "b3": "z"})
    long = "山水火木金土日月天地" + "口" * 250
    records = [("s1", "a:1", long), ("s1", "a:2", "无关"), ("s2", "b:1", "东南西北上下左右前后 中"), ("s1", "a:3", long)]
    keep, rep = decontam.decontaminate(records, d, policy="flag")
    assert keep == [True] * 4
    hit = d.check(long)[0]
    assert rep["examples"][0] == {"source": "s1", "where": "a:1", "text": long[:200], "benchmark": "b1", "split": "test",
                                  "subject": "s", "id": "s/test/0", "score": hit.score, "question": items[0].question[:200],
                                  "n_hits": len(d.check(long))}
    assert {k: v for k, v in rep.items() if k != "examples"} == {
        "policy": "flag", "method": decontam.METHOD, "threshold": 0.5, "ngram_tokens": 3, "n_checked": 4,
        "n_flagged": 3, "n_dropped": 0, "per_source": {"s1": {"checked": 3, "flagged": 2}, "s2": {"checked": 1, "flagged": 1}},
        "per_benchmark": {"b1": 2, "b2": 1, "b3": 0}, "benchmarks": d.describe(), "n_items_skipped_short": 0}
    keep, rep = decontam.decontaminate(records * 20, d)
    assert keep == [r[2] == "无关" for r in records] * 20
    assert rep["n_dropped"] == 60 and len(rep["examples"]) == 50
    assert [e["where"] for e in decontam.decontaminate(records, d, max_examples=2)[1]["examples"]] == ["a:1", "b:1"]
    with pytest.raises(DecontamError) as e:
        decontam.decontaminate(records, d, policy="keep")
    assert str(e.value) == "decontam policy must be 'drop' or 'flag', got 'keep'"
    decontam.write_report(tmp_path / "r.json", rep)
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == rep


def test_decontaminate_records(tmp_path, capsys):
    q = load_questions("demo")[0]
    records = [("s", "f:1", q.question + " " + " ".join(q.choices)), ("s", "f:2", "无关的文字")]
    for off in ("none", "OFF", "false"):
        keep = decontam.decontaminate_records(records, DecontamOptions(policy=off), tmp_path, tmp_path / "off.json")
        assert keep == [True, True]
        assert json.loads((tmp_path / "off.json").read_text()) == {
            "policy": "none", "threshold": None, "n_checked": 0, "n_flagged": 0, "n_dropped": 0, "per_source": {},
            "per_benchmark": {}, "examples": []}
    opts = DecontamOptions(benchmarks=["demo:eval/benchmarks/demo_bench"], ngram_tokens=6, threshold=0.6)
    capsys.readouterr()
    keep = decontam.decontaminate_records(records, opts, tmp_path, tmp_path / "d.json")
    rep = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    direct = decontam.decontaminate(records, Decontaminator.from_benchmarks(
        {"demo": decontam.expand_path("eval/benchmarks/demo_bench", tmp_path)}, ngram_tokens=6, threshold=0.6))
    assert keep == [False, True] == direct[0] and rep == json.loads(json.dumps(direct[1]))
    assert capsys.readouterr().out == f"decontamination (drop): 2 checked, 1 flagged, 1 dropped -> {tmp_path / 'd.json'}\n"
    flag = DecontamOptions(policy="flag", benchmarks=["x:{data_root}/no:such", "demo:eval/benchmarks/demo_bench"],
                           on_missing="warn", ngram_tokens=6, threshold=0.6)
    assert decontam.decontaminate_records(records, flag, tmp_path, tmp_path / "f.json") == [True, True]
    rep = json.loads((tmp_path / "f.json").read_text())
    assert rep["benchmarks"]["x"] == {"source": f"missing:{tmp_path / 'no:such'}", "n_items": 0}
    assert (rep["policy"], rep["n_flagged"], rep["n_dropped"]) == ("flag", 1, 0)
    for entry in ("demo", "demo:"):
        with pytest.raises(Exception) as e:
            decontam.decontaminate_records(records, DecontamOptions(benchmarks=[entry]), tmp_path, tmp_path / "e.json")
        assert str(e.value) == f"decontam.benchmarks entries are 'name:folder', got {entry!r}"


def test_workers_and_their_count(monkeypatch):
    d = Decontaminator([BenchItem("b", "test", "s", "s/test/0", "山水火木金土日月", ["a", "b", "c", "d"])], ngram_tokens=3)
    decontam._init_worker(d)
    assert decontam._check_texts(["山水火木金土日月", "无关"]) == d.check_batch(["山水火木金土日月", "无关"])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert [decontam.auto_workers(n) for n in (0, 30_000, 40_000, 50_000, 10**9)] == [1, 1, 2, 2, 4]
    assert isinstance(decontam.auto_workers(50_000), int)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert decontam.auto_workers(10**9) == 1
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert decontam.auto_workers(10**9) == 1


def test_default_minimum_item_length_is_five_tokens():
    # an item of exactly min_item_tokens tokens is indexed, one token fewer is skipped (default 5)
    five, four = "山水火木金", "山水火木"
    assert len(toks(five)) == 5 and len(toks(four)) == 4
    items = [BenchItem("b", "test", "s", f"s/test/{i}", q, ["", "", "", ""]) for i, q in enumerate((five, four))]
    d = Decontaminator(items, ngram_tokens=3, threshold=0.5)
    assert d.n_skipped_short == 1
    assert d.check_batch([five]) == [[(0, 1.0)]]
