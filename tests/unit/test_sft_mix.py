"""SFT mixtures: determinism, caps and weights, bad-row reporting with file:line, structural errors,
filters, LLaMA-Factory export, and the real zh_mix_small sources from ../shared/data/sft."""
import json
import random

import pytest
import yaml

from conftest import shared_path
from data_recipes import sft_mix
from data_recipes.sft_mix import MixError, load_mix, load_recipe


def _write_recipe(tmp_path, sources, **extra):
    doc = {"name": "t", "data_root": str(tmp_path), "identity": {"name": "知微", "author": "测试组"},
           "decontam": {"benchmarks": {"demo": ""}}, "sources": sources, **extra}
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return p


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")


def test_demo_mix_is_deterministic_and_seed_dependent():
    a, b = load_mix(load_recipe("demo")), load_mix(load_recipe("demo"))
    assert [e.messages for e in a.examples] == [e.messages for e in b.examples] and a.hash == b.hash
    c = load_mix(load_recipe("demo", ["seed=7"]))
    assert [e.messages for e in c.examples] != [e.messages for e in a.examples]
    assert len(c.examples) == len(a.examples) and c.hash != a.hash
    # weight 2.0 on identity: every identity conversation twice
    assert a.stats["identity"]["sampled"] == 2 * a.stats["identity"]["kept"]
    assert {e.source for e in a.examples} == {"chat", "exam", "identity"}


def test_recipe_hash_follows_content_not_location(tmp_path):
    import shutil
    src = sft_mix.REPO_ROOT / "data_recipes" / "demo" / "sft"
    for name in ("chat.jsonl", "exam_alpaca.jsonl"):
        shutil.copy(src / name, tmp_path / name)
    here = load_mix(load_recipe("demo"))
    moved = load_mix(load_recipe("demo", [f"data_root={tmp_path}"]))
    assert moved.hash == here.hash
    with open(tmp_path / "chat.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "新问题"},
                                         {"role": "assistant", "content": "新回答"}]}, ensure_ascii=False) + "\n")
    assert load_mix(load_recipe("demo", [f"data_root={tmp_path}"])).hash != here.hash


def test_sample_cap_and_weight():
    rng = random.Random(0)
    xs = list(range(10))
    assert sft_mix.sample(xs, 4, 1.0, rng) == sorted(sft_mix.sample(xs, 4, 1.0, random.Random(0)))
    assert len(sft_mix.sample(xs, 4, 1.0, rng)) == 4
    out = sft_mix.sample(xs, 0, 2.5, rng)
    assert len(out) == 25 and all(out.count(x) >= 2 for x in xs)
    assert len(sft_mix.sample(xs, 0, 0.5, rng)) == 5


def test_bad_rows_counted_with_file_and_line(tmp_path):
    good = {"instruction": "问题", "output": "回答"}
    _jsonl(tmp_path / "a.jsonl", [good, {"instruction": "缺输出"}, good, good, good, good, good, good,
                                  {"instruction": "", "output": "空问题"}, good])
    (tmp_path / "b.json").write_text(json.dumps([{"messages": [{"role": "user", "content": "问"},
                                                               {"role": "assistant", "content": "答"}]}] * 4 +
                                                [{"messages": [{"role": "assistant", "content": "先答"}]}],
                                                ensure_ascii=False, indent=1), encoding="utf-8")
    r = load_mix(load_recipe(_write_recipe(tmp_path, [
        {"name": "a", "format": "alpaca", "path": "a.jsonl"},
        {"name": "b", "format": "messages", "path": "b.json"}])))
    assert r.stats["a"]["bad"] == {"missing_fields": 2} and r.stats["a"]["kept"] == 8
    assert r.stats["b"]["bad"] == {"role_order": 1} and r.stats["b"]["kept"] == 4
    wheres = {p["where"].rsplit("/", 1)[1] for p in r.problems}
    b_text = (tmp_path / "b.json").read_text(encoding="utf-8").splitlines()
    bad_line = next(i for i, l in enumerate(b_text, 1) if "先答" in l)
    b_line = max(i for i, l in enumerate(b_text[:bad_line], 1) if l == " {")   # where that record opens
    assert {"a.jsonl:2", "a.jsonl:9", f"b.json:{b_line}: row 4"} == wheres   # the 5th element of the array


def test_too_long_needs_tokenizer_and_is_reported(tmp_path, tiny_tokenizer):
    _jsonl(tmp_path / "a.jsonl", [{"instruction": "短", "output": "短"}] * 9 + [{"instruction": "长" * 300, "output": "好"}])
    r = load_mix(load_recipe(_write_recipe(tmp_path, [{"name": "a", "format": "alpaca", "path": "a.jsonl"}],
                                           max_tokens=64)), tokenizer=tiny_tokenizer)
    assert r.stats["a"]["bad"] == {"too_long": 1}
    assert r.problems[0]["where"].endswith("a.jsonl:10") and r.problems[0]["kind"] == "too_long"
    assert all(e.input_ids and len(e.input_ids) <= 64 and len(e.labels) == len(e.input_ids) for e in r.examples)


@pytest.mark.parametrize("case,match", [
    ("unknown_format", "unknown format"),
    ("missing_file", "no file matches"),
    ("invalid_json", r"a.jsonl:2: invalid JSON"),
    ("mostly_bad", "rows are bad"),
    ("unknown_key", "unknown config key 'sources\\[0\\].colour'|unknown config key"),
])
def test_structural_errors_stop(tmp_path, case, match):
    good = {"instruction": "问", "output": "答"}
    src = {"name": "a", "format": "alpaca", "path": "a.jsonl"}
    _jsonl(tmp_path / "a.jsonl", [good] * 5)
    if case == "unknown_format":
        src["format"] = "csv_of_doom"
    elif case == "missing_file":
        src["path"] = "nope/*.jsonl"
    elif case == "invalid_json":
        _jsonl(tmp_path / "a.jsonl", [good, "{not json"])
    elif case == "mostly_bad":
        _jsonl(tmp_path / "a.jsonl", [good, {"x": 1}, {"x": 2}])
    elif case == "unknown_key":
        src["colour"] = "blue"
    with pytest.raises(MixError, match=match):
        load_mix(load_recipe(_write_recipe(tmp_path, [src])))


def test_filters_language_patterns_and_identity_fill(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"instruction": "今天天气怎么样？", "output": "今天天气很好，阳光明媚。"},
                                  {"instruction": "What is the weather?", "output": "It is sunny today."},
                                  {"instruction": "你是谁？", "output": "我是OpenAI训练的模型。"},
                                  {"instruction": "你叫什么？", "output": "我叫{{name}}，由{{author}}开发。"}])
    r = load_mix(load_recipe(_write_recipe(tmp_path, [
        {"name": "a", "format": "alpaca", "path": "a.jsonl", "fill_identity": True,
         "filters": {"lang": "zh", "exclude_patterns": ["OpenAI"]}}])))
    assert r.stats["a"]["filtered"] == {"lang": 1, "excluded_pattern": 1}
    answers = sorted(e.messages[1]["content"] for e in r.examples)
    assert answers == ["今天天气很好，阳光明媚。", "我叫知微，由测试组开发。"]
    assert sft_mix.cjk_ratio("中文abc") == 2 / 5 and sft_mix.cjk_ratio("123") == 0.0


def test_system_prompt_and_llamafactory_export(tmp_path):
    recipe = load_recipe("demo", ["system_prompt=你是知微。"])
    r = load_mix(recipe)
    assert all(e.messages[0] == {"role": "system", "content": "你是知微。"} for e in r.examples)
    info_path = sft_mix.export_llamafactory(r.examples[:10], tmp_path / "lf", "demo_mix")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    entry = info["demo_mix"]
    assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages", "system": "system"}
    assert entry["tags"]["user_tag"] == "user" and entry["tags"]["assistant_tag"] == "assistant"
    rows = json.loads((tmp_path / "lf" / entry["file_name"]).read_text(encoding="utf-8"))
    assert len(rows) == 10 and all(row["system"] == "你是知微。" for row in rows)
    for row, ex in zip(rows, r.examples[:10]):
        assert [m["role"] for m in row["messages"]][:2] == ["user", "assistant"]
        assert row["messages"] == ex.messages[1:]


def test_demo_decontam_drops_exactly_the_planted_copies():
    r = load_mix(load_recipe("demo"))
    kept, report = sft_mix.run_decontam(r)
    assert report["n_flagged"] == report["n_dropped"] == 2 * 1   # two exam rows, exam weight 1
    assert report["per_source"]["exam"]["flagged"] == 2 and report["per_benchmark"] == {"demo": 2}
    assert {e["where"].rsplit(":", 1)[1] for e in report["examples"]} == {"1", "2"}
    assert len(kept) == len(r.examples) - 2
    for key in ("policy", "threshold", "n_checked", "n_flagged", "n_dropped", "per_source", "per_benchmark", "examples"):
        assert key in report


def test_zh_mix_small_loads_from_shared_data():
    shared_path("sft", "ruozhiba_qa.json")
    shared_path("ceval", "dev")
    r = load_mix(load_recipe("zh_mix_small"))
    st = r.stats
    assert st["ruozhiba"]["rows"] == 1475 and st["alpaca_zh"]["rows"] == 1000 and st["belle"]["rows"] == 1000
    assert st["identity_lf"]["rows"] == 91 and not any(sum(s["bad"].values()) for s in st.values())
    assert st["belle"]["filtered"].get("lang", 0) > 0        # BELLE sample has translation/code prompts
    assert not any("{{name}}" in e.text() for e in r.examples)
    kept, report = sft_mix.run_decontam(r)
    assert set(report["per_benchmark"]) == {"ceval", "cmmlu"} and report["n_checked"] == len(r.examples)
    assert report["benchmarks"]["cmmlu"]["n_items"] > 5000


def test_zh_mix_recipe_on_planted_miniature_sources(tmp_path):
    """The real zh_mix recipe over tiny stand-ins of its sources: Infinity-Instruct parquet (sharegpt),
    WanJuan exam jsonl (mcq plain + cot), ruozhiba json, identity."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    conv = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]  # noqa: E731
    (tmp_path / "infinity_instruct").mkdir()
    pq.write_table(pa.Table.from_pylist([
        {"id": 1, "conversations": conv("如何学习编程？", "先学一门语言，多写代码，多读别人的程序。")},
        {"id": 2, "conversations": conv("How do I learn to code?", "Start with one language and practise.")},
        {"id": 3, "conversations": conv("你是哪个公司开发的模型？", "我是一个由OpenAI开发的大型语言模型，可以回答各种问题。")},
    ]), tmp_path / "infinity_instruct" / "part0.parquet")
    (tmp_path / "wanjuan_exam").mkdir()
    _jsonl(tmp_path / "wanjuan_exam" / "a.jsonl", [
        {"q_main": "地球绕太阳公转一周约需( )", "option_a": "一天", "option_b": "一个月", "option_c": "一年",
         "option_d": "十年", "option_e": "", "std_ans": "C", "answer_detail": "地球公转周期约为365天，即一年。故选C。"},
        {"q_main": "下列属于哺乳动物的是( )", "option_a": "鲸", "option_b": "鲨鱼", "option_c": "海豚", "option_d": "金鱼",
         "option_e": "", "std_ans": "AC", "answer_detail": "鲸和海豚用肺呼吸、胎生哺乳。"}])
    (tmp_path / "ruozhiba_qa.json").write_text(json.dumps([{"instruction": "只剩一个心脏了还能活吗？",
                                                             "output": "能，人本来就只有一个心脏。"}],
                                                           ensure_ascii=False), encoding="utf-8")
    r = load_mix(load_recipe("zh_mix", [f"data_root={tmp_path}"]))
    st = r.stats
    assert st["infinity_instruct"]["kept"] == 1
    assert st["infinity_instruct"]["filtered"] == {"lang": 1, "excluded_pattern": 1}
    assert st["wanjuan_exam_plain"]["kept"] == st["wanjuan_exam_cot"]["kept"] == 1
    assert st["wanjuan_exam_plain"]["filtered"] == {"not_single_choice": 1}
    cot = next(e for e in r.examples if e.source == "wanjuan_exam_cot")
    assert "(C) 一年" in cot.messages[0]["content"] and cot.messages[1]["content"].endswith("正确答案是C。")
    assert st["ruozhiba"]["sampled"] == 2 and st["identity"]["sampled"] == 50 * st["identity"]["kept"]
