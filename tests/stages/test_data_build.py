"""`python -m data_recipes.build` end to end on small corpora written here: report, quarantine,
tokenizer, token-exact shards, 1 vs 2 processes, cache, every bad input, every input format."""
import json
import random

import numpy as np
import pytest
import yaml

from data_recipes import build as B
from data_recipes.demo_data import _story_docs


def _corpus(tmp_path):
    """good.jsonl (with planted duplicates and junk), a byte copy of it, and bad.jsonl."""
    docs = _story_docs(random.Random(0), 60)
    junk = ["短。", "english text only, nothing chinese in this line at all.", docs[3], docs[5],
            docs[7][:-1] + "！"]                                   # 2 exact, 1 near duplicate
    d = tmp_path / "corpus"
    d.mkdir()
    good = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs + junk)
    (d / "good.jsonl").write_text(good, encoding="utf-8")
    (d / "good_copy.jsonl").write_text(good, encoding="utf-8")
    extra = _story_docs(random.Random(99), 1)[0]
    bad = (json.dumps({"text": extra}, ensure_ascii=False).encode() + b"\n"
           + b'{"text": "broken json\n'
           + b'{"text": "bad bytes \xff\xfe here"}\n'
           + b'{"content": "wrong column"}\n'
           + b'{"text": 42}\n')
    (d / "bad.jsonl").write_bytes(bad)
    return d, docs


def _run(tmp_path, recipe: dict, *args, root=None):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return B.main([str(path), f"run.root={root or tmp_path / 'runs'}", "run.name=t", *args])


def _recipe(corpus, **extra):
    r = {"data_root": str(corpus), "sources": [{"name": "c", "path": "*.jsonl"}],
         "clean": {"operators": [{"name": "nfkc_normalize"}, {"name": "whitespace_normalize"},
                                 {"name": "length_filter", "min_chars": 10},
                                 {"name": "cjk_ratio_filter", "min_ratio": 0.3}]},
         "tokenizer": {"vocab_size": 400, "heldout_every_docs": 10, "compare_baseline": False},
         "shards": {"shard_size_tokens": 3000}}
    r.update(extra)
    return r


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    corpus, docs = _corpus(tmp)
    out = _run(tmp, _recipe(corpus, tokenizer={"vocab_size": 400, "heldout_every_docs": 10}))
    return tmp, corpus, docs, out


def test_report_quarantine_and_manifest(built):
    tmp, corpus, docs, out = built
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "report.json").read_text())
    ops = {r["name"]: r for r in report["operators"]}
    assert ops["length_filter"]["dropped"] == 1 and ops["cjk_ratio_filter"]["dropped"] == 1
    assert ops["exact_dedupe"]["dropped"] == 2 and ops["near_dedupe"]["dropped"] == 1
    assert report["record_errors"] == {"json": 1, "utf8": 1, "missing_field": 1, "wrong_type": 1}
    assert report["docs_kept"] == manifest["num_docs"] == 60 + 1          # 60 stories + bad.jsonl line 1
    assert report["duplicate_files"] == [[str(corpus / "good_copy.jsonl"), str(corpus / "good.jsonl")]]
    q = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    by_loc = {r.get("loc"): r for r in q}
    assert by_loc[f"{corpus}/bad.jsonl:2"]["operator"] == "input:json"
    assert "invalid UTF-8 at byte offset" in by_loc[f"{corpus}/bad.jsonl:3"]["reason"]
    assert "no field 'text' (fields: content)" in by_loc[f"{corpus}/bad.jsonl:4"]["reason"]
    assert by_loc[f"{corpus}/good.jsonl:63"]["operator"] == "exact_dedupe"
    assert by_loc[f"{corpus}/good.jsonl:65"]["operator"] == "near_dedupe"
    assert any(r["operator"] == "file_dedupe" for r in q)
    assert len(q) == 1 + 1 + 2 + 1 + 4 + 1                                # every rejection is there
    t = report["tokenizer"]
    assert t["ours"]["tokens"] > 0 and t["gpt2_style_baseline"]["vocab_size"] <= 400
    assert manifest["tokenizer_sha256"] and manifest["data_recipe"]["hash"] == manifest["content_hash"]


def test_trained_tokenizer_round_trip_and_chat_template(built):
    from transformers import AutoTokenizer
    out = built[3]
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    text = "小明去公园跑步，觉得很有意思。"
    assert tok.decode(tok(text)["input_ids"]) == text
    msgs = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == \
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n你好！<|im_end|>\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_shards_decode_to_the_cleaned_corpus_token_exact(built):
    from transformers import AutoTokenizer
    from data_recipes.shards import iter_documents
    out = built[3]
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    sep = tok.convert_tokens_to_ids("<|endoftext|>")
    cleaned = [json.loads(l)["text"] for l in (out / "cleaned" / "part-00000.jsonl").read_text().splitlines()]
    got = list(iter_documents(out, verify_hash=True))
    assert len(got) == len(cleaned) and len(json.loads((out / "manifest.json").read_text())["shards"]) > 1
    for ids, text in zip(got, cleaned):
        assert ids[-1] == sep and sep not in ids[:-1].tolist()
        assert ids[:-1].tolist() == tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids[:-1].tolist()) == text


def test_two_processes_identical_then_cache_hit_and_invalidation(built, capsys):
    tmp, corpus, _, out = built
    recipe = _recipe(corpus, tokenizer={"vocab_size": 400, "heldout_every_docs": 10})
    out2 = _run(tmp, recipe, "num_workers=2", "shards.batch_bytes=2000", root=tmp / "runs2")
    m1, m2 = (json.loads((o / "manifest.json").read_text()) for o in (out, out2))
    assert m1["shards"] == m2["shards"] and m1["content_hash"] == m2["content_hash"]
    for s in m1["shards"]:
        assert (out / s["file"]).read_bytes() == (out2 / s["file"]).read_bytes()
    capsys.readouterr()
    _run(tmp, recipe, "num_workers=2", root=tmp / "runs2")
    assert "cache hit" in capsys.readouterr().out
    shard = out2 / m2["shards"][0]["file"]
    shard.write_bytes(b"\x07\x00" + shard.read_bytes()[2:])              # tampered after the manifest
    _run(tmp, recipe, root=tmp / "runs2")
    printed = capsys.readouterr().out
    assert "shard changed after its manifest" in printed and "shard_00000.bin" in printed
    assert (out2 / s["file"]).read_bytes() == (out / s["file"]).read_bytes()   # rebuilt
    with open(corpus / "bad.jsonl", "ab") as f:                            # changed input
        f.write(json.dumps({"text": "一条新加的文档，内容足够长。"}, ensure_ascii=False).encode() + b"\n")
    _run(tmp, recipe, root=tmp / "runs2")
    printed = capsys.readouterr().out
    assert "inputs or recipe changed" in printed and "cache hit" not in printed
    assert json.loads((out2 / "manifest.json").read_text())["num_docs"] == m1["num_docs"] + 1


@pytest.mark.parametrize("content, message", [
    (b'{"text": "\xe4\xb8\xad\xe6\x96\x87\xe6\x96\x87\xe6\x9c\xac\xe5\x86\x85\xe5\xae\xb9\xe8\xb6\xb3\xe5\xa4\x9f"}\n{"text": oops}\n',
     "in.jsonl:2: malformed JSON"),
    (b'{"text": "ok ok ok ok ok"}\n{"text": "\xff"}\n', "in.jsonl:2: invalid UTF-8 at byte offset 37"),
    (b"", "in.jsonl: empty file"),
    (b'{"text": 1.5}\n', "in.jsonl:1: field 'text' is float"),
])
def test_bad_input_on_error_fail_names_file_and_line(tmp_path, capsys, content, message):
    d = tmp_path / "c"
    d.mkdir()
    (d / "in.jsonl").write_bytes(content)
    with pytest.raises(SystemExit) as e:
        _run(tmp_path, _recipe(d, on_error="fail"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("data error: ") and message in err
    assert not (tmp_path / "runs" / "data" / "t").exists()               # nothing looks finished
    data = tmp_path / "runs" / "data"
    assert not data.exists() or not list(data.iterdir())                 # and no temp folder left


def test_structural_errors_stop_the_run(tmp_path, capsys):
    d = tmp_path / "c"
    d.mkdir()
    (d / "in.jsonl").write_text('{"content": "中文内容足够长的一句话"}\n' * 3, encoding="utf-8")
    with pytest.raises(SystemExit):
        _run(tmp_path, _recipe(d))                                       # on_error=quarantine still stops
    assert "in.jsonl: none of its 3 records has field 'text'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run(tmp_path, _recipe(d, sources=[{"path": "missing/*.jsonl"}]))
    err = capsys.readouterr().err
    assert "path not found" in err and "missing/*.jsonl" in err
    (d / "in.jsonl").write_text('{"text": "短"}\n{"text": "也短"}\n{"oops\n', encoding="utf-8")
    with pytest.raises(SystemExit):
        _run(tmp_path, _recipe(d))
    assert "no documents survived cleaning (length_filter 2, input:json 1)" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "data" / "t").exists()


def test_every_input_format_and_hub_streaming_on_local_files(tmp_path, tiny_tokenizer):
    import pandas as pd
    import gzip
    docs = _story_docs(random.Random(1), 13)
    d = tmp_path / "c"
    d.mkdir()
    (d / "a.json").write_text(json.dumps([{"body": t} for t in docs[0:2]], ensure_ascii=False), encoding="utf-8")
    pd.DataFrame({"body": docs[2:4]}).to_csv(d / "b.csv", index=False)
    pd.DataFrame({"body": docs[4:6]}).to_parquet(d / "c.parquet")
    (d / "d.txt").write_text(docs[6], encoding="utf-8")
    (d / "lines").mkdir()
    (d / "lines" / "e.txt").write_text(docs[7] + "\n\n" + docs[8] + "\n", encoding="utf-8")
    (d / "f.jsonl").write_text("".join(json.dumps({"meta": {"body": t}}, ensure_ascii=False) + "\n"
                                       for t in docs[9:12]), encoding="utf-8")
    (d / "h.jsonl.gz").write_bytes(gzip.compress(json.dumps({"text": docs[12]}, ensure_ascii=False).encode() + b"\n"))
    (d / "g.jsonl").write_bytes(b"")                                      # empty: quarantined, reported
    recipe = _recipe(d, sources=[{"path": "a.json,b.csv,c.parquet,g.jsonl", "text_field": "body"}, {"path": "d.txt"},
                                 {"path": "lines", "txt_doc": "line"},
                                 {"name": "hub", "hub": "json", "data_files": str(d / "f.jsonl"),
                                  "text_field": "meta.body"}, {"path": "h.jsonl.gz"}],
                     tokenizer={"from_dir": str(tiny_tokenizer.saved_path), "compare_baseline": False})
    out = _run(tmp_path, recipe)
    report = json.loads((out / "report.json").read_text())
    assert report["docs_kept"] == 13 and report["sources"]["hub"]["kept"] == 3
    assert report["empty_files"] == [str(d / "g.jsonl")]
    assert '"operator": "input:empty_file"' in (out / "quarantine.jsonl").read_text()
    cleaned = [json.loads(l)["text"] for l in (out / "cleaned" / "part-00000.jsonl").read_text().splitlines()]
    assert cleaned == docs                                            # order: recipe, then files
    assert json.loads((out / "manifest.json").read_text())["vocab_size"] == len(tiny_tokenizer)


def test_tokenizer_only_mode_writes_no_manifest(tmp_path, capsys):
    from data_recipes.build import main
    corpus, _ = _corpus(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(corpus), allow_unicode=True), encoding="utf-8")
    out = main([str(path), f"run.root={tmp_path / 'runs'}", "run.name=t"], only="tokenizer")
    assert (out / "tokenizer" / "tokenizer.json").is_file() and not (out / "manifest.json").exists()
    assert not (out / "shards").exists()
    assert "tokenizer only" in capsys.readouterr().out
