"""The context policy (eval/context.py) end to end on the tiny model, 5-shot with max_len=256: on the
built-in benchmark (always) and on C-Eval (../shared/data/ceval, skipped without it). The counts in
the result equal an independent recount from the tokenizer; no prompt a backend is sent is over
max_len (a spy on the backend); reduced-shot prefixes are cached like full ones; hf and vLLM get the
same prompts; with a large max_len the predictions equal a run with the policy switched off; and with
the policy switched off the same checks fail. Also: the resume key holds the backend."""
import json

import pytest

from conftest import shared_path
from core.benchmarks import load_benchmark, load_spec
from core.runs import RunError
from eval import context as context_mod
from eval.backends.hf import HFBackend, bos_ids
from eval.backends.vllm import logit_requests
from eval.protocols import Prompt, build_prompt, get_protocol
from eval.run import EvalConfig, evaluate, select_questions

PROTO = get_protocol("base-5shot-logits")


class SpyBackend:
    """Wraps a backend and records every prompt it is sent and every prefix whose KV state it built."""
    def __init__(self, inner, name="hf"):
        self.inner, self.name, self.tokenizer = inner, name, inner.tokenizer
        self.sent, self.built = [], []
        state = inner._prefix_state

        def prefix_state(prefix):
            if inner._prefix is None or inner._prefix[0] != prefix:
                self.built.append(prefix)
            return state(prefix)
        inner._prefix_state = prefix_state

    def score_subject(self, prefix, suffixes):
        self.sent += [(prefix, s) for s in suffixes]
        return self.inner.score_subject(prefix, suffixes)


def n_tokens(tok, text):
    """Tokens of a scored prompt as the hf and vLLM backends send it: [bos] + text."""
    return len(bos_ids(tok)) + len(tok.encode(text, add_special_tokens=False))


def recount(bench, questions, tok, max_len):
    """The policy's outcome for each question, recomputed from the tokenizer alone: the shots kept (the
    most that fit with the letter token) or None when even zero shots do not fit."""
    out = {}
    for q in questions:
        fits = [k for k in range(PROTO.shots, -1, -1) if n_tokens(tok, build_prompt(
            PROTO, bench.spec, bench.subjects, q, bench.shots[q.subject], n_shots=k).text) + 1 <= max_len]
        out[q.id] = fits[0] if fits else None
    return out


def expected_counts(questions, shots_kept):
    def counts(qs):
        return {"prompts": len(qs), "shots_reduced": sum(shots_kept[q.id] not in (None, PROTO.shots) for q in qs),
                "left_truncated": sum(shots_kept[q.id] is None for q in qs)}
    subjects = {}
    for q in questions:
        subjects.setdefault(q.subject, []).append(q)
    return counts(questions), {s: counts(qs) for s, qs in subjects.items()}


def lines_of(out, r):
    return {l["id"]: l for l in map(json.loads, (out / r["predictions"]).read_text().splitlines())}


def policy_off(monkeypatch):
    """Switch the policy off: every prompt goes to the backend as built, with all its shots."""
    def fit(self, build, shots):
        p = build(shots)
        return context_mod.Fitted(p, self.count(p.text), shots, "fits")
    monkeypatch.setattr(context_mod.ContextFit, "fit", fit)


def check_policy(model_dir, tmp_path, monkeypatch, capsys, bench_name, data_dir, limit, max_len=256):
    bench = load_benchmark(bench_name, data_dir, with_shots=True)
    questions = select_questions(bench, limit)

    def cfg(out, **kw):
        return EvalConfig(bench=load_spec(bench_name), model=str(model_dir), data_dir=data_dir or "", limit=limit,
                          out_dir=str(tmp_path / out), bootstrap_samples=50, batch_size=4, **kw)
    spy = SpyBackend(HFBackend(model_dir, batch_size=4))
    tok = spy.tokenizer
    capsys.readouterr()
    r = evaluate(cfg("fit", max_len=max_len), backend=spy)
    printed = capsys.readouterr()

    # the counts equal a recount from the tokenizer, in total and per subject, and are printed once
    kept = recount(bench, questions, tok, max_len)
    total, per = expected_counts(questions, kept)
    ctx = r["context"]
    assert {k: ctx[k] for k in total} == total and ctx["per_subject"] == per
    assert (ctx["max_len"], ctx["max_len_from"], ctx["reserved"]) == (max_len, "max_len=", 1)
    assert f"{total['shots_reduced']} shots reduced | {total['left_truncated']} left-truncated" in printed.out
    n_over = total["shots_reduced"] + total["left_truncated"]
    assert printed.err.count("warning:") == (1 if n_over else 0)
    assert n_over == 0 or f"{n_over} of {total['prompts']} prompts did not fit max_len {max_len}" in printed.err
    lines = lines_of(tmp_path / "fit", r)
    assert {q: (l["shots"] if l["fit"] != "left_truncated" else None) for q, l in lines.items()} == kept

    # no prompt sent to the backend is over max_len (with the scored letter), each question sent once
    assert len(spy.sent) == len(questions)
    assert max(n_tokens(tok, p + s) for p, s in spy.sent) + 1 <= max_len
    # a prompt that fits is sent byte for byte as built; a cut one is the longest right end that fits
    by_text = {p + s: (p, s) for p, s in spy.sent}
    by_sha = {Prompt("", t).sha256: t for t in by_text}
    for q in questions:
        zero = build_prompt(PROTO, bench.spec, bench.subjects, q, bench.shots[q.subject], n_shots=0).text
        if kept[q.id] is not None:
            built = build_prompt(PROTO, bench.spec, bench.subjects, q, bench.shots[q.subject], n_shots=kept[q.id])
            assert by_text[built.text] == (built.prefix, built.suffix)
        else:
            cut = by_sha[lines[q.id]["prompt_sha256"]]
            assert zero.endswith(cut) and lines[q.id]["prompt_tokens"] == n_tokens(tok, cut)
            assert cut.endswith(bench.spec.answer_prefix) and n_tokens(tok, zero[-len(cut) - 1:]) + 1 > max_len

    # reduced-shot prefixes are cached like the full one: every prefix's KV state is built once
    prefixes = [p for p, _ in spy.sent if p]
    assert sorted(spy.built) == sorted(set(prefixes))
    nocache = SpyBackend(HFBackend(model_dir, batch_size=4, prefix_cache=False))
    r_plain = evaluate(cfg("nocache", max_len=max_len, prefix_cache=False), backend=nocache, quiet=True)
    plain = lines_of(tmp_path / "nocache", r_plain)
    assert all(l["scores"] == pytest.approx(plain[i]["scores"], abs=1e-4) for i, l in lines.items())

    # vLLM gets the same prompts, and its requests (the same token ids) fit too
    vspy = SpyBackend(HFBackend(model_dir, batch_size=4), name="vllm")
    rv = evaluate(cfg("vllm", max_len=max_len), backend=vspy, quiet=True)
    assert sorted(vspy.sent) == sorted(spy.sent) and rv["context"] == ctx and rv["backend"] == "vllm"
    for p, s in spy.sent:
        ids = logit_requests(tok, [(p, s)])[0]["prompt_token_ids"]
        assert len(ids) + 1 <= max_len and len(ids) == n_tokens(tok, p + s)

    # a large max_len changes nothing: the predictions equal a run with the policy switched off
    big = evaluate(cfg("big", max_len=1_000_000), backend=SpyBackend(HFBackend(model_dir, batch_size=4)), quiet=True)
    assert {k: big["context"][k] for k in ("shots_reduced", "left_truncated")} == {"shots_reduced": 0, "left_truncated": 0}
    with monkeypatch.context() as m:
        policy_off(m)
        off_spy = SpyBackend(HFBackend(model_dir, batch_size=4))
        off = evaluate(cfg("off", max_len=max_len), backend=off_spy, quiet=True)
    big_lines, off_lines = lines_of(tmp_path / "big", big), lines_of(tmp_path / "off", off)
    assert [(l["prompt_sha256"], l["scores"], l["pred"]) for l in big_lines.values()] == \
        [(off_lines[i]["prompt_sha256"], off_lines[i]["scores"], off_lines[i]["pred"]) for i in big_lines]
    # ... and the checks above fail with the policy off: over-long prompts reach the backend uncounted
    assert n_over > 0 and max(n_tokens(tok, p + s) for p, s in off_spy.sent) + 1 > max_len
    assert off["context"]["shots_reduced"] + off["context"]["left_truncated"] == 0 != n_over
    return ctx


def test_context_policy_builtin(tiny_model_dir, tmp_path, monkeypatch, capsys):
    ctx = check_policy(tiny_model_dir, tmp_path, monkeypatch, capsys, "demo", None, limit=0)
    print("demo context", {k: ctx[k] for k in ("prompts", "shots_reduced", "left_truncated")})
    n_questions = len(load_benchmark("demo").questions)
    assert ctx["prompts"] == n_questions and ctx["shots_reduced"] > 0   # 5-shot demo prompts run past the tiny model's context
    # a context so short that some questions do not fit even without examples: cut at the left
    ctx = check_policy(tiny_model_dir, tmp_path / "short", monkeypatch, capsys, "demo", None, limit=3, max_len=108)
    assert ctx["shots_reduced"] > 0 and ctx["left_truncated"] > 0


def test_context_policy_ceval(tiny_model_dir, tmp_path, monkeypatch, capsys):
    data = shared_path("ceval")
    ctx = check_policy(tiny_model_dir, tmp_path, monkeypatch, capsys, "ceval", str(data), limit=1)
    print("ceval context", {k: ctx[k] for k in ("prompts", "shots_reduced", "left_truncated")})
    assert ctx["shots_reduced"] > 0 and ctx["left_truncated"] > 0


def test_default_context_is_the_models(tiny_model_dir, tiny_tokenizer, tmp_path):
    """Without max_len= the model's 512 positions apply; generation protocols reserve max_new_tokens
    and keep the answer slot (the chat template's assistant turn) when they cut."""
    class Canned:
        name = "hf"

        def __init__(self):
            self.tokenizer, self.prompts = tiny_tokenizer, []

        def generate(self, prompts, max_new_tokens):
            self.prompts += prompts
            return ["A"] * len(prompts)
    be = Canned()
    r = evaluate(EvalConfig(bench=load_spec("demo"), model=str(tiny_model_dir), out_dir=str(tmp_path / "gen"),
                            protocol="chat-0shot-gen", max_new_tokens=40, max_len=90, limit=2,
                            bootstrap_samples=20), backend=be, quiet=True)
    assert r["context"]["reserved"] == 40 and r["context"]["shots_reduced"] == 0
    lengths = [len(tiny_tokenizer.encode(p, add_special_tokens=False)) for p in be.prompts]
    assert max(lengths) + 40 <= 90 and all(p.endswith("<|im_start|>assistant\n") for p in be.prompts)
    assert r["context"]["left_truncated"] == sum(l["fit"] == "left_truncated" for l in lines_of(tmp_path / "gen", r).values()) > 0
    base = evaluate(EvalConfig(bench=load_spec("demo"), model=str(tiny_model_dir), out_dir=str(tmp_path / "base"),
                               limit=1, bootstrap_samples=20), quiet=True)
    assert (base["context"]["max_len"], base["context"]["max_len_from"]) == (512, "max_position_embeddings")
    assert base["context"]["shots_reduced"] == base["context"]["left_truncated"] == 0   # 5-shot demo fits 512


def test_resume_key_holds_the_backend(tiny_model_dir, tmp_path):
    """A predictions file written by hf is not resumed by vLLM: its scores are logits, vLLM's log-probs."""
    def cfg():
        return EvalConfig(bench=load_spec("demo"), model=str(tiny_model_dir), out_dir=str(tmp_path), limit=1,
                          bootstrap_samples=20)
    hf = SpyBackend(HFBackend(tiny_model_dir))
    evaluate(cfg(), backend=hf, quiet=True)
    again = SpyBackend(HFBackend(tiny_model_dir))
    evaluate(cfg(), backend=again, quiet=True)
    assert again.sent == []                                  # the same backend resumes: nothing re-scored
    with pytest.raises(RunError, match="another model or backend"):
        evaluate(cfg(), backend=SpyBackend(HFBackend(tiny_model_dir), name="vllm"), quiet=True)
    c = cfg()
    c.resume = False                                         # the way out the error names
    assert evaluate(c, backend=SpyBackend(HFBackend(tiny_model_dir), name="vllm"), quiet=True)["backend"] == "vllm"
    # a file written before the key named the backend (same model): its lines are scored again, not mixed
    pred = tmp_path / "demo.base-5shot-logits.predictions.jsonl"
    lines = [json.loads(l) for l in pred.read_text().splitlines()]
    assert len(lines) == 4 and all(l["model_key"].startswith("vllm:") for l in lines)
    pred.write_text("".join(json.dumps({**l, "model_key": l["model_key"].partition(":")[2]}) + "\n" for l in lines))
    legacy = SpyBackend(HFBackend(tiny_model_dir))
    evaluate(cfg(), backend=legacy, quiet=True)
    lines = [json.loads(l) for l in pred.read_text().splitlines()]
    assert len(legacy.sent) == 4 and len(lines) == 4 and all(l["model_key"].startswith("hf:") for l in lines)
