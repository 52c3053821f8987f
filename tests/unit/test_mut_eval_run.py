"""eval.run scoring against values computed by hand (mut_eval_run_support.py: a fake backend that
scores by a hash of the exact prompt, the demo prompts built directly): the result's figures
recomputed from the gold answers, batching, backends, printing (closes mutmut survivors of
eval/run.py; the resume and predictions-file side is test_mut_eval_run_resume.py, the equivalent
mutants are in tests/mutation_equivalent.md)."""
from __future__ import annotations

import json

import mut_support
import pytest

from core.benchmarks import load_benchmark, load_spec
from eval.extract import extract_choice
from eval.metrics import bootstrap_ci
from eval.protocols import build_prompt, get_protocol
from eval.run import EvalConfig, evaluate, model_key, select_questions
from mut_eval_run_support import Fake, PROTO, WholeRun, cfg, expected, letter_scores, model_dir, pred_path, tok  # noqa: F401  (fixtures too)


def test_result_and_predictions_equal_a_computation_by_hand(model_dir, tok, tmp_path):
    be = Fake(tok)
    r = evaluate(cfg(model_dir, tmp_path, limit=7, batch_size=1), backend=be, quiet=True)
    want = expected(tok, 7)
    lines = [json.loads(x) for x in pred_path(tmp_path).read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == list(want)          # subject by subject, in benchmark order
    correct, subjects = [], []
    for x in lines:
        q, p = want[x["id"]]
        sc = letter_scores(p.prefix + p.suffix)
        pred = "ABCD"[max(range(4), key=lambda i: sc[i])]
        assert (x["subject"], x["gold"], x["pred"], x["correct"], x["scores"], x["prompt_sha256"], x["shots"],
                x["fit"], x["fallback"]) == (q.subject, q.answer, pred, pred == q.answer, [round(v, 5) for v in sc],
                                              p.sha256, 5, "fits", None)
        assert x["model_key"] == model_key(r["model"], "hf") and x["protocol"] == f"{PROTO}@{get_protocol(PROTO).version}"
        correct.append(pred == q.answer)
        subjects.append(q.subject)
    assert len({x["pred"] for x in lines}) >= 3 and 0 < sum(correct) < len(correct)
    assert be.calls == [4, 3] * 4                          # 4 * batch_size questions per call, per subject
    assert r["n_questions"] == 28 and r["n_subjects"] == 4 and r["acc_micro"] == pytest.approx(sum(correct) / 28)
    for s in set(subjects):
        got = [c for c, t in zip(correct, subjects) if t == s]
        assert r["per_subject"][s]["acc"] == pytest.approx(sum(got) / len(got)) and r["per_subject"][s]["n"] == 7
    assert r["ci95"] == bootstrap_ci(correct, subjects, 50, 1234)
    assert (r["n_unparsed"], r["n_fallback"], r["partial"], r["limit_per_subject"], r["backend"]) == (0, 0, True, 7, "hf")
    assert r["predictions"] == pred_path(tmp_path).name and r["model"]["params"] > 0


def test_whole_run_backend_and_generation(model_dir, tok, tmp_path):
    be = WholeRun(tok)
    r = evaluate(cfg(model_dir, tmp_path / "w", limit=2, batch_size=1), backend=be, quiet=True)
    assert be.calls == [8]                                  # one call for the whole run
    ref = evaluate(cfg(model_dir, tmp_path / "s", limit=2), backend=Fake(tok), quiet=True)
    assert r["acc_micro"] == ref["acc_micro"] and r["per_subject"] == ref["per_subject"]

    class Gen(Fake):
        def generate(self, prompts, max_new_tokens):
            self.calls.append(max_new_tokens)
            return ["答案是B", "无法确定", "我选C。", "A"][:len(prompts)] * (len(prompts) // 4 + 1)
    g = Gen(tok)
    r = evaluate(cfg(model_dir, tmp_path / "g", limit=4, protocol="chat-0shot-gen", max_new_tokens=9),
                 backend=g, quiet=True)
    lines = [json.loads(x) for x in (tmp_path / "g" / "demo.chat-0shot-gen.predictions.jsonl").read_text().splitlines()]
    assert set(g.calls) == {9}
    assert [x["pred"] for x in lines] == [extract_choice(x["generated"]) for x in lines]
    assert r["n_unparsed"] == sum(x["pred"] is None for x in lines) == 4
    assert r["acc_micro"] == pytest.approx(sum(x["pred"] == x["gold"] for x in lines) / 16)


def test_build_result_fields_from_the_lines(tok):
    from core.config import to_dict
    from core.results import subset_label
    from core.runs import git_info
    from eval.run import build_result
    bench, proto = load_benchmark("demo"), get_protocol("steel-compat")
    qs = select_questions(bench, 3)
    done = {q.id: {"correct": i % 3 == 0, "pred": None if i % 4 == 1 else "A", "fallback": "random" if i % 5 == 2 else None}
            for i, q in enumerate(qs)}
    rec = {"name": "m", "path": "p", "run": None, "manifest_sha256": None, "params": 1}
    for limit, subjects, partial in ((0, [], False), (1, [], True), (0, list(bench.subjects)[:1], True)):
        c = EvalConfig(bench=load_spec("demo"), model="m", limit=limit, subjects=subjects, bootstrap_samples=20)
        r = build_result(c, bench, proto, qs, done, rec, "hf", "x.jsonl", 1.23456)
        assert (r["partial"], r["subset"]) == (partial, subset_label(bench.subset, partial))
    assert r["n_unparsed"] == sum(i % 4 == 1 for i in range(len(qs))) and r["n_fallback"] == sum(i % 5 == 2 for i in range(len(qs)))
    assert all(r["per_subject"][s]["category"] == bench.subjects[s][2] for s in r["per_subject"])
    assert r["protocol"] == {**proto.record(), "shots": 0} and r["git_sha"] == git_info().get("git_sha")
    assert (r["notes"], r["elapsed_s"], r["backend"], r["predictions"]) == (bench.notes, 1.23, "hf", "x.jsonl")
    assert r["config"] == {k: v for k, v in to_dict(c).items() if k not in ("bench", "run")} and "limit" in r["config"]
    assert "bench" not in r["config"] and "run" not in r["config"]


def test_printed_lines_and_the_context_warning(model_dir, tok, tmp_path, capsys):
    from eval.context import context_line, context_warning
    from eval.run import summary
    c = cfg(model_dir, tmp_path, limit=2)
    r = evaluate(c, backend=Fake(tok))                    # quiet=False by default
    bench, tag = load_benchmark("demo"), f"{PROTO}@{get_protocol(PROTO).version}"
    result_path = tmp_path / f"demo.{PROTO}.json"
    head = [f"eval demo v{bench.spec.version} | protocol {tag} | model {model_dir} | 8 questions, 4 subjects | out {tmp_path}",
            *[f"  note: {n}" for n in bench.notes], f"  {context_line(r['context'])}"]
    out = capsys.readouterr()
    assert out.out.splitlines() == head + ["  0 answered before (resumed), 8 to go", *summary(r).splitlines(),
                                           f"wrote {result_path}"] and out.err == ""
    assert json.loads(result_path.read_text(encoding="utf-8")) == json.loads(json.dumps(r))
    p = pred_path(tmp_path)
    p.write_text("\n".join(p.read_text(encoding="utf-8").splitlines()[:5]) + "\n", encoding="utf-8")
    evaluate(c, backend=Fake(tok))
    assert "  5 answered before (resumed), 3 to go" in capsys.readouterr().out.splitlines()
    # prompts over max_len: the warning goes to stderr, unless quiet
    small = cfg(model_dir, tmp_path / "s", limit=1, max_len=260)
    r = evaluate(small, backend=Fake(tok))
    out = capsys.readouterr()
    assert r["context"]["shots_reduced"] + r["context"]["left_truncated"] > 0
    assert out.err == context_warning(r["context"]) + "\n" and r["context"]["max_len"] == 260
    evaluate(small, backend=Fake(tok), quiet=True)
    assert capsys.readouterr() == ("", "")
    steel = evaluate(cfg(model_dir, tmp_path / "l", limit=1, protocol="steel-compat"), backend=Gen(tok))
    assert f"  {get_protocol('steel-compat').label}" in capsys.readouterr().out.splitlines() and steel["n_questions"] == 4


class Gen(Fake):
    replies = ["答案是B", "无法确定", "我选C。", "A"]

    def generate(self, prompts, max_new_tokens):
        self.calls.append(max_new_tokens)
        return [self.replies[i % 4] for i in range(len(prompts))]


def test_steel_compat_lines_follow_parse_answer_with_the_seed(model_dir, tok, tmp_path):
    import dataclasses
    from eval.protocols import parse_answer
    spec = dataclasses.replace(load_spec("demo"), steel_extractor="cmmlu")   # CMMLU's chain: a seeded random fallback
    bench, proto = load_benchmark(spec), get_protocol("steel-compat")
    c = EvalConfig(bench=spec, model=str(model_dir), protocol="steel-compat", out_dir=str(tmp_path), limit=6, seed=7,
                   bootstrap_samples=20, max_len=100_000)
    r = evaluate(c, backend=Gen(tok), quiet=True)
    lines = [json.loads(x) for x in (tmp_path / "demo.steel-compat.predictions.jsonl").read_text().splitlines()]
    byid = {q.id: q for q in bench.questions}
    want = [parse_answer(proto, spec, byid[x["id"]], x["generated"], 7) for x in lines]
    assert [(x["pred"], x["fallback"]) for x in lines] == want
    assert r["n_fallback"] == sum(fb is not None for _, fb in want) >= 6
    assert len({x["pred"] for x in lines if x["fallback"]}) >= 2     # random picks: a wrong seed shows


def test_backend_made_from_the_config_and_its_tokenizer_and_params(model_dir, tok, tmp_path, monkeypatch):
    import shutil
    import eval.backends
    made = []

    def make_backend(name, path, **kw):
        made.append((name, path, kw))
        return Fake(tok)
    monkeypatch.setattr(eval.backends, "make_backend", make_backend)
    c = cfg(model_dir, tmp_path / "a" / "b" / "c", limit=1, batch_size=3, device="cpu", dtype="float32",
            prefix_cache=False, seed=9, max_len=0)
    r = evaluate(c, quiet=True)
    assert made == [("hf", model_dir, {"device": "cpu", "dtype": "float32", "batch_size": 3, "prefix_cache": False,
                                       "seed": 9, "max_len": 512})]      # the tiny model's max_position_embeddings
    assert r["context"]["max_len"] == 512 and r["model"]["params"] > 4321
    # a folder without safetensors: the backend counts the parameters; a backend without a tokenizer:
    # the model folder's is used, a backend's own tokenizer is the one that counts the prompt tokens
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare, ignore=shutil.ignore_patterns("*.safetensors"))
    (bare / "pytorch_model.bin").write_bytes(b"")             # weights the header reader cannot count
    be, del_tok = Fake(tok), Fake(tok)
    del_tok.tokenizer = None
    r = evaluate(cfg(bare, tmp_path / "n", limit=1), backend=del_tok, quiet=True)
    assert r["model"]["params"] == 4321 and r["n_questions"] == 4

    class Counting:
        def __init__(self, t):
            self.t, self.n = t, 0

        def __getattr__(self, name):
            return getattr(self.t, name)

        def encode(self, *a, **kw):
            self.n += 1
            return self.t.encode(*a, **kw)
    be.tokenizer = Counting(tok)
    evaluate(cfg(model_dir, tmp_path / "t", limit=1), backend=be, quiet=True)
    assert be.tokenizer.n >= 4
    lines = [json.loads(x) for x in (tmp_path / "t" / pred_path(tmp_path).name).read_text().splitlines()]
    want = expected(tok, 1)
    assert [x["prompt_tokens"] for x in lines] == [len(tok.encode(want[x["id"]][1].text, add_special_tokens=False))
                                                   for x in lines]


def test_data_dir_subjects_backend_name_and_output_folder(model_dir, tok, tmp_path):
    from core.runs import RunOptions
    from eval.run import model_slug
    root = load_spec("demo").builtin_dir
    subj = list(load_benchmark("demo").subjects)[1]
    be = Fake(tok)
    be.name = "vllm"
    c = EvalConfig(bench=load_spec("demo"), model=str(model_dir), data_dir=str(mut_support.REPO / root), subjects=[subj],
                   limit=2, bootstrap_samples=20, max_len=100_000, run=RunOptions(root=str(tmp_path)))
    r = evaluate(c, backend=be, quiet=True)
    out = tmp_path / "eval" / model_slug(str(model_dir))
    assert (out / f"demo.{PROTO}.json").is_file() and r["data_source"] == f"local:{mut_support.REPO / root}"
    assert list(r["per_subject"]) == [subj] and r["n_questions"] == 2 and r["backend"] == "vllm"
    lines = [json.loads(x) for x in (out / f"demo.{PROTO}.predictions.jsonl").read_text().splitlines()]
    assert {x["model_key"] for x in lines} == {model_key(r["model"], "vllm")}


def test_zero_batch_size_scores_one_question_per_call(model_dir, tok, tmp_path):
    be = Fake(tok)
    evaluate(cfg(model_dir, tmp_path, limit=2, batch_size=0), backend=be, quiet=True)
    assert be.calls == [1] * 8


def test_questions_with_fewer_shots_are_scored_on_their_own_prefix(model_dir, tok, tmp_path):
    bench, proto = load_benchmark("demo"), get_protocol(PROTO)
    qs = select_questions(bench, 7)
    by_sha = {}
    for q in qs:
        for k in range(6):
            p = build_prompt(proto, bench.spec, bench.subjects, q, bench.shots[q.subject], tokenizer=tok, n_shots=k)
            by_sha[p.sha256] = p
    full = sorted(len(tok.encode(build_prompt(proto, bench.spec, bench.subjects, q, bench.shots[q.subject],
                                                         tokenizer=tok).text, add_special_tokens=False)) for q in qs)
    max_len = full[len(full) // 2] + 1                     # about half the questions keep 5 shots
    evaluate(cfg(model_dir, tmp_path, limit=7, max_len=max_len), backend=Fake(tok), quiet=True)
    lines = [json.loads(x) for x in pred_path(tmp_path).read_text(encoding="utf-8").splitlines()]
    assert any(x["shots"] == 5 for x in lines) and any(0 < x["shots"] < 5 for x in lines)
    for x in lines:
        p = by_sha[x["prompt_sha256"]]
        assert x["scores"] == [round(v, 5) for v in letter_scores(p.prefix + p.suffix)]


# ---- the predictions file's bytes, the model key of a relative path, the progress bar -------------------
class _Terminal:
    """A stdout that says it is a terminal, so rich draws the progress bar into it."""

    def __init__(self):
        import io
        self.buf = io.StringIO()

    def write(self, s):
        return self.buf.write(s)

    def flush(self):
        pass

    def isatty(self):
        return True

    def text(self):
        import re
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.buf.getvalue())


def test_progress_bar_on_a_terminal_unless_quiet(model_dir, tok, tmp_path, monkeypatch):
    import re
    import sys
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    evaluate(cfg(model_dir, tmp_path / "a", limit=2), backend=Fake(tok))
    bars = [x for x in re.split(r"[\r\n]", term.text()) if x.startswith(f"demo/{PROTO} ")]
    assert bars and re.search(r" 8/8 eta \d+:\d\d:\d\d$", bars[-1].rstrip())
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stdout", quiet)
    evaluate(cfg(model_dir, tmp_path / "b", limit=2), backend=Fake(tok), quiet=True)
    assert quiet.text() == ""


def test_zero_shot_protocol_needs_no_dev_split(model_dir, tok, tmp_path):
    """A 0-shot protocol does not load the shot split: a local copy without dev files still evaluates,
    while a 5-shot protocol on it is refused (the shots are missing)."""
    import shutil
    from core.benchmarks import BenchmarkDataError
    data = tmp_path / "data"
    shutil.copytree(mut_support.REPO / load_spec("demo").builtin_dir, data)
    shutil.rmtree(data / "dev")
    r = evaluate(cfg(model_dir, tmp_path / "g", limit=1, protocol="chat-0shot-gen", data_dir=str(data)),
                 backend=Gen(tok), quiet=True)
    assert r["n_questions"] == 4 and r["data_source"] == f"local:{data}"
    with pytest.raises(BenchmarkDataError, match="dev exemplars are needed"):
        evaluate(cfg(model_dir, tmp_path / "b", limit=1, data_dir=str(data)), backend=Fake(tok), quiet=True)


class _Pipe:
    """A stdout/stderr that is a pipe: text written reaches the reader only when flushed."""

    def __init__(self):
        self.pending, self.out = "", ""

    def write(self, s):
        self.pending += s
        return len(s)

    def flush(self):
        self.out, self.pending = self.out + self.pending, ""

    def isatty(self):
        return False


def test_printed_lines_are_flushed_before_the_scoring_starts(model_dir, tok, tmp_path, monkeypatch):
    import sys
    from eval.context import context_warning
    out, err = _Pipe(), _Pipe()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    seen = []

    class Watching(Fake):
        def score_subject(self, prefix, suffixes):
            seen.append((out.out, err.out))
            return super().score_subject(prefix, suffixes)
    r = evaluate(cfg(model_dir, tmp_path, limit=1, max_len=260), backend=Watching(tok))
    assert r["context"]["shots_reduced"] + r["context"]["left_truncated"] > 0
    so_far, warned = seen[0]
    assert so_far.endswith("  0 answered before (resumed), 4 to go\n") and so_far.startswith("eval demo v")
    assert warned == context_warning(r["context"]) + "\n"
    assert out.pending == "" and out.out.endswith(f"wrote {tmp_path / f'demo.{PROTO}.json'}\n")


def test_notes_of_a_partial_copy_are_printed(model_dir, tok, tmp_path, capsys):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(mut_support.REPO / load_spec("demo").builtin_dir, data)
    (data / "val" / "towns_val.csv").unlink()
    r = evaluate(cfg(model_dir, tmp_path / "o", limit=1, data_dir=str(data)), backend=Fake(tok))
    assert len(r["notes"]) == 1 and r["notes"][0].startswith("skipped towns: has dev but no scored file")
    assert f"  note: {r['notes'][0]}" in capsys.readouterr().out.splitlines() and r["n_questions"] == 3


def test_generation_is_batched_per_subject(model_dir, tok, tmp_path):
    """0-shot chat prompts share the empty prefix; the calls still go subject by subject."""
    class Sizes(Gen):
        def generate(self, prompts, max_new_tokens):
            self.scored += len(prompts)
            self.sizes.append(len(prompts))
            return super().generate(prompts, max_new_tokens)
    be = Sizes(tok)
    be.sizes = []
    evaluate(cfg(model_dir, tmp_path, limit=3, batch_size=1, protocol="chat-0shot-gen"), backend=be, quiet=True)
    assert be.sizes == [3, 3, 3, 3] and be.scored == 12


def test_elapsed_time_and_a_backend_without_a_name(model_dir, tok, tmp_path):
    import time

    class Nameless:                                       # a backend with no `name` at all
        def __init__(self):
            self.fake = Fake(tok)
            self.tokenizer, self.score_subject = tok, self.fake.score_subject
    be = Nameless()
    t0 = time.time()
    r = evaluate(cfg(model_dir, tmp_path, limit=1, backend="vllm"), backend=be, quiet=True)
    assert 0 <= r["elapsed_s"] <= round(time.time() - t0, 2) + 0.01
    assert r["backend"] == "vllm"                         # the configured name stands in
    lines = [json.loads(x) for x in pred_path(tmp_path).read_text().splitlines()]
    assert {x["model_key"] for x in lines} == {model_key(r["model"], "vllm")}


def test_a_result_that_breaks_the_contract_is_refused_naming_the_file(model_dir, tok, tmp_path, monkeypatch):
    import eval.run as er
    from core.results import SchemaError
    build = er.build_result

    def broken(*a, **kw):
        return {**build(*a, **kw), "subset": "bogus"}
    monkeypatch.setattr(er, "build_result", broken)
    with pytest.raises(SchemaError) as e:
        evaluate(cfg(model_dir, tmp_path, limit=1), backend=Fake(tok), quiet=True)
    assert str(e.value).startswith(f"{tmp_path / f'demo.{PROTO}.json'}: subset 'bogus'")
    assert not (tmp_path / f"demo.{PROTO}.json").exists()


def test_build_result_is_this_dict_computed_by_hand():
    import re
    from core.config import to_dict
    from core.results import RESULT_SCHEMA_VERSION, subset_label
    from core.runs import git_info, now_iso
    from eval.run import build_result
    bench, proto = load_benchmark("demo"), get_protocol(PROTO)
    qs = select_questions(bench, 5)
    done = {q.id: {"correct": int(i % 3 == 0), "pred": None if i % 4 == 1 else "A", "fallback": "random" if i % 6 == 2 else None}
            for i, q in enumerate(qs)}
    done["unused"] = {"correct": True}                    # a line of a question not evaluated now: ignored
    rec = {"name": "m", "path": "p", "run": None, "manifest_sha256": None, "params": 7}
    c = EvalConfig(bench=load_spec("demo"), model="m", limit=5, bootstrap_samples=30, seed=5)
    before = now_iso()
    r = build_result(c, bench, proto, qs, done, rec, "vllm", "pred.jsonl", 2.0049)
    correct = [i % 3 == 0 for i in range(len(qs))]
    subjects = [q.subject for q in qs]
    per = {}
    for s in dict.fromkeys(subjects):
        got = [ok for ok, t in zip(correct, subjects) if t == s]
        per[s] = {"acc": sum(got) / len(got), "n": len(got), "category": bench.subjects[s][2]}
    cats = {}
    for cat in dict.fromkeys(v[2] for v in bench.subjects.values()):
        members = [per[s] for s in per if bench.subjects[s][2] == cat]
        n = sum(m["n"] for m in members)
        cats[cat] = {"acc": sum(m["acc"] for m in members) / len(members),
                     "acc_micro": sum(m["acc"] * m["n"] for m in members) / n, "n": n, "n_subjects": len(members)}
    want = {
        "schema_version": RESULT_SCHEMA_VERSION, "benchmark": "demo", "benchmark_version": bench.spec.version,
        "split": "val", "data_source": bench.data_source, "subset": subset_label(bench.subset, True), "partial": True,
        "n_subjects": 4, "n_questions": 20, "n_unparsed": sum(i % 4 == 1 for i in range(20)),
        "n_fallback": sum(i % 6 == 2 for i in range(20)), "protocol": {**proto.record(), "shots": 5},
        "model": rec, "backend": "vllm", "acc_micro": sum(correct) / 20,
        "acc_macro": sum(v["acc"] for v in per.values()) / 4, "ci95": bootstrap_ci(correct, subjects, 30, 5),
        "per_subject": per, "per_category": cats, "git_sha": git_info().get("git_sha"), "date": r["date"],
        "predictions": "pred.jsonl", "notes": bench.notes, "limit_per_subject": 5, "elapsed_s": 2.0,
        "config": {k: v for k, v in to_dict(c).items() if k not in ("bench", "run")},
    }
    assert r.keys() == want.keys()
    for k in want:
        assert r[k] == (pytest.approx(want[k]) if k in ("acc_micro", "acc_macro") else want[k]), k
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["date"]) and before <= r["date"] <= now_iso()
    assert r["git_sha"] and r["config"]["limit"] == 5 and "seed" in r["config"]
    full = build_result(EvalConfig(bench=load_spec("demo"), model="m", bootstrap_samples=30), bench, proto, qs,
                        done, rec, "hf", "p", 0.0)
    assert (full["partial"], full["subset"], full["limit_per_subject"]) == (False, bench.subset, None)
