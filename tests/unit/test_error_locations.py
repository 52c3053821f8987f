"""Every bad input gets its location: an operator parameter of the wrong type names the operator,
the parameter and the type; a build where nothing survives names the first file:line it
quarantined; a row of a JSON array is `file:line: row N` even when the whole array is on one line,
in the SFT, preference (DPO) and RL prompt loaders; invalid UTF-8 gets file:line, not a traceback."""
from __future__ import annotations

import json

import pytest
import yaml

from data_recipes.clean import Chain, OperatorError
from data_recipes.preference import PreferenceDataError, load_sources
from data_recipes.rl_prompts import PromptDataError, read_mcq_file
from data_recipes.sft_mix import MixError, load_mix, load_recipe

OPS = [{"name": "nfkc_normalize"}, {"name": "whitespace_normalize"}]


@pytest.mark.parametrize("op, message", [
    ({"name": "length_filter", "min_chars": "ten"}, "clean.operators[2] (length_filter): min_chars must be an integer, got 'ten'"),
    ({"name": "length_filter", "max_chars": 1.5}, "clean.operators[2] (length_filter): max_chars must be an integer, got 1.5"),
    ({"name": "cjk_ratio_filter", "min_ratio": "high"}, "clean.operators[2] (cjk_ratio_filter): min_ratio must be a number"),
    ({"name": "nfkc_normalize", "keep_fullwidth_punct": "yes"},
     "clean.operators[2] (nfkc_normalize): keep_fullwidth_punct must be true or false"),
    ({"name": "traditional_to_simplified", "backend": 3},
     "clean.operators[2] (traditional_to_simplified): backend must be a string, got 3"),
])
def test_operator_parameter_types(op, message):
    with pytest.raises(OperatorError) as e:
        Chain([*OPS, op])
    assert str(e.value).startswith(message) and e.value.kind == "config"


def test_operator_parameters_of_the_right_type_pass():
    chain = Chain([*OPS, {"name": "length_filter", "min_chars": 2, "max_chars": 0},
                   {"name": "cjk_ratio_filter", "min_ratio": 1}])        # an int where a float is expected is fine
    assert chain("好的好的")[1] is None and chain("ok")[1] == "cjk_ratio_filter"


def test_a_plugin_operator_is_checked_by_its_annotations():
    from data_recipes.clean import REGISTRY, operator

    @operator("test_max_urls", kind="filter")
    def max_urls(text: str, limit: int = 3) -> str | None:
        return None
    try:
        with pytest.raises(OperatorError, match=r"\(test_max_urls\): limit must be an integer, got '3'"):
            Chain([{"name": "test_max_urls", "limit": "3"}])
    finally:
        REGISTRY.pop("test_max_urls")


def test_nothing_survives_names_the_quarantined_file_and_line(tmp_path, user_error):
    from data_recipes.build import main
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"text": "\xff\xfe not utf-8"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"sources": [{"path": str(corpus)}]}))
    err = user_error(main, [str(recipe), f"run.root={tmp_path / 'runs'}"])
    assert err.startswith("data error: no documents survived cleaning (input:utf8 1); "
                          f"first rejected: {corpus}:1 (input:utf8: invalid UTF-8 at byte offset 10"), err
    assert not (tmp_path / "runs").exists()          # nothing written, not even the lock beside the folder


# ---- JSON arrays on one line ---------------------------------------------------------------------
def _one_line(path, rows):
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")   # the whole array on line 1
    return path


def test_sft_rows_of_a_one_line_array_have_their_index(tmp_path):
    good = {"instruction": "问题", "output": "回答"}
    _one_line(tmp_path / "a.json", [good, good, {"instruction": "缺输出"}] + [good] * 7)   # 1 bad of 10: tolerated
    recipe = tmp_path / "t.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "data_root": str(tmp_path), "decontam": {"enabled": False},
                                      "sources": [{"name": "a", "format": "alpaca", "path": "a.json"}]},
                                     allow_unicode=True), encoding="utf-8")
    r = load_mix(load_recipe(recipe))
    assert [p["where"] for p in r.problems] == [f"{tmp_path / 'a.json'}:1: row 2"]
    (tmp_path / "a.json").write_text('[{"instruction": "a", "output": "b"}, {"instruction": ]', encoding="utf-8")
    with pytest.raises(MixError, match=r"a\.json:1:\d+: row 1: invalid JSON"):
        load_mix(load_recipe(recipe))


def test_preference_rows_of_a_one_line_array_have_their_index(tmp_path):
    f = _one_line(tmp_path / "p.json", [{"prompt": "问", "chosen": "甲", "rejected": "乙"},
                                        {"prompt": "问二", "chosen": "甲"}])
    with pytest.raises(PreferenceDataError, match=rf"{f}:1: row 1: missing 'rejected'"):
        load_sources([{"path": str(f)}])


def test_rl_prompt_rows_of_a_one_line_array_have_their_index(tmp_path):
    row = {"question": "1+1=?", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "B"}
    f = _one_line(tmp_path / "mcq.json", [row, row, {**row, "answer": "E"}])
    with pytest.raises(PromptDataError, match=rf"^{f}:1: row 2: answer 'E' is not one of A-D"):
        read_mcq_file(f)
    assert [r["where"] for r in read_mcq_file(_one_line(tmp_path / "ok.json", [row, row]))] == \
        [f"{tmp_path / 'ok.json'}:1: row 0", f"{tmp_path / 'ok.json'}:1: row 1"]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_invalid_utf8_gets_file_and_line_in_every_loader(tmp_path, suffix):
    f = tmp_path / f"bad{suffix}"
    f.write_bytes(b'[\n{"prompt": "ok", "chosen": "a", "rejected": "b"},\n{"prompt": "\xff"}]\n' if suffix == ".json"
                  else b'{"prompt": "ok", "chosen": "a", "rejected": "b"}\n{"prompt": "\xff"}\n')
    line = 3 if suffix == ".json" else 2
    with pytest.raises(PreferenceDataError, match=rf"{f}:{line}: invalid UTF-8"):
        load_sources([{"path": str(f)}])
    with pytest.raises(PromptDataError, match=rf"{f}:{line}: invalid UTF-8"):
        read_mcq_file(f)
    recipe = tmp_path / "t.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "data_root": str(tmp_path), "decontam": {"enabled": False},
                                      "sources": [{"name": "b", "format": "alpaca", "path": f.name}]}))
    with pytest.raises(MixError, match=rf"{f}:{line}: invalid UTF-8"):
        load_mix(load_recipe(recipe))
