"""Benchmark loaders (core/benchmarks.py) and the benchmark YAMLs."""
import json

import pytest

from core.benchmarks import BenchmarkDataError, group_members, load_benchmark, load_questions, load_spec, read_subject_csv
from tests.conftest import shared_path

CEVAL_HEAD = "id,question,A,B,C,D,answer\n"
CMMLU_HEAD = ",Question,A,B,C,D,Answer\n"


def _spec(tmp_path, layout="ceval", split="val"):
    spec = load_spec("demo")
    spec.builtin_dir, spec.layout, spec.split = "", layout, split
    (tmp_path / "subject_mapping.json").write_text(json.dumps({"s1": ["S1", "科目一", "STEM"], "s2": ["S2", "科目二", "Other"]}))
    return spec


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_specs_match_the_official_benchmarks():
    ce, cm = load_spec("ceval"), load_spec("cmmlu")
    assert (len(ce.subjects), ce.split, ce.shot_split, ce.n_shots) == (52, "val", "dev", 5)
    assert (len(cm.subjects), cm.split, cm.shot_split) == (67, "test", "dev")
    assert sorted({v[2] for v in ce.subjects.values()}) == sorted(ce.categories)
    assert len(ce.extra_groups["Hard"]) == 8 and set(ce.extra_groups["Hard"]) <= set(ce.subjects)
    assert len(cm.extra_groups["China specific"]) == 15 and set(cm.extra_groups["China specific"]) <= set(cm.subjects)


def test_local_ceval_layout_and_skip_note(tmp_path):
    spec = _spec(tmp_path)
    _write(tmp_path / "dev/s1_dev.csv", CEVAL_HEAD.replace("answer", "answer,explanation") +
           "".join(f'{i},"问题{i}\n第二行",a,b,c,d,A,解释\n' for i in range(5)))
    _write(tmp_path / "val/s1_val.csv", CEVAL_HEAD + "0,题一,甲,乙,丙,丁,C\n1,题二,甲,乙,丙,丁,d\n")
    _write(tmp_path / "dev/s2_dev.csv", CEVAL_HEAD + "0,q,a,b,c,d,A\n")
    b = load_benchmark(spec, data_dir=tmp_path)
    assert [q.answer for q in b.questions] == ["C", "D"]
    q = b.questions[0]
    assert (q.subject, q.category, q.id, q.choices) == ("s1", "STEM", "s1/val/0", ("甲", "乙", "丙", "丁"))
    assert b.shots["s1"][0].question == "问题0\n第二行" and b.shots["s1"][0].explanation == "解释"
    assert b.subset == "shared-split" and b.data_source == f"local:{tmp_path}"
    assert any("skipped s2" in n for n in b.notes)
    assert list(group_members(b)) == ["STEM"]


def test_local_cmmlu_layout(tmp_path):
    spec = _spec(tmp_path, layout="cmmlu", split="test")
    for s in ("s1", "s2"):
        _write(tmp_path / f"dev/{s}.csv", CMMLU_HEAD + "".join(f"{i},q{i},a,b,c,d,B\n" for i in range(5)))
        _write(tmp_path / f"test/{s}.csv", CMMLU_HEAD + "0,问,a,b,c,d,A\n")
    b = load_benchmark(spec, data_dir=tmp_path)
    assert len(b.questions) == 2 and b.subset == "full" and len(b.shots["s2"]) == 5


@pytest.mark.parametrize("body,msg", [
    ("id,question,A,B,C,answer\n0,q,a,b,c,A\n", "val/s1_val.csv:1: unexpected header"),
    (CEVAL_HEAD + "0,q,a,b,c,d,A\n1,q,a,b,c,d,\n", "val/s1_val.csv:3: missing answer"),
    (CEVAL_HEAD + "0,q,a,b,c,d,E\n", "val/s1_val.csv:2: answer 'E' is not one of A, B, C, D"),
    ("", "val/s1_val.csv:1: empty file"),
    (CEVAL_HEAD, "val/s1_val.csv:2: no questions"),
    (CEVAL_HEAD + '0,"multi\nline",a,b,c,d,A\n1,q,a,b,c,d,X\n', "val/s1_val.csv:4: answer 'X'"),
])
def test_bad_files_name_file_and_line(tmp_path, body, msg):
    _write(tmp_path / "val/s1_val.csv", body)
    with pytest.raises(BenchmarkDataError, match=msg.replace("(", r"\(")):
        read_subject_csv(tmp_path / "val/s1_val.csv", "ceval", "s1", "STEM", "val")


def test_builtin_demo_benchmark():
    b = load_benchmark("demo")
    assert b.subset == "builtin" and len(b.subjects) == 4 and len(b.questions) == 289
    assert all(len(v) == 5 for v in b.shots.values())


def test_shared_ceval_and_cmmlu():
    ce = load_benchmark("ceval", data_dir=shared_path("ceval"))
    assert len(ce.shots) == 36 and len(ce.questions) == 936 and ce.subset == "shared-split" and len(ce.notes) == 16
    cm = load_benchmark("cmmlu", data_dir=shared_path("cmmlu"))
    assert len(cm.subjects) == 47 and len(cm.questions) == 8334
    assert "China specific" in group_members(cm)
    every = load_questions("ceval", data_dir=shared_path("ceval"), splits=("dev", "val"))
    assert len(every) == 260 + 936


def test_every_benchmark_yaml_dry_runs():
    import glob
    import subprocess
    import sys
    from core.config import load_config
    from eval.run import EvalConfig
    files = sorted(glob.glob("eval/benchmarks/*.yaml"))
    assert len(files) == 3
    for f in files:
        cfg = load_config(EvalConfig, f, ["model=x"])
        assert cfg.bench.name and cfg.protocol == "base-5shot-logits"
    out = subprocess.run([sys.executable, "-m", "eval.run", files[0], "--dry-run"], capture_output=True, text=True)
    assert out.returncode == 0 and "resolved config for eval.run" in out.stdout
