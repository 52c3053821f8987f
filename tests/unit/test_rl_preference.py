"""Preference data (data_recipes/preference.py): layouts, bad rows with file and line, dedupe, recipes,
hub names with local alternatives, and the real files in ../shared/data/dpo."""
from __future__ import annotations

import json

import pytest

from data_recipes.preference import (PreferenceDataError, load_recipe, load_sources, normalise_row, read_records)
from conftest import shared_path


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_the_three_layouts_normalise_to_the_same_row():
    plain = {"prompt": "1加1等于几？", "chosen": "等于2。", "rejected": "等于3。", "system": "你是助手。"}
    sharegpt = {"conversations": [{"from": "system", "value": "你是助手。"}, {"from": "human", "value": "1加1等于几？"}],
                "chosen": {"from": "gpt", "value": "等于2。"}, "rejected": "等于3。"}
    messages = {"messages": [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "1加1等于几？"}],
                "chosen": [{"role": "assistant", "content": "等于2。"}], "rejected": {"role": "assistant", "content": "等于3。"}}
    implicit = {"chosen": messages["messages"] + [{"role": "assistant", "content": "等于2。"}],
                "rejected": messages["messages"] + [{"role": "assistant", "content": "等于3。"}]}
    rows = [normalise_row(r) for r in (plain, sharegpt, messages, implicit)]
    assert all(r == rows[0] for r in rows)
    assert rows[0]["prompt"][0] == {"role": "system", "content": "你是助手。"}
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "等于2。"}]


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    f = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "好问题", "chosen": "好回答", "rejected": "坏回答"},
        {"prompt": "缺少chosen", "rejected": "坏回答"},
        {"prompt": "一样的回答", "chosen": "相同", "rejected": " 相同 "},
        "{not json",
        {"conversations": [{"from": "gpt", "value": "只有助手"}], "chosen": "a", "rejected": "b"},
    ])
    with pytest.raises(PreferenceDataError) as e:
        load_sources([{"path": str(f)}])
    msg = str(e.value)
    assert "4 bad preference row(s)" in msg
    assert f"{f}:2: missing 'chosen'" in msg
    assert f"{f}:3: 'chosen' and 'rejected' are identical" in msg
    assert f"{f}:4: invalid JSON" in msg
    assert f"{f}:5: the prompt must end with a non-empty user turn" in msg
    data = load_sources([{"path": str(f)}], bad_rows="skip")
    assert len(data.rows) == 1 and [b.where for b in data.bad] == [f"{f}:{i}" for i in (2, 3, 4, 5)]
    assert data.sources["prefs"]["bad"] == 4 and data.report()["n_bad"] == 4


def test_json_array_rows_keep_their_line_numbers(tmp_path):
    rows = [{"prompt": "问一", "chosen": "甲", "rejected": "乙"}, {"prompt": "问二", "chosen": "同", "rejected": "同"}]
    f = tmp_path / "prefs.json"
    f.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    assert [w for w, _ in read_records(f)] == [f"{f}:2: row 0", f"{f}:7: row 1"]
    with pytest.raises(PreferenceDataError, match=rf"{f}:7: row 1: 'chosen' and 'rejected' are identical"):
        load_sources([{"path": str(f)}])


def test_dedupe_across_sources_first_copy_wins(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "问一", "chosen": "甲", "rejected": "乙"},
                                           {"prompt": "问二", "chosen": "甲", "rejected": "乙"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"conversations": [{"from": "system", "value": "别的系统提示"},
                                                              {"from": "human", "value": "问一 "}],
                                            "chosen": "丙", "rejected": "丁"},
                                           {"prompt": "问三", "chosen": "甲", "rejected": "乙"}])
    data = load_sources([{"path": str(a)}, {"path": str(b)}])
    assert [r["prompt"][-1]["content"] for r in data.rows] == ["问一", "问二", "问三"]
    assert data.n_duplicates == 1 and data.sources["b"]["duplicates"] == 1
    assert len(load_sources([{"path": str(a)}, {"path": str(b)}], dedupe="pair").rows) == 4
    assert data.content_hash() == load_sources([{"path": str(a)}, {"path": str(b)}]).content_hash()


def test_hub_source_uses_local_alternative_or_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "dl").mkdir()
    local = write_jsonl(tmp_path / "dl" / "x.jsonl", [{"prompt": "问", "chosen": "甲", "rejected": "乙"}])
    src = {"name": "x", "hub": "someone/prefs", "local": ["{data_root}/missing.jsonl", "{data_root}/dl/x.jsonl"]}
    data = load_sources([src], data_root=tmp_path)
    assert data.sources["x"]["origin"] == f"local:{local}"
    with pytest.raises(PreferenceDataError, match="hub is offline.*someone/prefs"):
        load_sources([{**src, "local": ["{data_root}/missing.jsonl"]}], data_root=tmp_path)


def test_recipes_load(tmp_path):
    recipe, data = load_recipe("demo")
    assert recipe["name"] == "demo" and len(data.rows) > 50 and data.n_duplicates == 0
    with pytest.raises(PreferenceDataError, match="preference recipe not found"):
        load_recipe("no_such_recipe")
    bad = tmp_path / "r.yaml"
    bad.write_text("sources: []\nweights: 1\n")
    with pytest.raises(PreferenceDataError, match="non-empty 'sources'.*weights"):
        load_recipe(str(bad))


def test_shared_dpo_files_load_and_dedupe():
    demo = shared_path("dpo", "dpo_zh_demo.json")
    m500 = shared_path("dpo", "dpo_zh_500.jsonl")
    only_demo = load_sources([{"path": str(demo)}])
    only_500 = load_sources([{"path": str(m500)}])
    both = load_sources([{"path": str(demo)}, {"path": str(m500)}])
    # dpo_zh_demo repeats some prompts of its own; the two files share prompts too (SOURCES.md).
    assert only_demo.sources["dpo_zh_demo"]["read"] == 300 and only_demo.n_duplicates > 0
    shared = len(only_demo.rows) + len(only_500.rows) - len(both.rows)
    assert shared > 0 and both.sources["dpo_zh_500"]["duplicates"] == shared
    keys = [r["prompt"][-1]["content"].strip() for r in both.rows]
    assert len(keys) == len(set(keys))
    assert any(r["prompt"][0]["role"] == "system" for r in both.rows)     # system turns survive
    recipe, data = load_recipe("zh_pref_small", data_root=demo.parent.parent)
    assert len(data.rows) == len(both.rows)
