"""`python -m leaderboard.build` on synthetic run folders: protocol grouping, bad inputs, escaping,
report card, the no-results case. Run folders and result files are written by the helpers below."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leaderboard.build import main

REPO = Path(__file__).resolve().parents[2]


def make_run(root: Path, stage: str, name: str, parent: Path | None = None, *, started="2026-03-01T10:00:00Z",
             finished="2026-03-01T11:00:00Z", tokens=0, steps=10, device="cpu", world_size=None,
             decontam=None) -> Path:
    run = root / stage / name
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text("x: 1\n")
    manifest = {"stage": stage, "run": name, "parent": str(parent) if parent else None, "started": started,
                "finished": finished, "steps": steps, "tokens_seen": tokens, "env": {"device": device}}
    if world_size:
        manifest["world_size"] = world_size
    (run / "manifest.json").write_text(json.dumps(manifest))
    if decontam is not None:
        (run / "decontamination.json").write_text(json.dumps(decontam))
    return run


def write_result(folder: Path, model: str, acc: float, bench="ceval", proto="base-5shot-logits", subset="full",
                 split="val", n=1346, params=3_000_000, version=1, per_category=None, run=None) -> Path:
    d = {"schema_version": 1, "benchmark": bench, "benchmark_version": "1", "split": split,
         "data_source": "local:x", "subset": subset, "n_subjects": 4, "n_questions": n, "n_unparsed": 0,
         "protocol": {"name": proto, "version": version, "shots": 5, "prompt_format": "p", "scoring": "logits",
                      "averaging": "micro+macro"},
         "model": {"name": model, "path": "p", "run": run, "manifest_sha256": None, "params": params},
         "backend": "hf", "acc_micro": acc, "acc_macro": acc,
         "ci95": {"micro": [max(acc - 0.02, 0), min(acc + 0.02, 1)], "macro": [max(acc - 0.03, 0), min(acc + 0.03, 1)]},
         "per_subject": {}, "per_category": per_category or {"STEM": {"acc": acc, "n": 10}},
         "git_sha": None, "date": "2026-03-01T12:00:00Z", "predictions": f"{bench}.{proto}.predictions.jsonl"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bench}.{proto}.json"
    path.write_text(json.dumps(d))
    return path


def write_baselines(path: Path, extra: list[dict]) -> Path:
    doc = yaml.safe_load((REPO / "leaderboard" / "baselines.yaml").read_text())
    doc["entries"] = doc["entries"][:2] + extra
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def build(runs: Path, *args) -> tuple[int, dict]:
    rc = main([f"runs_root={runs}", "plots=false", "print_table=false", *args])
    out = runs / "leaderboard" / "leaderboard.json"
    return rc, (json.loads(out.read_text()) if out.exists() else {})


def rows_of(table):
    return [(r["model"], r["kind"], r["rank"]) for r in table["rows"]]


def test_protocol_grouping_never_ranks_other_protocols_with_ours(tmp_path):
    runs = tmp_path / "runs"
    a = make_run(runs, "sft", "a")
    b = make_run(runs, "sft", "b")
    write_result(a / "eval", "model-a", 0.30)
    write_result(a / "eval", "model-a", 0.32, bench="cmmlu", split="test", n=11582)
    write_result(b / "eval", "model-b", 0.50)
    write_result(b / "eval", "model-b", 0.44, bench="cmmlu", split="test", n=11582)
    write_result(b / "eval", "model-b", 0.20, proto="chat-0shot-gen")
    write_result(b / "eval", "model-b", 0.90, bench="demo_bench", subset="builtin", n=40)
    write_result(runs / "eval" / "hub-model", "hub-model", 0.45, subset="shared-split", n=200)
    same = {"model": "Measured-Same-Way", "params_b": 1.0, "train_tokens_b": None, "ceval": 45.0, "cmmlu": 40.0,
            "protocol": "base-5shot-logits", "protocol_version": 1, "subset": "full",
            "protocol_note": "measured with this kit", "source": {"paper": "p", "table": "t"}, "checked": True}
    other = dict(same, model="Unknown-Protocol", ceval=99.0, cmmlu=99.0, protocol="unknown",
                 protocol_version=None, subset=None)
    other = {k: v for k, v in other.items() if v is not None or k in ("train_tokens_b",)}
    bl = write_baselines(tmp_path / "b.yaml", [same, other])
    rc, board = build(runs, f"baselines={bl}")
    assert rc == 0
    by_id = {t["id"]: t for t in board["tables"]}
    assert set(by_id) == {"base-5shot-logits-v1-full", "base-5shot-logits-v1-shared-split",
                          "chat-0shot-gen-v1-full", "base-5shot-logits-v1-builtin"}
    main_t = by_id["base-5shot-logits-v1-full"]
    # Ranked by the mean of C-Eval and CMMLU: b (47) > baseline (42.5) > a (31).
    assert rows_of(main_t) == [("model-b", "ours", 1), ("Measured-Same-Way", "baseline", 2), ("model-a", "ours", 3)]
    assert main_t["rows"][0]["scores"]["ceval"]["ci95"] == [48.0, 52.0]
    # The 99/99 number with an unknown protocol is never in a ranked table, and has no rank.
    ranked_models = {r["model"] for t in board["tables"] for r in t["rows"]}
    assert "Unknown-Protocol" not in ranked_models
    pub = [r for t in board["published"] for r in t["rows"] if r["model"] == "Unknown-Protocol"]
    assert len(pub) == 1 and pub[0]["rank"] is None
    # Other protocol, shared split and the demo benchmark each stand alone.
    assert rows_of(by_id["chat-0shot-gen-v1-full"]) == [("model-b", "ours", 1)]
    assert rows_of(by_id["base-5shot-logits-v1-shared-split"]) == [("hub-model", "ours", 1)]
    assert by_id["base-5shot-logits-v1-builtin"]["benchmarks"] == ["demo_bench"]
    assert by_id["base-5shot-logits-v1-builtin"]["rows"][0]["scores"]["demo_bench"]["acc"] == 90.0
    md = (runs / "leaderboard" / "leaderboard.md").read_text()
    assert md.index("Published numbers") > md.index("built-in demo benchmark")


def test_results_on_different_data_are_marked_not_ranked(tmp_path):
    runs = tmp_path / "runs"
    for name, n in (("a", 1346), ("b", 1346), ("c", 500)):
        write_result(make_run(runs, "sft", name) / "eval", name, 0.3 + 0.1 * (name == "c"), n=n)
    rc, board = build(runs)
    t = board["tables"][0]
    assert [r["rank"] for r in t["rows"] if r["model"] == "c"] == [None]
    assert t["rows"][-1]["scores"]["ceval"]["mismatch"] is True
    assert any("different data" in n for n in t["notes"])


@pytest.mark.parametrize("name, content, why", [
    ("ceval.base-5shot-logits.json", '{"schema_version": 1, "benchmark": "ceval"', "invalid JSON"),
    ("cmmlu.base-5shot-logits.json", None, "missing field"),
    ("ceval.my-protocol.json", "unknown_protocol", "unknown protocol"),
    ("ceval.chat-0shot-gen.json", "version", "schema_version 2"),
])
def test_bad_input_is_skipped_with_a_warning_and_fails_strict(tmp_path, capsys, name, content, why):
    runs = tmp_path / "runs"
    write_result(make_run(runs, "sft", "good") / "eval", "good-model", 0.4)
    run = make_run(runs, "sft", "bad")
    bad = run / "eval" / name
    if content == "unknown_protocol":
        write_result(run / "eval", "x", 0.5, proto="my-protocol")
    elif content == "version":
        write_result(run / "eval", "x", 0.5, proto="chat-0shot-gen")
        d = json.loads(bad.read_text())
        d["schema_version"] = 2
        bad.write_text(json.dumps(d))
    elif content is None:
        write_result(run / "eval", "x", 0.5, bench="cmmlu")
        d = json.loads(bad.read_text())
        del d["acc_micro"]
        bad.write_text(json.dumps(d))
    else:
        bad.write_text(content)
    rc, board = build(runs)
    err = capsys.readouterr().err
    assert rc == 0 and f"warning: skipped {bad}" in err and why in err
    ours = [r for t in board["tables"] for r in t["rows"] if r["kind"] == "ours"]
    assert [(r["model"], sorted(r["scores"])) for r in ours] == [("good-model", ["ceval"])]
    assert any(str(bad) in w for w in board["warnings"])
    before = (runs / "leaderboard" / "leaderboard.json").read_text()
    rc = main([f"runs_root={runs}", "plots=false", "print_table=false", "strict=1"])
    assert rc == 1 and f"error: skipped {bad}" in capsys.readouterr().err
    assert (runs / "leaderboard" / "leaderboard.json").read_text() == before  # nothing written


def test_model_names_are_escaped_in_html_and_markdown(tmp_path):
    runs = tmp_path / "runs"
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)>|*x*'
    write_result(make_run(runs, "sft", "evil") / "eval", evil, 0.4)
    rc, _ = build(runs)
    page = (runs / "leaderboard" / "index.html").read_text()
    assert page.count("<script") == 1  # only the page's own sorting script
    assert "<img src=x" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    md = (runs / "leaderboard" / "leaderboard.md").read_text()
    assert "<script" not in md and "<img" not in md and "&lt;script>alert(1)&lt;/script>" in md
    assert r"\|\*x\*" in md  # a pipe cannot split the table, asterisks do not format


def test_report_card_from_a_synthetic_lineage(tmp_path):
    runs = tmp_path / "runs"
    h100 = dict(device="NVIDIA H100 80GB HBM3", world_size=8)
    base = make_run(runs, "pretrain", "base", tokens=5_000_000_000, steps=1000, started="2026-03-01T00:00:00Z",
                    finished="2026-03-01T02:00:00Z", **h100)
    sft = make_run(runs, "sft", "sft1", base, tokens=1_000_000, started="2026-03-01T03:00:00Z",
                   finished="2026-03-01T03:30:00Z", **h100,
                   decontam={"policy": "flag", "threshold": 0.8, "n_checked": 100, "n_flagged": 3, "n_dropped": 0,
                             "per_source": {}, "per_benchmark": {"ceval": 3}, "examples": []})
    dpo = make_run(runs, "dpo", "dpo1", sft, started="2026-03-01T04:00:00Z", finished="2026-03-01T04:15:00Z",
                   **h100, decontam={"policy": "drop", "threshold": 0.8, "n_checked": 50, "n_flagged": 2,
                                     "n_dropped": 2, "per_source": {}, "per_benchmark": {}, "examples": []})
    for run, acc in ((base, 0.30), (sft, 0.36), (dpo, 0.38)):
        write_result(run / "eval", run.name, acc)
    rc, board = build(runs, "cost.gpu_hour_usd.H100=3.0")
    assert rc == 0
    row = next(r for r in board["tables"][0]["rows"] if r["model"] == "dpo1")
    assert row["lineage"] == "pretrain:base -> sft:sft1 -> dpo:dpo1"
    assert row["tokens"] == 5_000_000_000 and row["contamination"]["status"] == "flagged"
    base_row = next(r for r in board["tables"][0]["rows"] if r["model"] == "base")
    assert base_row["contamination"]["status"] == "n/a"
    report = (runs / "leaderboard" / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| |"))
    assert header == "| | BASE | SFT | DPO | GRPO |"
    score_line = next(line for line in report.splitlines() if line.startswith("| C-Eval"))
    # Each stage's score is followed by its delta against the parent; these synthetic results have no
    # predictions files, so the delta is shown without a paired test.
    assert ("30.00 [28.0, 32.0] | 36.00 [34.0, 38.0] · +6.0 vs parent (no paired test) | "
            "38.00 [36.0, 40.0] · +2.0 vs parent (no paired test) | —") in score_line
    cost_line = next(line for line in report.splitlines() if line.startswith("| est. cost"))
    # 2 h, 0.5 h and 0.25 h on 8 GPUs at 3.0 USD per GPU-hour (the override).
    assert "48.00 @ 3.0/h | 12.00 @ 3.0/h | 6.00 @ 3.0/h | —" in cost_line
    assert "Total wall-clock 2.8 h, estimated cost 66.00 USD." in report


def test_no_results_still_writes_baselines_only_table(tmp_path, capsys):
    runs = tmp_path / "runs"
    rc = main([f"runs_root={runs}", "plots=false"])
    out = capsys.readouterr().out
    assert rc == 0 and "No eval results found" in out
    board = json.loads((runs / "leaderboard" / "leaderboard.json").read_text())
    assert board["tables"] == [] and sum(len(t["rows"]) for t in board["published"]) == board["n_baselines"] > 10
    assert "No eval results found" in (runs / "leaderboard" / "index.html").read_text()
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_leaderboard_package_never_imports_torch():
    code = ("import sys, leaderboard.build, leaderboard.plots, leaderboard.report; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    for f in (REPO / "leaderboard").glob("*.py"):
        assert "import torch" not in f.read_text(), f


def test_plots_and_page_reference_only_local_files(tmp_path):
    import xml.etree.ElementTree as ET
    runs = tmp_path / "runs"
    write_result(make_run(runs, "sft", "a", tokens=10**6) / "eval", "a", 0.35,
                 per_category={"STEM": {"acc": 0.3, "n": 5}, "Humanities": {"acc": 0.4, "n": 5}})
    assert main([f"runs_root={runs}", "print_table=false"]) == 0
    out = runs / "leaderboard"
    for name in ("acc_vs_params", "acc_vs_tokens", "per_category"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        ET.parse(out / "plots" / f"{name}.svg")  # well-formed SVG
    page = (out / "index.html").read_text()
    refs = __import__("re").findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r == "data:," or (out / r).is_file() for r in refs), refs
    assert "http://" not in page and "https://" not in page


def test_config_defaults_overrides_and_dry_run(capsys):
    from core.config import parse_args
    from leaderboard.build import LeaderboardConfig
    cfg, _ = parse_args(LeaderboardConfig, ["strict=1", "cost.gpu_hour_usd.H100=2.2", "out=x"])
    assert cfg.strict is True and cfg.out == "x"
    assert cfg.cost.gpu_hour_usd["H100"] == 2.2 and cfg.cost.gpu_hour_usd["A100"] == 1.5  # others kept
    with pytest.raises(SystemExit) as e:
        parse_args(LeaderboardConfig, ["--dry-run"], prog="leaderboard.build")
    assert e.value.code == 0 and "known_protocols" in capsys.readouterr().out
    from core.results import PROTOCOL_NAMES
    assert tuple(LeaderboardConfig().known_protocols) == PROTOCOL_NAMES   # the result contract's list


def test_broken_baselines_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "b.yaml"
    bad.write_text("schema_version: 1\nentries: []\n")
    with pytest.raises(SystemExit) as e:
        main([f"runs_root={tmp_path}", f"baselines={bad}", "plots=false"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"error: baselines: {bad}: 'entries' must be a non-empty list")
    assert not (tmp_path / "leaderboard").exists()


def test_unfinished_run_and_missing_parent_are_reported(tmp_path, capsys):
    runs = tmp_path / "runs"
    orphan = make_run(runs, "sft", "orphan", parent=runs / "pretrain" / "deleted")
    write_result(orphan / "eval", "orphan", 0.4)
    crashed = make_run(runs, "dpo", "crashed")
    (crashed / "manifest.json").unlink()
    write_result(crashed / "eval", "crashed", 0.5)
    rc, board = build(runs)
    err = capsys.readouterr().err
    assert rc == 0 and "parent" in err and "deleted not found" in err and "no manifest.json" in err
    lineages = {r["model"]: r["lineage"] for t in board["tables"] for r in t["rows"]}
    assert lineages["crashed"] == "unfinished:crashed"
    assert lineages["orphan"].startswith("missing:") and lineages["orphan"].endswith("sft:orphan")
    assert main([f"runs_root={runs}", "plots=false", "print_table=false", "strict=1"]) == 1


def test_partial_runs_stand_alone_and_eval_reports_are_not_results(tmp_path, capsys):
    runs = tmp_path / "runs"
    run = make_run(runs, "sft", "a")
    write_result(run / "eval", "full-run", 0.40)
    write_result(runs / "eval" / "quick", "quick-run", 0.90, subset="full+partial", n=40)
    (run / "eval" / "ceval.ablation.json").write_text('{"rows": []}')      # eval/ablation.py report
    (run / "eval" / "ceval.crosscheck.json").write_text('{"lm_eval": 0.4}')  # eval/crosscheck.py report
    rc, board = build(runs, "strict=1")
    assert rc == 0 and "warning" not in capsys.readouterr().err
    assert [(t["subset"], rows_of(t)) for t in board["tables"]] == [
        ("full", [("full-run", "ours", 1)]), ("full+partial", [("quick-run", "ours", 1)])]
    assert "PARTIAL" in board["tables"][1]["title"]


def test_equal_scores_share_a_rank(tmp_path):
    runs = tmp_path / "runs"
    for name, acc in (("x", 0.5), ("y", 0.5), ("z", 0.4)):
        write_result(make_run(runs, "sft", name) / "eval", name, acc)
    rc, board = build(runs)
    assert [r["rank"] for r in board["tables"][0]["rows"]] == [1, 1, 3]
