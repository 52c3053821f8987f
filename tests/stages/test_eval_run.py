"""eval.run end to end on the tiny model: result schema (the core/results.py contract), prefix reuse ==
no reuse, GQA without global switches, resume, the generation protocols' parsing, bad model folders
and config values, compare and ablation."""
import json
import os
import shutil

import pytest
import torch

from core.benchmarks import load_benchmark, load_spec
from core.results import SchemaError, load_result
from core.runs import RunError
from eval.backends import hf
from eval.backends.hf import ATTN_PAIR_COST, HFBackend, pack_rows
from eval.protocols import build_prompt, get_protocol
from eval.run import EvalConfig, evaluate, main

DEMO = "eval/benchmarks/demo.yaml"


def cfg(model, out, **kw):
    c = EvalConfig(bench=load_spec("demo"), model=str(model), out_dir=str(out), bootstrap_samples=200, **kw)
    return c


def test_run_folder_result_schema(tiny_run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    r = main([DEMO, f"model={run}", "limit=4", "batch_size=3"])
    path = run / "eval" / "demo.base-5shot-logits.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(r))
    for k in ("schema_version", "benchmark", "benchmark_version", "split", "data_source", "subset", "n_subjects",
              "n_questions", "n_unparsed", "protocol", "model", "backend", "acc_micro", "acc_macro", "ci95",
              "per_subject", "per_category", "git_sha", "date", "predictions"):
        assert k in r
    assert (r["n_questions"], r["n_subjects"], r["subset"], r["backend"]) == (16, 4, "builtin+partial", "hf")
    assert r["model"]["run"] == str(run) and len(r["model"]["manifest_sha256"]) == 64 and r["model"]["params"] > 0
    assert r["protocol"]["name"] == "base-5shot-logits" and r["protocol"]["shots"] == 5
    assert 0 <= r["ci95"]["micro"][0] <= r["acc_micro"] <= r["ci95"]["micro"][1] <= 1
    lines = [json.loads(l) for l in (run / "eval" / r["predictions"]).read_text().splitlines()]
    assert len(lines) == 16 and all(len(l["scores"]) == 4 and len(l["prompt_sha256"]) == 16 for l in lines)
    assert r["acc_micro"] == sum(l["correct"] for l in lines) / 16
    assert all(l["pred"] == "ABCD"[max(range(4), key=lambda i: l["scores"][i])] for l in lines)
    assert load_result(path) == json.loads(path.read_text())     # what the leaderboard reads, unchanged


def test_result_is_checked_before_it_is_written(tiny_model_dir, tmp_path):
    """A result that breaks the contract (here: a benchmark spec without a name) is never written."""
    c = cfg(tiny_model_dir, tmp_path, limit=1)
    c.bench.name = ""
    with pytest.raises(SchemaError, match="field 'benchmark' must be a non-empty string"):
        evaluate(c, quiet=True)
    assert not list(tmp_path.glob("*.json"))


def test_prefix_reuse_equals_no_reuse(tiny_model_dir):
    bench = load_benchmark("demo")
    proto = get_protocol("base-5shot-logits")
    be = HFBackend(tiny_model_dir, batch_size=3)
    assert be.packing                       # SDPA model: questions packed into one row
    assert be.pack_row_tokens == 0          # the default: the row length is chosen per batch
    for subject in ("towns", "arithmetic"):
        qs = [q for q in bench.questions if q.subject == subject][:7]
        prompts = [build_prompt(proto, bench.spec, bench.subjects, q, bench.shots[subject]) for q in qs]
        be.prefix_cache = False
        plain = be.score_subject(prompts[0].prefix, [p.suffix for p in prompts])
        be.prefix_cache = True
        # packed rows (rows chosen per batch; one long row; rows of the longest question), then a padded
        # batch on the broadcast prefix cache
        for packing, row_tokens in ((True, 0), (True, 10_000), (True, 1), (False, 0)):
            be.packing, be.pack_row_tokens = packing, row_tokens
            reuse = be.score_subject(prompts[0].prefix, [p.suffix for p in prompts])
            assert be._prefix is not None and be._prefix[0] == prompts[0].prefix   # the cached path ran
            for a, b in zip(reuse, plain):
                assert a == pytest.approx(b, abs=1e-5)
                assert max(range(4), key=a.__getitem__) == max(range(4), key=b.__getitem__)
        be.packing, be.pack_row_tokens = True, 0
    # the shared prefix cache is broadcast, not copied, and scoring leaves it as it was
    _, cache = be._prefix_state(prompts[0].prefix)
    before = [l.keys.clone() for l in cache.layers]
    wide = be._cache_for(cache, 5)
    assert wide.layers[0].keys.shape[0] == 5 and wide.layers[0].keys.stride(0) == 0
    be.score_subject(prompts[0].prefix, [p.suffix for p in prompts])
    assert all(torch.equal(a, l.keys) and l.keys.shape[0] == 1 for a, l in zip(before, cache.layers))


def test_gqa_packing_mutates_nothing_shared(tiny_model_dir, monkeypatch, request):
    """On CPU the packed rows hand grouped K/V heads to SDPA as they are (enable_gqa), switched per
    forward call: same logits as transformers' own SDPA path, no environment variable set, and
    generation pads left without touching the shared tokenizer's padding_side."""
    calls = []
    real = hf.sdpa_gqa_attention

    def spy(*a, sdpa_gqa=False, **kw):
        calls.append(sdpa_gqa)
        assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
        return real(*a, sdpa_gqa=sdpa_gqa, **kw)
    monkeypatch.setattr(hf, "sdpa_gqa_attention", spy)    # use_sdpa_gqa registers this module's function
    from transformers import AttentionInterface
    request.addfinalizer(lambda: AttentionInterface.register(hf.SDPA_GQA, real))
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    be = HFBackend(tiny_model_dir, batch_size=3)
    assert be._gqa and be.packing and be.model.config.num_key_value_heads < be.model.config.num_attention_heads
    bench = load_benchmark("demo")
    proto = get_protocol("base-5shot-logits")
    qs = [q for q in bench.questions if q.subject == "towns"][:5]
    prompts = [build_prompt(proto, bench.spec, bench.subjects, q, bench.shots["towns"]) for q in qs]
    packed = be.score_subject(prompts[0].prefix, [p.suffix for p in prompts])
    n_layers = be.model.config.num_hidden_layers
    assert calls.count(True) == n_layers           # one packed forward, every layer through SDPA's GQA
    be._gqa = False                                # transformers' own path (repeat_kv under a mask)
    be._prefix = None
    assert be.score_subject(prompts[0].prefix, [p.suffix for p in prompts]) == packed    # bit for bit
    assert calls.count(True) == n_layers
    sides, tok_call = [], type(be.tokenizer).__call__

    def tokenize(self, *a, **kw):
        sides.append((self.padding_side, kw.get("padding_side")))
        return tok_call(self, *a, **kw)
    monkeypatch.setattr(type(be.tokenizer), "__call__", tokenize)
    texts = be.generate(["你好", "以下是一道很长很长的单选题"], max_new_tokens=2)
    assert len(texts) == 2 and sides == [("right", "left")]   # left padding asked for, not set on the tokenizer
    with pytest.raises(TypeError):                 # a misspelled setting is an error, not swallowed
        HFBackend(tiny_model_dir, batchsize=3)


def test_pack_rows():
    lengths = [30, 5, 12, 40, 7, 33, 9, 21]
    for row_tokens in (0, 1, 40, 64, 10_000):
        rows = pack_rows(lengths, n_prefix=200, row_tokens=row_tokens)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))    # each question once
        cap = max(row_tokens, max(lengths)) if row_tokens else 1024
        assert all(sum(lengths[i] for i in r) <= cap for r in rows)
    # chosen per batch (0): several questions share a row, with less padding than a row per question
    auto = pack_rows(lengths, n_prefix=200)
    assert len(auto) < len(lengths)
    assert len(auto) * max(sum(lengths[i] for i in r) for r in auto) < len(lengths) * max(lengths)
    # rows no longer than the longest question, first fit, longest first
    assert pack_rows(lengths, 200, 1) == [[3], [5, 4], [0, 6], [7, 2, 1]]
    assert len(pack_rows(lengths, 200, 10_000)) == 1                       # everything in one row
    assert len(pack_rows(lengths, 200, 64)) == 3                           # first fit, longest first: 157 tokens
    # row_tokens=0 picks the row length of least estimated cost (padding against attention)
    lengths = [(i * 37) % 71 + 20 for i in range(40)]

    def cost(rows, n):
        width = max(sum(lengths[i] for i in r) for r in rows)
        return len(rows) * width * (1 + ATTN_PAIR_COST * (n + width))
    for n in (0, 250, 5000):
        best = cost(pack_rows(lengths, n), n)
        assert all(best <= cost(pack_rows(lengths, n, cap), n) for cap in (90, 100, 128, 200, 256, 512, 1024))
        assert best < cost(pack_rows(lengths, n, 1), n) and best < cost(pack_rows(lengths, n, 10_000), n)


class Crash(Exception):
    pass


class CountingBackend:
    """Wraps a real backend; counts scored questions and can crash after n calls."""
    def __init__(self, inner, crash_after=None):
        self.inner, self.crash_after, self.calls, self.scored = inner, crash_after, 0, 0
        self.name, self.tokenizer = "hf", inner.tokenizer

    def score_subject(self, prefix, suffixes):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise Crash()
        self.calls += 1
        self.scored += len(suffixes)
        return self.inner.score_subject(prefix, suffixes)


def test_resume_from_predictions(tiny_model_dir, tmp_path):
    inner = HFBackend(tiny_model_dir, batch_size=2)
    c = cfg(tiny_model_dir, tmp_path, limit=5, batch_size=2)     # 4 subjects x 5, one chunk (<= 8) each
    with pytest.raises(Crash):
        evaluate(c, backend=CountingBackend(inner, crash_after=2), quiet=True)
    pred = tmp_path / "demo.base-5shot-logits.predictions.jsonl"
    assert len(pred.read_text().splitlines()) == 10 and not (tmp_path / "demo.base-5shot-logits.json").exists()
    with open(pred, "a") as f:
        f.write('{"id": "torn')                                      # a crash mid-write
    again = CountingBackend(inner)
    r = evaluate(c, backend=again, quiet=True)
    assert again.scored == 10 and r["n_questions"] == 20
    fresh = evaluate(cfg(tiny_model_dir, tmp_path / "fresh", limit=5), backend=CountingBackend(inner), quiet=True)
    assert r["acc_micro"] == fresh["acc_micro"] and r["per_subject"] == fresh["per_subject"]
    done = CountingBackend(inner)
    evaluate(c, backend=done, quiet=True)
    assert done.scored == 0                                          # nothing left to score
    shutil.copytree(tiny_model_dir, tmp_path / "other_model")   # another model, same output folder
    with pytest.raises(RunError, match="another model"):
        evaluate(cfg(tmp_path / "other_model", tmp_path, limit=5), backend=done, quiet=True)


class CannedBackend:
    name = "hf"

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.prompts = tokenizer, replies, []

    def generate(self, prompts, max_new_tokens):
        self.prompts += prompts
        return [self.replies[(len(self.prompts) - len(prompts) + i) % len(self.replies)] for i in range(len(prompts))]


def test_generation_protocols_parse_and_report(tiny_model_dir, tiny_tokenizer, tmp_path):
    bench = load_benchmark("demo")
    golds = {q.id: q.answer for q in bench.questions}
    be = CannedBackend(tiny_tokenizer, ["答案是A", "我不知道", "选 B。", "C"])
    r = evaluate(cfg(tiny_model_dir, tmp_path, protocol="chat-0shot-gen", limit=2, batch_size=4), backend=be, quiet=True)
    lines = [json.loads(l) for l in (tmp_path / r["predictions"]).read_text().splitlines()]
    assert [l["pred"] for l in lines] == ["A", None, "B", "C"] * 2
    assert r["n_unparsed"] == 2 and r["n_fallback"] == 0
    assert r["acc_micro"] == sum(l["pred"] == golds[l["id"]] for l in lines) / 8
    assert all("<|im_start|>assistant\n" in p for p in be.prompts)
    steel = evaluate(cfg(tiny_model_dir, tmp_path, protocol="steel-compat", limit=2), backend=be, quiet=True)
    assert steel["n_unparsed"] == 0 and steel["n_fallback"] >= 2 and "STEEL-COMPAT" in steel["protocol"]["label"]


def test_bad_model_folders(tiny_model_dir, tmp_path, capsys):
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    for f in tiny_model_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, no_weights / f.name)
    with pytest.raises(SystemExit):
        main([DEMO, f"model={no_weights}", f"out_dir={tmp_path / 'o1'}"])
    assert "no model weights" in capsys.readouterr().err and not (tmp_path / "o1" / "demo.base-5shot-logits.json").exists()
    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    for f in tiny_model_dir.iterdir():
        if not f.name.startswith(("tokenizer", "chat_template", "special")):
            shutil.copy(f, no_tok / f.name)
    with pytest.raises(SystemExit):
        main([DEMO, f"model={no_tok}", f"out_dir={tmp_path / 'o2'}"])
    assert "no tokenizer files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:           # one line on stderr, exit code 2, no traceback
        main([DEMO, f"model={tiny_model_dir}", "protocol=zero-shot", f"out_dir={tmp_path / 'o3'}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("config error: unknown protocol 'zero-shot'") and "Traceback" not in err


def test_compare_and_ablation(tiny_model_dir, tiny_tokenizer, tmp_path, capsys):
    from eval.ablation import AblationConfig, run_ablation
    from eval.compare import main as compare_main
    be = CannedBackend(tiny_tokenizer, ["答案是A", "B", "答案：C", "D"])
    # max_len: the tiny model's 512 positions leave no room for CoT's 512 new tokens (a config error)
    a = AblationConfig(bench=load_spec("demo"), model=str(tiny_model_dir), out_dir=str(tmp_path), limit=3,
                       protocols=["chat-0shot-gen", "chat-0shot-cot"], bootstrap_samples=100, max_len=2048)
    doc = run_ablation(a, backend=be, quiet=True)
    assert [r["protocol"] for r in doc["rows"]] == ["chat-0shot-gen", "chat-0shot-cot"]
    assert "vs_first" in doc["rows"][1] and (tmp_path / "demo.ablation.md").read_text().count("| chat-0shot") == 2
    c = compare_main([str(tmp_path / "demo.chat-0shot-gen.json"), str(tmp_path / "demo.chat-0shot-cot.json"),
                      "--samples", "200"])
    assert c["n_shared"] == 12 and "McNemar" in capsys.readouterr().out
