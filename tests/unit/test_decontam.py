"""Decontamination finds planted benchmark copies (verbatim, reformatted, embedded in long text) and
leaves unrelated text and stock phrases alone; report shape; C-Eval/CMMLU layouts; real data."""
import csv

import pytest

from conftest import shared_path
from data_recipes import decontam
from data_recipes.decontam import Decontaminator, DecontamError

QUESTIONS = [
    ("甲路过某自行车修理店，见有一辆名牌电动自行车停在门口，欲据为己有。甲的行为构成____。", "诈骗罪", "盗窃罪", "侵占罪", "职务侵占罪"),
    ("下列关于光合作用的说法中，正确的是____。", "只在夜间进行", "需要叶绿素参与", "不需要光", "只产生二氧化碳"),
    ("1+1=", "1", "2", "3", "4"),   # shorter than one n-gram: matched only as a whole
    ("对吗？", "对", "错", "", ""),   # under min_item_tokens: too short to tell a copy from a coincidence
]


def _bench(root, layout):
    """A two-split benchmark folder in C-Eval (<subject>_<split>.csv) or CMMLU (<subject>.csv) layout."""
    for split in ("dev", "test"):
        d = root / split
        d.mkdir(parents=True)
        name = f"law_{split}.csv" if layout == "ceval" else "law.csv"
        with open(d / name, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "question", "A", "B", "C", "D", "answer"] if layout == "ceval"
                       else ["", "Question", "A", "B", "C", "D", "Answer"])
            rows = QUESTIONS if split == "test" else QUESTIONS[:1]
            for i, q in enumerate(rows):
                w.writerow([i, *q, "B"])
    return root


@pytest.fixture
def decon(tmp_path):
    return Decontaminator.from_benchmarks({"xbench": _bench(tmp_path / "x", "ceval"),
                                           "ybench": _bench(tmp_path / "y", "cmmlu")}, ngram_tokens=8, threshold=0.5)


def test_planted_copies_found_unrelated_not(decon):
    q, a, b, c, d = QUESTIONS[1]
    verbatim = f"{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n答案：B"
    reformatted = f"请回答：{q.replace('____', '（ ）')} (A){a} (B){b} (C){c} (D){d}"
    embedded = "今天我们复习生物。" * 30 + verbatim + "以上就是全部内容。" * 30
    for text in (verbatim, reformatted, embedded):
        hits = decon.check(text)
        assert hits and {h.benchmark for h in hits} == {"xbench", "ybench"}
        assert all(h.score >= 0.5 and h.subject == "law" and h.split == "test" for h in hits)
    assert decon.check("光合作用是植物利用阳光把二氧化碳和水变成有机物的过程，需要叶绿素。") == []
    assert decon.check("下列关于历史的说法中，正确的是哪一个？请说明理由。") == []   # shares a stock phrase only
    assert decon.check("1+1=2 是最简单的算术。") == []
    assert decon.check("计算 1+1=？ A. 1 B. 2 C. 3 D. 4")                   # the whole short item
    assert decon.check("对吗？对，错。") == []
    assert decon.n_skipped_short == 2                                       # once per benchmark


def test_threshold_controls_partial_overlap(tmp_path):
    bench = {"x": _bench(tmp_path / "x", "ceval")}
    q, a, b, c, d = QUESTIONS[0]
    half = q[: len(q) // 2]
    strict = Decontaminator.from_benchmarks(bench, threshold=0.9)
    loose = Decontaminator.from_benchmarks(bench, threshold=0.2)
    assert strict.check(half) == [] and loose.check(half)


def test_report_shape_and_policies(decon):
    q, a, b, c, d = QUESTIONS[1]
    records = [("exam", "e.jsonl:1", f"{q} {a} {b} {c} {d}"), ("chat", "c.jsonl:1", "你好，今天过得怎么样？"),
               ("chat", "c.jsonl:2", f"问题：{q}选项：{a}、{b}、{c}、{d}。")]
    keep, rep = decontam.decontaminate(records, decon, policy="drop")
    assert keep == [False, True, False]
    assert rep["policy"] == "drop" and rep["threshold"] == 0.5
    assert (rep["n_checked"], rep["n_flagged"], rep["n_dropped"]) == (3, 2, 2)
    assert rep["per_source"] == {"exam": {"checked": 1, "flagged": 1}, "chat": {"checked": 2, "flagged": 1}}
    assert rep["per_benchmark"] == {"xbench": 2, "ybench": 2}
    assert rep["examples"][0]["where"] == "e.jsonl:1" and rep["examples"][0]["id"].startswith("law/test/")
    keep, rep = decontam.decontaminate(records, decon, policy="flag")
    assert keep == [True, True, True] and rep["n_flagged"] == 2 and rep["n_dropped"] == 0
    with pytest.raises(DecontamError):
        decontam.decontaminate(records, decon, policy="ignore")


def test_missing_benchmark_errors_or_warns(tmp_path, capsys):
    with pytest.raises(DecontamError, match="not found"):
        Decontaminator.from_benchmarks({"ceval": tmp_path / "nope"})
    d = Decontaminator.from_benchmarks({"ceval": tmp_path / "nope", "x": _bench(tmp_path / "x", "ceval")},
                                       on_missing="warn")
    assert "WARNING" in capsys.readouterr().out and d.describe()["ceval"]["source"].startswith("missing:")


def test_real_ceval_cmmlu_rows_are_caught():
    ceval, cmmlu = shared_path("ceval"), shared_path("cmmlu")
    decon = Decontaminator.from_benchmarks({"ceval": ceval, "cmmlu": cmmlu})
    n = decon.describe()
    assert n["ceval"]["n_items"] >= 1196 and n["cmmlu"]["n_items"] >= 8669
    with open(cmmlu / "test" / "agronomy.csv", encoding="utf-8") as f:
        row = list(csv.reader(f))[5]
    planted = f"老师出了一道题：{row[1]}\n选项有：{row[2]}；{row[3]}；{row[4]}；{row[5]}。你选哪个？"
    hits = decon.check(planted)
    assert any(h.benchmark == "cmmlu" and h.subject == "agronomy" for h in hits)
    assert decon.check("为什么天空是蓝色的？因为大气对短波长的蓝光散射更强。") == []
