"""Preference rows exactly: each bad-row reason, each layout's prompt/chosen/rejected against the
source file, the dedupe keys, per-source stats, recipes and hub sources (closes mutmut survivors of
data_recipes/preference.py; the equivalent ones are in tests/mutation_equivalent.md)."""
from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest

from core.runs import REPO_ROOT, shared_data_root
from data_recipes import preference as pref
from data_recipes.preference import PreferenceDataError, load_recipe, load_sources, normalise_row


def U(t): return {"role": "user", "content": t}
def A(t): return {"role": "assistant", "content": t}
def S(t): return {"role": "system", "content": t}


def row(prompt, chosen, rejected):
    return {"prompt": prompt, "chosen": [A(chosen)], "rejected": [A(rejected)]}


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


UNRECOGNISED = ("unrecognised layout (expected prompt/chosen/rejected, conversations + chosen/rejected, "
                "or messages + chosen/rejected)")
IMPLICIT = "implicit-prompt rows must differ only in the last assistant turn"


@pytest.mark.parametrize("raw,reason", [
    ("x", "a row must be a JSON object, got str"),
    ({"prompt": "p", "chosen": "", "rejected": "r"}, "missing 'chosen'"),
    ({"prompt": "p", "chosen": "c", "rejected": []}, "missing 'rejected'"),
    ({"prompt": "p", "chosen": 5, "rejected": "r"}, "'chosen' is neither a string nor a message (int)"),
    ({"prompt": "p", "chosen": "c", "rejected": 5}, "'rejected' is neither a string nor a message (int)"),
    ({"prompt": "p", "chosen": ["c"], "rejected": "r"}, "'chosen' is neither a string nor a message (list)"),
    ({"prompt": "p", "chosen": {"value": 5}, "rejected": "r"}, "'chosen' is neither a string nor a message (dict)"),
    ({"prompt": "p", "chosen": [{"value": 5}], "rejected": "r"}, "'chosen' is neither a string nor a message (dict)"),
    ({"messages": [U("q")], "chosen": 5, "rejected": "r"}, "'chosen' is neither a string nor a message (int)"),
    ({"messages": [U("q")], "chosen": "c", "rejected": 5}, "'rejected' is neither a string nor a message (int)"),
    ({"messages": "hi", "chosen": "c", "rejected": "r"}, "'messages' must be a non-empty list of turns"),
    ({"conversations": ["hi"], "chosen": "c", "rejected": "r"}, "'conversations[0]' is not a mapping"),
    ({"messages": [{"role": "robot", "content": "x"}], "chosen": "c", "rejected": "r"},
     "'messages[0]' has unknown role 'robot'"),
    ({"messages": [U("q"), {"role": "user"}], "chosen": "c", "rejected": "r"}, "'messages[1]' has no text content"),
    ({"prompt": [{"role": "user", "content": 1}], "chosen": "c", "rejected": "r"}, "'prompt[0]' has no text content"),
    ({"prompt": 5, "chosen": "c", "rejected": "r"}, "'prompt' is not a string"),
    ({"instruction": 5, "chosen": "c", "rejected": "r"}, "'prompt' is not a string"),
    ({"chosen": ["x"], "rejected": [A("r")]}, "'chosen[0]' is not a mapping"),
    ({"chosen": [U("q"), A("c")], "rejected": ["x"]}, "'rejected[0]' is not a mapping"),
    ({"chosen": [U("q"), A("c")], "rejected": [U("other"), A("r")]}, IMPLICIT),
    ({"chosen": [U("q"), A("c"), U("more"), A("c2")], "rejected": [U("q"), A("r")]}, IMPLICIT),
    ({"chosen": [U("q"), A("c")], "rejected": [U("q"), A("r"), U("more"), A("r2")]}, IMPLICIT),
    ({"chosen": [U("q"), A("c")], "rejected": "r"}, UNRECOGNISED),
    ({"chosen": "c", "rejected": "r"}, UNRECOGNISED),
    ({"messages": [U("q"), A("a")], "chosen": "c", "rejected": "r"}, "the prompt must end with a non-empty user turn"),
    ({"messages": [S("s")], "chosen": "c", "rejected": "r"}, "the prompt must end with a non-empty user turn"),
    ({"prompt": " ", "chosen": "c", "rejected": "r"}, "the prompt must end with a non-empty user turn"),
    ({"prompt": "p", "chosen": " ", "rejected": "r"}, "missing 'chosen' (empty text)"),
    ({"prompt": "p", "chosen": "c", "rejected": "\n"}, "missing 'rejected' (empty text)"),
    ({"prompt": "p", "chosen": "same", "rejected": " same"}, "'chosen' and 'rejected' are identical"),
])
def test_bad_row_reasons(raw, reason):
    with pytest.raises(PreferenceDataError) as e:
        normalise_row(raw)
    assert str(e.value) == reason


@pytest.mark.parametrize("raw,want", [
    ({"prompt": "q", "chosen": "c", "rejected": "r"}, row([U("q")], "c", "r")),
    ({"prompt": "q", "chosen": "c", "rejected": "r", "system": 5}, row([U("q")], "c", "r")),
    ({"prompt": "q", "chosen": "c", "rejected": "r", "system": ""}, row([U("q")], "c", "r")),
    ({"prompt": "q", "chosen": "c", "rejected": "r", "system": "sys"}, row([S("sys"), U("q")], "c", "r")),
    ({"instruction": "q", "chosen": "c", "rejected": "r"}, row([U("q")], "c", "r")),
    ({"instruction": "q", "input": "in", "chosen": "c", "rejected": "r"}, row([U("q\nin")], "c", "r")),
    ({"prompt": [S("own"), U("q")], "chosen": "c", "rejected": "r", "system": "row"}, row([S("own"), U("q")], "c", "r")),
    ({"messages": [S("own"), U("q")], "chosen": [A("c")], "rejected": {"content": "r"}, "system": "row"},
     row([S("own"), U("q")], "c", "r")),
    ({"chosen": [U("q1"), A("a1"), U("q2"), A("c")], "rejected": [U("q1"), A("a1"), U("q2"), A("r")]},
     row([U("q1"), A("a1"), U("q2")], "c", "r")),
    ({"chosen": [U("q"), A("c")], "rejected": [U("q"), A("r")], "system": "sys"}, row([S("sys"), U("q")], "c", "r")),
])
def test_layouts_exactly(raw, want):
    assert normalise_row(raw) == want


def test_dedupe_keys_written_out():
    r = row([S("s"), U("a  b\n c"), A("x"), U("d")], " yes ", "no")
    assert pref.prompt_key(r) == "user:a b c assistant:x user:d"
    assert pref.pair_key(r) == "user:a b c assistant:x user:d\x00yes\x00no"


def test_rows_stats_and_report_against_the_source_files(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", [{"prompt": "q1", "chosen": "c1", "rejected": "r1"}, "",
                                     {"prompt": "q2", "chosen": "c2", "rejected": "r2"},
                                     {"prompt": "q1", "chosen": "c1b", "rejected": "r1b"},
                                     {"prompt": "q3", "chosen": "x", "rejected": "x"},
                                     {"prompt": "q2", "chosen": "c2", "rejected": "r2"}])
    b = tmp_path / "b.json"
    b.write_text(json.dumps([{"prompt": "q4", "chosen": "c4", "rejected": "r4"},
                             {"prompt": "q5", "chosen": "c5", "rejected": "r5"},
                             {"prompt": "q6", "chosen": "c6", "rejected": "r6"}], ensure_ascii=False), encoding="utf-8")
    data = load_sources([{"path": str(a)}, {"hub": "org/b_hub", "local": str(b), "max_rows": 1}], bad_rows="skip")
    assert data.sources == {
        "a": {"origin": f"local:{a}", "read": 5, "bad": 1, "duplicates": 2, "kept": 2},
        "b_hub": {"origin": f"local:{b}", "read": 3, "bad": 0, "duplicates": 0, "kept": 1}}
    assert data.n_duplicates == 2
    # each kept row's answers are the ones on its line of the source file
    source_lines = a.read_text(encoding="utf-8").splitlines()
    for r in data.rows[:2]:
        line = json.loads(source_lines[int(r["where"].rsplit(":", 1)[1]) - 1])
        assert (r["source"], r["prompt"], r["chosen"], r["rejected"]) == ("a", [U(line["prompt"])],
                                                                          [A(line["chosen"])], [A(line["rejected"])])
    assert [r["where"] for r in data.rows] == [f"{a}:1", f"{a}:3", f"{b}:1: row 0"]
    assert data.trl_rows() == [row([U(q)], c, r) for q, c, r in (("q1", "c1", "r1"), ("q2", "c2", "r2"),
                                                                ("q4", "c4", "r4"))]
    blob = json.dumps(data.trl_rows(), ensure_ascii=False, sort_keys=True)
    assert data.content_hash() == hashlib.sha256(blob.encode("utf-8")).hexdigest()
    assert data.report() == {"n_rows": 3, "n_bad": 1, "n_duplicates": 2, "sources": data.sources,
                             "bad_examples": [f"{a}:5: 'chosen' and 'rejected' are identical"]}
    assert len(load_sources([{"path": str(a)}, {"path": str(b)}], bad_rows="skip", max_rows=4).rows) == 4


def test_dedupe_modes_and_names(tmp_path):
    f = jsonl(tmp_path / "f.jsonl", [{"prompt": "q", "chosen": "c", "rejected": "r"},
                                     {"prompt": "q", "chosen": "c2", "rejected": "r"},
                                     {"prompt": "q", "chosen": "c", "rejected": "r"}])
    assert [len(load_sources([{"path": str(f)}], dedupe=d).rows) for d in ("prompt", "pair", "none")] == [1, 2, 3]
    named = load_sources([{"name": "mine", "path": str(f)}])
    assert list(named.sources) == ["mine"] and named.rows[0]["source"] == "mine"
    for bad, reason in (({"dedupe": "all"}, "dedupe must be prompt|pair|none, got 'all'"),
                        ({"bad_rows": "drop"}, "bad_rows must be error|skip, got 'drop'")):
        with pytest.raises(PreferenceDataError) as e:
            load_sources([{"path": str(f)}], **bad)
        assert str(e.value) == reason


def test_bad_row_listing_is_cut_at_twenty(tmp_path):
    def bad_file(n):
        return jsonl(tmp_path / f"bad{n}.jsonl", [{"prompt": f"q{i}", "chosen": "x", "rejected": "x"} for i in range(n)]
                     + [{"prompt": "ok", "chosen": "c", "rejected": "r"}])
    for n, more in ((20, ""), (21, "\n  ... and 1 more"), (23, "\n  ... and 3 more")):
        f = bad_file(n)
        with pytest.raises(PreferenceDataError) as e:
            load_sources([{"path": str(f)}])
        listed = "\n".join(f"  {f}:{i + 1}: 'chosen' and 'rejected' are identical" for i in range(min(n, 20)))
        assert str(e.value) == f"{n} bad preference row(s) (set data.bad_rows=skip to drop them):\n{listed}{more}"


def test_no_usable_rows_names_every_source(tmp_path):
    f = jsonl(tmp_path / "f.jsonl", [{"prompt": "q", "chosen": "x", "rejected": "x"}])
    g = jsonl(tmp_path / "g.jsonl", [])
    with pytest.raises(PreferenceDataError) as e:
        load_sources([{"path": str(f)}, {"path": str(g)}], bad_rows="skip")
    assert str(e.value) == f"no usable preference rows in local:{f}, local:{g}"


def test_files_that_cannot_be_read(tmp_path):
    bin_ = tmp_path / "x.jsonl"
    bin_.write_bytes(b'{"prompt": "\xff"}\n')
    arr = tmp_path / "x.json"
    arr.write_text('[{"prompt": "q"', encoding="utf-8")
    for f in (bin_, arr):
        with pytest.raises(PreferenceDataError):
            pref.read_records(f)


def test_paths_and_sources(tmp_path, monkeypatch):
    assert pref.expand_path("{data_root}/x.jsonl") == shared_data_root() / "x.jsonl"
    assert pref.expand_path("{data_root}/x.jsonl", tmp_path) == tmp_path / "x.jsonl"
    assert pref.expand_path("data/x.jsonl", tmp_path) == REPO_ROOT / "data/x.jsonl"
    assert pref.recipe_path("nope.yml") == REPO_ROOT / "nope.yml"
    assert pref.recipe_path("nope.yaml") == REPO_ROOT / "nope.yaml"
    assert pref.recipe_path("demo") == pref.MIX_DIR / "demo.yaml"
    (tmp_path / "here.yaml").write_text("sources: []\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert pref.recipe_path("here.yaml") == Path("here.yaml")
    f = jsonl(tmp_path / "f.jsonl", [{"prompt": "q", "chosen": "c", "rejected": "r"}])
    assert pref.resolve_source({"name": "s", "local": str(f)}, tmp_path)[0] == f"local:{f}"
    for src, reason in (({"name": "s", "path": str(tmp_path / "none.jsonl")},
                         f"source 's': file not found: {tmp_path / 'none.jsonl'}"),
                        ({"name": "s", "local": [str(tmp_path / "none.jsonl")]},
                         "source 's' names no path, existing local file or hub dataset")):
        with pytest.raises(PreferenceDataError) as e:
            pref.resolve_source(src, tmp_path)
        assert str(e.value) == reason


def test_hub_source_offline_and_online(monkeypatch):
    src = {"name": "h", "hub": "org/prefs", "local": ["a.jsonl"]}
    for datasets_offline, hub_offline in (("1", "0"), ("0", "1")):
        monkeypatch.setenv("HF_DATASETS_OFFLINE", datasets_offline)
        monkeypatch.setenv("HF_HUB_OFFLINE", hub_offline)
        with pytest.raises(PreferenceDataError) as e:
            pref._hub_records(src)
        assert str(e.value) == ("source 'h': no local alternative exists (['a.jsonl']) and the hub is offline "
                                "(HF_DATASETS_OFFLINE=1); download org/prefs and list its path under 'local'")
    with pytest.raises(PreferenceDataError, match=r"exists \(none listed\)"):
        pref._hub_records({"name": "h", "hub": "org/prefs"})
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []

    def load_dataset(name, subset=None, split=None):
        calls.append((name, subset, split))
        return [{"prompt": "q", "chosen": "c", "rejected": "r"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert pref._hub_records(src) == [("hub:org/prefs[0]", {"prompt": "q", "chosen": "c", "rejected": "r"})]
    assert pref._hub_records({**src, "subset": "zh", "split": "dev"})[0][0] == "hub:org/prefs[0]"
    assert calls == [("org/prefs", None, "train"), ("org/prefs", "zh", "dev")]


def test_recipes(tmp_path):
    f = jsonl(tmp_path / "f.jsonl", [{"prompt": "q", "chosen": "c", "rejected": "r"},
                                     {"prompt": "q", "chosen": "c2", "rejected": "r2"},
                                     {"prompt": "q2", "chosen": "x", "rejected": "x"},
                                     {"prompt": "q3", "chosen": "c3", "rejected": "r3"}])
    rec = tmp_path / "r.yaml"
    rec.write_text("name: mine\ndescription: 偏好\nsources:\n  - path: '{data_root}/f.jsonl'\n"
                   "dedupe: none\nbad_rows: skip\n", encoding="utf-8")
    recipe, data = load_recipe(str(rec), data_root=tmp_path)
    assert recipe["name"] == "mine" and len(data.rows) == 3 and data.sources["f"]["bad"] == 1
    assert len(load_recipe(str(rec), data_root=tmp_path, max_rows=2)[1].rows) == 2
    with pytest.raises(PreferenceDataError):
        load_recipe(str(rec), data_root=tmp_path, bad_rows="error")
    rec.write_text("sources:\n  - path: '{data_root}/f.jsonl'\n", encoding="utf-8")     # defaults: prompt, error
    with pytest.raises(PreferenceDataError, match="1 bad preference row"):
        load_recipe(str(rec), data_root=tmp_path)
    recipe, data = load_recipe(str(rec), data_root=tmp_path, bad_rows="skip")
    assert recipe["name"] == "r" and len(data.rows) == 2
    for text, extra in (("sources: []\n", ""), ("sources: x\n", ""),
                        ("sources:\n  - path: f.jsonl\nextra: 1\n", "; unknown keys: ['extra']")):
        rec.write_text(text, encoding="utf-8")
        with pytest.raises(PreferenceDataError) as e:
            load_recipe(str(rec), data_root=tmp_path)
        assert str(e.value) == f"{rec}: a preference recipe needs a non-empty 'sources' list{extra}"
    known = ", ".join(sorted(p.name[:-5] for p in pref.MIX_DIR.iterdir() if p.name.endswith(".yaml")))
    with pytest.raises(PreferenceDataError) as e:
        load_recipe("no_such_mix")
    assert str(e.value) == f"preference recipe not found: {pref.MIX_DIR / 'no_such_mix.yaml'} (known: {known})"


def test_names_limits_and_identical_implicit_answers(tmp_path):
    f = jsonl(tmp_path / "f.jsonl", [{"prompt": "q", "chosen": "c", "rejected": "r"},
                                     {"prompt": "q2", "chosen": "x", "rejected": "x"},
                                     {"prompt": "q", "chosen": "c", "rejected": "r"}])
    # an empty name (a YAML `name:` left blank) falls back like a missing one; a local-only source is numbered
    g = jsonl(tmp_path / "g.jsonl", [{"prompt": "g1", "chosen": "c", "rejected": "r"},
                                     {"prompt": "g2", "chosen": "c", "rejected": "r"},
                                     {"prompt": "g3", "chosen": "x", "rejected": "x"}])
    data = load_sources([{"name": None, "path": str(f)}, {"name": "", "local": [str(g)], "max_rows": 1}],
                        bad_rows="skip", dedupe="none")
    assert list(data.sources) == ["f", "source1"] and {r["source"] for r in data.rows} == {"f", "source1"}
    # rows past a source's max_rows are still read: the bad row after the limit is counted
    assert data.sources["source1"] == {"origin": f"local:{g}", "read": 3, "bad": 1, "duplicates": 0, "kept": 1}
    same = [U("q"), A("a")]
    with pytest.raises(PreferenceDataError) as e:
        normalise_row({"chosen": same, "rejected": list(same)})
    assert str(e.value) == "'chosen' and 'rejected' are identical"


def test_content_hash_and_report_of_chinese_rows():
    rows = [{**row([U("一加一？")], "二", "三"), "source": "s", "where": "w"}]
    data = pref.PreferenceData(rows=rows, bad=[pref.BadRow(f"f:{i}", "坏") for i in range(25)])
    blob = json.dumps([row([U("一加一？")], "二", "三")], ensure_ascii=False, sort_keys=True)
    assert data.content_hash() == hashlib.sha256(blob.encode("utf-8")).hexdigest()
    assert data.report()["bad_examples"] == [f"f:{i}: 坏" for i in range(20)] and data.report()["n_bad"] == 25
