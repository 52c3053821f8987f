"""eval.run's predictions file and resume: resumed predictions checked against the current prompts,
files of another model or backend refused, torn and legacy lines, the model key, UTF-8 bytes
(closes mutmut survivors of eval/run.py with test_mut_eval_run.py)."""
from __future__ import annotations

import json
import os

import pytest

from core.benchmarks import load_benchmark
from core.runs import RunError
from eval.protocols import get_protocol
from eval.run import evaluate, model_key, read_predictions, select_questions
from mut_eval_run_support import Fake, PROTO, cfg, expected, model_dir, pred_path, tok  # noqa: F401  (fixtures too)


def test_resume_scores_exactly_what_changed(model_dir, tok, tmp_path):
    c = cfg(model_dir, tmp_path, limit=3)
    first = evaluate(c, backend=Fake(tok), quiet=True)
    again = Fake(tok)
    assert evaluate(c, backend=again, quiet=True)["acc_micro"] == first["acc_micro"] and again.scored == 0
    # two lines written for other prompts (a changed template, fewer shots ...) and a torn last line
    p = pred_path(tmp_path)
    lines = p.read_text(encoding="utf-8").splitlines()
    stale = [json.loads(lines[i])["id"] for i in (1, 7)]
    for i in (1, 7):
        rec = json.loads(lines[i])
        rec["prompt_sha256"], rec["pred"] = "0" * 64, "Z"
        lines[i] = json.dumps(rec, ensure_ascii=False)
    p.write_text("\n".join(lines) + '\n{"id": "torn', encoding="utf-8")
    redo = Fake(tok)
    r = evaluate(c, backend=redo, quiet=True)
    assert redo.scored == 2 and r["acc_micro"] == first["acc_micro"] and r["per_subject"] == first["per_subject"]
    want = expected(tok, 3)
    done = read_predictions(p, f"{PROTO}@{get_protocol(PROTO).version}", model_key(r["model"], "hf"))
    assert set(done) == set(want) and all(done[i]["prompt_sha256"] == want[i][1].sha256 for i in want)
    assert all(done[i]["pred"] != "Z" for i in stale) and p.read_bytes().endswith(b"\n")
    # resume=false starts over; a crash leaves no result file behind, even a stale one
    fresh = Fake(tok)
    evaluate(cfg(model_dir, tmp_path, limit=3, resume=False), backend=fresh, quiet=True)
    assert fresh.scored == 12 and len(p.read_text().splitlines()) == 12
    p.write_text("\n".join(p.read_text().splitlines()[:5]) + "\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="crash"):
        evaluate(c, backend=Fake(tok, crash_after=1), quiet=True)
    assert not (tmp_path / f"demo.{PROTO}.json").exists()
    assert len(p.read_text().splitlines()) == 5 + 1       # the one finished call's line was kept


def test_predictions_of_another_model_or_backend(model_dir, tok, tmp_path):
    c = cfg(model_dir, tmp_path, limit=2)
    r = evaluate(c, backend=Fake(tok), quiet=True)
    p, key = pred_path(tmp_path), model_key(r["model"], "hf")
    tag = f"{PROTO}@{get_protocol(PROTO).version}"
    lines = p.read_text(encoding="utf-8").splitlines()
    legacy = json.loads(lines[0])
    legacy["model_key"] = key.partition(":")[2]            # written before the key named the backend
    p.write_text("\n".join([json.dumps(legacy)] + lines[1:]) + "\n\n", encoding="utf-8")
    assert set(read_predictions(p, tag, key)) == {json.loads(x)["id"] for x in lines[1:]}
    assert len(p.read_text().splitlines()) == len(lines) - 1       # the legacy line left the file
    redo = Fake(tok)
    evaluate(c, backend=redo, quiet=True)
    assert redo.scored == 1
    other = json.loads(lines[2])
    other["model_key"] = "vllm:" + key.partition(":")[2]
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(other) + "\n")
    n = len(p.read_text().splitlines())
    with pytest.raises(RunError) as e:
        read_predictions(p, tag, key)
    assert str(e.value) == (f"{p}:{n}: written for protocol {tag} / another model or backend (key "
                            f"{other['model_key']!r}, this run's {key!r}); delete it or pass resume=false")
    with pytest.raises(RunError) as e:
        read_predictions(p, "other@1", key)
    assert str(e.value).startswith(f"{p}:1: written for protocol {tag} / another")
    p.write_text(lines[0] + "\n{not json\n", encoding="utf-8")
    with pytest.raises(RunError) as e:
        read_predictions(p, tag, key)
    assert str(e.value) == f"{p}:2: not valid JSON; delete the file or pass resume=false"
    assert read_predictions(tmp_path / "none.jsonl", tag, key) == {}


def test_model_key_and_question_selection(model_dir, tmp_path):
    import shutil
    from core.runs import Run, RunOptions
    from eval.run import describe_model
    run = Run.create("pretrain", "tiny", RunOptions(root=str(tmp_path), name="r"))
    shutil.copytree(model_dir, run.path / "model")
    run.finish(steps=0, tokens_seen=0)
    tiny_run_dir = run.path
    _, rec = describe_model(str(model_dir))
    size = (model_dir / "model.safetensors").stat().st_size
    assert model_key(rec, "hf") == f"hf:{model_dir.resolve()}|model.safetensors:{size}"
    _, run_rec = describe_model(str(tiny_run_dir))
    assert model_key(run_rec, "vllm") == "vllm:" + run_rec["manifest_sha256"][:16]
    assert model_key({"path": "org/name", "manifest_sha256": None}, "hf") == "hf:org/name"
    bench = load_benchmark("demo")
    assert select_questions(bench, 0) == list(bench.questions)
    two = select_questions(bench, 2)
    assert [q.id for q in two] == [q.id for s in bench.subjects for q in [x for x in bench.questions
                                                                           if x.subject == s][:2]]


# ---- the result's remaining fields, the printed lines, and what evaluate hands on ----------------------
def test_predictions_file_is_utf8_text_whatever_the_locale(tmp_path, monkeypatch):
    """Lines are appended as UTF-8 JSON with the Chinese text as is (not \\u escapes), also on a machine
    whose locale encoding is not UTF-8: `open` here defaults to Latin-1 the way such a locale would."""
    import builtins
    import eval.run as er

    def latin1_locale_open(file, mode="r", *a, encoding=None, **kw):
        return builtins.open(file, mode, *a, **kw) if "b" in mode else \
            builtins.open(file, mode, *a, encoding=encoding or "latin-1", **kw)
    monkeypatch.setattr(er, "open", latin1_locale_open, raising=False)
    p = tmp_path / "p.jsonl"
    p.write_bytes(b'{"id": "0"}\n')
    rows = [{"id": "1", "generated": "答案是B", "pred": "B"}, {"id": "2", "generated": "é", "pred": None}]
    er._append(p, rows)
    er._append(p, [])
    want = b'{"id": "0"}\n' + '{"id": "1", "generated": "答案是B", "pred": "B"}\n{"id": "2", "generated": "é", "pred": null}\n'.encode("utf-8")
    assert p.read_bytes() == want


def test_model_key_of_a_relative_folder_is_its_resolved_path(model_dir, tmp_path, monkeypatch):
    import shutil
    shutil.copytree(model_dir, tmp_path / "m")
    (tmp_path / "m" / "extra.safetensors").write_bytes(b"12345")
    monkeypatch.chdir(tmp_path)
    size = (model_dir / "model.safetensors").stat().st_size
    want = f"vllm:{(tmp_path / 'm').resolve()}|extra.safetensors:5|model.safetensors:{size}"
    assert model_key({"path": "m", "manifest_sha256": None}, "vllm") == want
    assert model_key({"path": "./m/../m", "manifest_sha256": None}, "vllm") == want
    # a path that is no folder (a hub id, a single file) is the key as given, with no weights listed
    assert model_key({"path": "m/extra.safetensors", "manifest_sha256": None}, "hf") == "hf:m/extra.safetensors"
    assert model_key({"path": "m", "manifest_sha256": "0123456789abcdef0123"}, "hf") == "hf:0123456789abcdef"


def test_read_predictions_blank_lines_and_a_corrupt_line_before_a_torn_one(tmp_path):
    tag, key = f"{PROTO}@1", "hf:k"
    rows = [{"id": str(i), "protocol": tag, "model_key": key, "pred": "A"} for i in range(3)]
    p = tmp_path / "p.jsonl"
    text = json.dumps(rows[0]) + "\n\n   \n" + json.dumps(rows[1]) + "\n\n" + json.dumps(rows[2]) + "\n"
    p.write_text(text, encoding="utf-8")
    os.utime(p, (1_000_000_000, 1_000_000_000))
    assert read_predictions(p, tag, key) == {r["id"]: r for r in rows}    # blank lines are skipped, not the end
    assert p.read_text(encoding="utf-8") == text                           # no legacy line, nothing torn:
    assert p.stat().st_mtime == 1_000_000_000                              # the file is not even written
    # a torn tail is cut even when the line before it is broken too; that line is then the error
    p.write_bytes(json.dumps(rows[0]).encode() + b'\n{"id": "1", XX\nXX')
    with pytest.raises(RunError, match=r":2: not valid JSON"):
        read_predictions(p, tag, key)
    assert p.read_bytes() == json.dumps(rows[0]).encode() + b'\n{"id": "1", XX\n'


def test_a_prediction_the_backend_left_out_is_never_taken_from_the_old_file(model_dir, tok, tmp_path):
    c = cfg(model_dir, tmp_path, limit=1)
    evaluate(c, backend=Fake(tok), quiet=True)
    p = pred_path(tmp_path)
    lines = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]
    lines[0]["prompt_sha256"] = "0" * 64                  # its prompt changed: it must be scored again
    p.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")

    class Short(Fake):
        def score_subject(self, prefix, suffixes):
            return []                                     # a broken backend: no scores at all
    with pytest.raises(KeyError):
        evaluate(c, backend=Short(tok), quiet=True)
    assert not (tmp_path / f"demo.{PROTO}.json").exists()
