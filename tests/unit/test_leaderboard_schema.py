"""Schema checks: leaderboard/baselines.yaml (leaderboard/baselines.py), and result files (core/results.py),
each defect named with its file."""
import copy
import json
from pathlib import Path

import pytest

from core.results import SchemaError, load_result
from leaderboard.baselines import check_baseline, load_baselines

REPO = Path(__file__).resolve().parents[2]
BASELINES = REPO / "leaderboard" / "baselines.yaml"


def good_result(**over) -> dict:
    d = {"schema_version": 1, "benchmark": "ceval", "benchmark_version": "1.0", "split": "val",
         "data_source": "local:/data/ceval", "subset": "full", "n_subjects": 52, "n_questions": 1346,
         "n_unparsed": 0,
         "protocol": {"name": "base-5shot-logits", "version": 1, "shots": 5, "prompt_format": "x",
                      "scoring": "logits", "averaging": "micro+macro"},
         "model": {"name": "m", "path": "runs/sft/x/model", "run": None, "manifest_sha256": None, "params": 1000},
         "backend": "hf", "acc_micro": 0.40, "acc_macro": 0.38,
         "ci95": {"micro": [0.37, 0.43], "macro": [0.35, 0.41]},
         "per_subject": {}, "per_category": {"STEM": {"acc": 0.3, "n": 10}},
         "git_sha": None, "date": "2026-03-01T00:00:00Z", "predictions": "ceval.base-5shot-logits.predictions.jsonl"}
    d.update(over)
    return d


def test_shipped_baselines_are_valid_and_cite_sources():
    entries = load_baselines(BASELINES)
    by_model = {e["model"]: e for e in entries}
    # The numbers issue 7 lists, as (C-Eval, CMMLU).
    expected = {"Steel-LLM-chat-v2": (41.90, 36.08), "Steel-LLM-chat-v1": (38.57, 33.48),
                "Steel-LLM-1B-Chat-DPO": (42.04, 36.04), "MiniCPM-2B": (51.13, 51.07),
                "MiniCPM-1.2B": (49.14, 46.81), "MAP-Neo-7B": (56.97, 55.01), "CT-LLM-SFT-2B": (41.54, 41.48),
                "Qwen1.5-1.8B-Chat": (56.84, 54.11), "Gemma-2b-it": (32.3, 33.07), "OLMo-7B": (35.18, 35.55),
                "TinyLlama-1.1B": (25.02, 24.03), "Qwen-1.8B": (49.81, 45.32), "Llama2-7B": (32.42, 31.11),
                "Qwen-7B": (58.96, 60.35)}
    for model, (ceval, cmmlu) in expected.items():
        assert (by_model[model]["ceval"], by_model[model]["cmmlu"]) == (ceval, cmmlu), model
    # None of the published numbers was measured with one of our protocols.
    assert all(e["protocol"] == "unknown" or e["protocol"].startswith("external:") for e in entries)
    # The Steel-LLM README's MiniCPM-2B-sft-fp32 pair matches no other source's pair, and says so.
    miscited = by_model["MiniCPM-2B-sft-fp32"]
    pairs = {(e["ceval"], e["cmmlu"]) for e in entries if e is not miscited}
    assert (miscited["ceval"], miscited["cmmlu"]) not in pairs
    assert "neither" in miscited["notes"].lower()
    assert by_model["MiniCPM-2B"]["source"]["file"] == "docs/README-minicpm1-en.md"


@pytest.mark.parametrize("change, message", [
    (lambda e: e.pop("source"), "missing field 'source'"),
    (lambda e: e.update(protocol="5-shot"), "must be one of ours"),
    (lambda e: e.update(ceval=4190), "percentage"),
    (lambda e: e.update(protocol="base-5shot-logits"), "protocol_version"),
    (lambda e: e.update(source={"repo": "a/b"}), "source must be"),
    (lambda e: e.update(typo=1), "unknown key"),
    (lambda e: e.update(ceval=None, cmmlu=None), "at least one"),
])
def test_baseline_entry_defects_are_named(change, message):
    entry = copy.deepcopy(load_baselines(BASELINES)[0])
    check_baseline(entry, "x")
    change(entry)
    with pytest.raises(SchemaError, match=message):
        check_baseline(entry, "baselines.yaml: entries[0]")


def test_good_result_loads(tmp_path):
    p = tmp_path / "ceval.base-5shot-logits.json"
    p.write_text(json.dumps(good_result()))
    assert load_result(p)["acc_micro"] == 0.40


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("acc_micro"), "missing field.*acc_micro"),
    (lambda d: d.pop("subset"), "missing field.*subset"),
    (lambda d: d.update(schema_version=2), "schema_version 2"),
    (lambda d: d["protocol"].update(name="my-own-5shot"), "unknown protocol 'my-own-5shot'"),
    (lambda d: d.update(acc_micro=40.0), "fraction"),
    (lambda d: d.update(ci95={"micro": [0.45, 0.5]}), "ci95.micro"),
    (lambda d: d.update(subset="most"), "subset 'most'"),
    (lambda d: d.update(n_questions=0), "n_questions"),
    (lambda d: d.update(benchmark="cmmlu"), "file name says ceval"),
])
def test_result_defects_are_named_with_the_file(tmp_path, mutate, message):
    d = good_result()
    mutate(d)
    name = "ceval.my-own-5shot.json" if d["protocol"]["name"] == "my-own-5shot" else "ceval.base-5shot-logits.json"
    p = tmp_path / name
    p.write_text(json.dumps(d))
    with pytest.raises(SchemaError, match=message) as e:
        load_result(p)
    assert str(p) in str(e.value)


def test_invalid_json_names_file_and_line(tmp_path):
    p = tmp_path / "ceval.base-5shot-logits.json"
    p.write_text('{"schema_version": 1,\n "benchmark": }')
    with pytest.raises(SchemaError, match=r"invalid JSON at line 2") as e:
        load_result(p)
    assert str(p) in str(e.value)
