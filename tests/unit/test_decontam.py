"""Decontamination finds planted benchmark copies (verbatim, reformatted, options reordered, embedded in
long text) and leaves unrelated text and stock phrases alone; the stem is matched on its own and the
options as an unordered set; the vectorised tokeniser equals its regex definition; batches and worker
processes decide as single texts do; report shape; C-Eval/CMMLU layouts; real data."""
import csv
import random
import re
import unicodedata

import pytest

from conftest import shared_path
from data_recipes import decontam, decontam_tokens
from data_recipes.decontam import BenchItem, Decontaminator, DecontamError

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


# ---- matching robust to option order and light rewording (issue 15) ------------------------------------
OWN = [  # our own items (no benchmark text in the repository)
    ("小明家的猫每天睡十四个小时，那么它一周大约睡____小时。", "八十四", "九十八", "一百零五", "一百一十二"),
    ("蜂鸟振翅____", "每秒可达五十次以上", "每分钟只有一两次", "完全依靠滑翔不振翅", "只在夜间才会振翅"),
    ("下列城市中，位于长江沿岸的是____。", "武汉", "西安", "兰州", "昆明"),
]
WIDE = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}


def _own():
    return Decontaminator([BenchItem("own", "test", "s", f"s/test/{i}", q, list(o)) for i, (q, *o) in enumerate(OWN)])


def _plants(q, a, b, c, d):
    return {
        "verbatim": f"{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n答案：A",
        "punct_ws": "".join(WIDE.get(ch, ch) for ch in q.replace("____", "（ ）")).replace("，", " , ")
                    + f"Ａ．{a}Ｂ．{b}Ｃ．{c}Ｄ．{d}",                       # full width, labels glued to text
        "reordered": f"{q}\nA. {c}\nB. {a}\nC. {d}\nD. {b}\n答案：B",
        "embedded": "今天我们复习一些常识题，" * 20 + f"{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}" + "\n请写出分析过程。" * 20,
    }


def _ordered_coverage(item, text, n=8):
    """The matcher before issue 15: n-grams of question + options as one text, in their order."""
    def toks(t):
        labels = r"(?:(?<=^)|(?<=[\s(（]))\(?[a-e][.．、:：)）]"
        t = re.sub(labels, " ", unicodedata.normalize("NFKC", t).lower(), flags=re.M)
        return decontam_tokens._TOKEN_RE.findall(t)
    grams = lambda ts: {tuple(ts[i:i + n]) for i in range(len(ts) - n + 1)}  # noqa: E731
    own = grams(toks("\n".join(item)))
    return len(own & grams(toks(text))) / len(own)


def test_every_planted_kind_is_caught():
    decon = _own()
    for i, item in enumerate(OWN):
        for kind, text in _plants(*item).items():
            hits = decon.check(text)
            assert [h.id for h in hits] == [f"s/test/{i}"], (kind, text)
            assert hits[0].score == 1.0 and isinstance(hits[0].score, float)


def test_reordered_and_relabelled_copies_need_the_stem_and_option_set():
    """Teeth: the whole-text n-gram matcher misses these plants (each kind of them is caught above), so
    the test fails if stems and options are matched as one ordered text again."""
    for item in OWN[1:]:
        plants = _plants(*item)
        assert _ordered_coverage(item, plants["verbatim"]) == 1.0
        assert _ordered_coverage(item, plants["reordered"]) < 0.5 and _ordered_coverage(item, plants["punct_ws"]) < 0.5


def test_stem_on_its_own_options_as_a_set():
    decon = _own()
    assert [h.id for h in decon.check(OWN[0][0])] == ["s/test/0"]           # a long stem alone is enough
    reworded = "关于蜂鸟的说法：每秒可达五十次以上；每分钟只有一两次；完全依靠滑翔不振翅；只在夜间才会振翅"
    assert [h.id for h in decon.check(reworded)] == ["s/test/1"]            # long options alone, any stem
    assert decon.check("下列城市中，位于黄河沿岸的是哪一个？请说明理由。") == []   # a stock phrase only
    assert decon.check("武汉、西安、兰州、昆明都是中国的大城市。") == []            # short options without the stem
    assert decon.check("蜂鸟振翅，每秒可达五十次以上。") == []                    # stem + one option: under half
    assert [h.id for h in decon.check("长江沿岸的城市有哪些？下列城市中位于长江沿岸的是：兰州，武汉。")] == ["s/test/2"]


def test_tokenizer_equals_its_regex_definition():
    def reference(t):
        return [x for x in decontam_tokens._TOKEN_RE.findall(unicodedata.normalize("NFKC", t).lower())
                if x not in ("a", "b", "c", "d", "e")]
    texts = ["Ａ．ＡＢＣ１２３ｘ（Ｂ）下列", "①②③ ⑴ ㈠ Ⅳ ㎏ ﬁne Kelvin", "豈更車", "cafe\u0301 e\u0301t\u00e9",
             "A. a ab B、c Vitamin C 维生素C", "", "𠀀𠀁 ext-b", "mixed 中文 and English, 2024年", "x" * 300]
    rng = random.Random(0)
    alphabet = "甲乙丙 abcABC019，。、：（）()Ａ１①豈\u0301 \n_"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(200)]
    toks, text_of, off = decontam_tokens.tokenize(texts)
    value_of = {}
    for i, t in enumerate(texts):
        ref = reference(t)
        mine = toks[off[i]:off[i + 1] - 1].tolist()                        # the last token is the separator
        assert len(mine) == len(ref), (t, ref)
        assert set(text_of[off[i]:off[i + 1]].tolist()) <= {i} and toks[off[i + 1] - 1] == decontam_tokens._SEP
        for r, v in zip(ref, mine):
            assert value_of.setdefault(r, v) == v                            # one value per token, everywhere
    assert len(set(value_of.values())) == len(value_of)


def test_batches_and_workers_decide_as_single_texts():
    decon = _own()
    q, a, b, c, d = OWN[0]
    texts = [t for item in OWN for t in _plants(*item).values()] + [
        "下列城市中，位于黄河沿岸的是哪一个？", q[:14], q[14:] + " 八十四 九十八",   # an item split across two texts
        "蜂鸟振翅", "每秒可达五十次以上 每分钟只有一两次 完全依靠滑翔不振翅 只在夜间才会振翅"]
    single = [[(h.id, h.score) for h in decon.check(t)] for t in texts]
    batch = [[(decon.items[i].id, round(s, 4)) for i, s in found] for found in decon.check_batch(texts)]
    assert batch == single and sum(map(bool, single)) == 4 * len(OWN) + 1
    records = [("s", str(i), t) for i, t in enumerate(texts * 3)]
    keep1, rep1 = decontam.decontaminate(records, decon, batch_rows=5)
    keep2, rep2 = decontam.decontaminate(records, decon, workers=2, batch_rows=5)
    assert keep1 == keep2 and rep1 == rep2 and rep1["n_flagged"] == 3 * (4 * len(OWN) + 1)
    assert decontam.auto_workers(1000) == 1 and decontam.auto_workers(10**9) >= 1
