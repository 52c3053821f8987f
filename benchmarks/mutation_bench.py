"""Mutation testing of the result-critical code (mutmut 3): would the fast suite notice a wrong answer?

mutmut changes the code one operator at a time (`<` -> `<=`, `+ 1` -> `+ 2`, a string -> "XX..XX",
an argument dropped, ...) and runs the tests that reach the changed function; a mutant that no test
fails on "survived". Each module below is run as its own mutmut project in runs/mutants/<name>/
(a copy of the tracked tree, so nothing is written into the repository and the runs are independent),
with only its paired tests selected and, where a file holds more than result code, only the listed
functions counted. Survivors that are equivalent or harmless are explained one per line in
tests/mutation_equivalent.md (`- <mutant name>: why`); every other survivor is "unexplained".
Lines that are only message text carry `# pragma: no mutate` and are counted per module.

Figures per module into benchmarks/results/mutation.json (merged: a MODULES= run updates only its
modules): mutants made, killed, survived, timed out, no tests, explained and unexplained survivors,
the pragma lines, and the run time (mutant generation + stats + clean run + every mutant).

Run as:
    make mutants                                   # every module (setup-mutants installs the `mutation` extra)
    make mutants MODULES="eval_extract dedupe"     # a part
    .venv/bin/python benchmarks/mutation_bench.py --list
    cd runs/mutants/<name> && ../../../.venv/bin/mutmut show <mutant>   # the diff of one mutant
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.runs import atomic_write_json, shared_data_root  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "mutation.json"
WORK = REPO / "runs" / "mutants"
EQUIVALENT = REPO / "tests" / "mutation_equivalent.md"
PACKAGES = ["core", "data_recipes", "pretrain", "sft", "rl", "eval", "leaderboard"]


@dataclass
class Module:
    file: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)   # mutmut keys (x_f, xǁClassǁmethod); empty = all
    # mutmut skips decorated functions: these ("Class.method" or "function") lose their decorator in the
    # work copy and get it back by assignment after the module's code (same behaviour, now mutated)
    undecorate: list[str] = field(default_factory=list)


MODULES: dict[str, Module] = {
    "eval_extract": Module("eval/extract.py", ["tests/unit/test_eval_extract.py", "tests/unit/test_mut_eval_extract.py"]),
    "eval_metrics": Module("eval/metrics.py", ["tests/unit/test_eval_metrics.py", "tests/unit/test_mut_eval_metrics.py"]),
    # the paired tests (McNemar, paired bootstrap) and the tie/delta verdicts moved here from eval/metrics.py
    "core_stats": Module("core/stats.py", ["tests/unit/test_mut_core_stats.py", "tests/unit/test_mut_eval_metrics.py",
                                           "tests/unit/test_eval_metrics.py"]),
    "sft_formats": Module("data_recipes/sft_formats.py", ["tests/unit/test_sft_formats.py", "tests/unit/test_sft_render.py",
                                                         "tests/unit/test_mut_sft_formats.py"]),
    "preference": Module("data_recipes/preference.py", ["tests/unit/test_rl_preference.py", "tests/unit/test_mut_rl_preference.py"]),
    "rewards": Module("rl/rewards.py", ["tests/unit/test_rl_rewards.py", "tests/unit/test_mut_rl_rewards.py"]),
    "grpo_weights": Module("rl/grpo.py", ["tests/unit/test_mut_rl_grpo_args.py"], ["x_grpo_args"]),
    "decontam": Module("data_recipes/decontam.py", ["tests/unit/test_decontam.py", "tests/unit/test_mut_decontam.py"]),
    "decontam_tokens": Module("data_recipes/decontam_tokens.py", ["tests/unit/test_decontam.py", "tests/unit/test_mut_decontam_tokens.py"]),
    "dedupe": Module("data_recipes/dedupe.py", ["tests/unit/test_data_dedupe.py", "tests/unit/test_mut_dedupe.py"]),
    "pretrain_loss": Module("pretrain/model.py", ["tests/unit/test_pretrain_model.py", "tests/unit/test_mut_pretrain_loss.py"],
                            ["x__workspace", "x_release_loss_buffers", "xǁ_LinearCrossEntropyǁforward",
                             "xǁ_LinearCrossEntropyǁbackward", "x_linear_cross_entropy"]),
    # write_token_folder is the tests' and the benchmark's minimal shard writer (`make data` is the real one)
    "pretrain_data": Module("pretrain/data.py", ["tests/unit/test_pretrain_data.py", "tests/unit/test_mut_pretrain_data.py"],
                            ["x__permutation", "x_hash_files", "xǁBlockLoaderǁ__init__", "xǁBlockLoaderǁfresh",
                             "xǁBlockLoaderǁ_add_source", "xǁBlockLoaderǁadd_data", "xǁBlockLoaderǁnext_ids",
                             "xǁBlockLoaderǁtokens", "xǁBlockLoaderǁstate_dict", "xǁBlockLoaderǁsave",
                             "xǁBlockLoaderǁload"]),
    "eval_run": Module("eval/run.py", ["tests/unit/test_mut_eval_run.py", "tests/unit/test_mut_eval_run_resume.py"],
                       ["x_select_questions", "x_model_key", "x_read_predictions", "x__append", "x_evaluate",
                        "x_build_result", "x__score", "x__by_prefix"]),
    "eval_hf": Module("eval/backends/hf.py", ["tests/unit/test_mut_eval_hf.py", "tests/unit/test_mut_eval_hf_generate.py",
                                          "tests/stages/test_eval_run.py::test_pack_rows"],
                      ["x_letter_token_ids", "x_bos_ids", "x_pack_rows", "x_position_local", "x_sdpa_gqa_attention",
                       "x_use_sdpa_gqa", "xǁHFBackendǁ__init__", "xǁHFBackendǁ_last_logits", "xǁHFBackendǁ_prefix_state",
                       "xǁHFBackendǁ_cache_for", "xǁHFBackendǁ_batched_logits", "xǁHFBackendǁ_packed_logits",
                       "xǁHFBackendǁscore_subject", "xǁHFBackendǁgenerate"],
                      undecorate=["HFBackend.score_subject", "HFBackend.generate"]),
    # the page's prose (render_markdown/render_html, context_note) is text, not a result: the cells and the escaping are
    "leaderboard_render": Module("leaderboard/render.py", ["tests/unit/test_leaderboard_build.py",
                                 "tests/unit/test_leaderboard_names.py", "tests/unit/test_mut_leaderboard_render.py"],
                                 ["x_fmt_count", "x_fmt_score", "x_proto_label", "x_md_escape", "x__columns",
                                  "x__md_table", "x__e", "x__slug", "x__html_table"]),
}

KILLED, TIMEOUT, SURVIVED, NO_TESTS = {1, 3}, {36, -24, 24, 152, 255}, {0}, {5, 33}


def copy_tree(dst: Path) -> None:
    """The tracked and untracked-but-not-ignored files, as a fresh clone plus the work in progress sees them."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and rel.split("/")[0] in PACKAGES + ["tests", "pyproject.toml"]:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


# The work copy's conftest takes the tiny tokenizer from tests/unit/mut_support.py's disk cache (the same
# tokenizer, built once): one pytest run per mutant would otherwise train it again (~3 s) every time.
CONFTEST_CACHE = '''

# ---- added in the mutation work copy (benchmarks/mutation_bench.py) ----
@pytest.fixture(scope="session")
def tiny_tokenizer():
    import sys
    sys.path.insert(0, str(Path(__file__).parent / "unit"))
    import mut_support
    return mut_support.load_tokenizer()
'''


def undecorate(path: Path, names: list[str]) -> None:
    text = path.read_text(encoding="utf-8")
    for qual in names:
        fn = qual.rpartition(".")[2]
        m = re.search(rf"^([ \t]*)@(.+)\n(\1def {fn}\()", text, re.M)
        if m is None:
            raise SystemExit(f"{path}: no decorated def {fn}( to undecorate")
        text = text[:m.start()] + m.group(3) + text[m.end():]
        text += f"\n{qual} = {m.group(2)}({qual})  # mutation copy: mutmut skips decorated functions\n"
    path.write_text(text, encoding="utf-8")


def mutmut_config(mod: Module) -> str:
    tests = ", ".join(json.dumps(t) for t in mod.tests)
    return ("\n[tool.mutmut]\n"
            f"source_paths = {json.dumps(PACKAGES)}\n"
            f"only_mutate = [{json.dumps(mod.file)}]\n"
            f"pytest_add_cli_args_test_selection = [{tests}]\n"
            # -p no:cacheprovider: no .pytest_cache races; the markers of make test
            '''pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not gpu and not slow and not backends"]\n'''
            # torch is not fork-safe once used: a clean server process forks each mutant's run
            'process_isolation = "forkserver"\n'
            # an infinite-loop mutant stops after 8x (its tests' time + 1 s) of CPU, not mutmut's 30x
            "timeout_multiplier = 4.0\ntimeout_constant = 1.0\n"
            "use_git_change_detection = false\n")


def explained() -> dict[str, str]:
    """{mutant name: reason} from tests/mutation_equivalent.md lines `- <name>: <reason>`."""
    if not EQUIVALENT.exists():
        return {}
    out = {}
    for line in EQUIVALENT.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^- `?([\w.ǁ]+__mutmut_\d+)`?:\s*(.+)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def write_diffs(work: Path, names: list[str], mutmut: Path) -> None:
    """runs/mutants/<name>/survivors.diff: the diff of every unexplained survivor, for review."""
    code = ("import sys\nfrom mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant\n"
            "for n in sys.argv[1:]:\n    print('#', n)\n    print(get_diff_for_mutant(n, path=find_mutant(n).path))\n")
    with open(work / "survivors.diff", "w", encoding="utf-8") as out:
        subprocess.run([str(mutmut.parent / "python"), "-c", code, *names], cwd=work, stdout=out,
                       stderr=subprocess.STDOUT)


def in_scope(key: str, mod: Module) -> bool:
    func = key.rpartition(".")[2].partition("__mutmut_")[0]
    return not mod.functions or func in mod.functions


def run_module(name: str, mod: Module, children: int, keep: bool) -> dict:
    work = WORK / name
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    copy_tree(work)
    if mod.undecorate:
        undecorate(work / mod.file, mod.undecorate)
    with open(work / "tests" / "conftest.py", "a", encoding="utf-8") as f:
        f.write(CONFTEST_CACHE)
    with open(work / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write(mutmut_config(mod))
    module = mod.file[:-3].replace("/", ".")
    names = [f"{module}.{fn}__mutmut_*" for fn in mod.functions] or [f"{module}.*"]
    env = dict(os.environ, ZHLLM_SHARED_DATA=str(shared_data_root()), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    mutmut = Path(sys.executable).parent / "mutmut"
    t0 = time.perf_counter()
    with open(work / "mutmut.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen([str(mutmut), "run", "--max-children", str(children), *names], cwd=work, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait()
        finally:   # a mutant killed mid-test can leave its pool workers behind: end the whole group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    seconds = time.perf_counter() - t0
    meta = work / "mutants" / (mod.file + ".meta")
    if rc != 0 or not meta.exists():
        tail = (work / "mutmut.log").read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"mutmut failed for {name} (exit {rc}); {work / 'mutmut.log'} ends:\n{tail}")
    codes = {k: v for k, v in json.loads(meta.read_text())["exit_code_by_key"].items() if in_scope(k, mod)}
    why = explained()
    survived = sorted(k for k, v in codes.items() if v in SURVIVED | NO_TESTS)
    counts = {"mutants": len(codes),
              "killed": sum(v in KILLED for v in codes.values()),
              "timeout": sum(v in TIMEOUT for v in codes.values()),
              "survived": sum(v in SURVIVED for v in codes.values()),
              "no_tests": sum(v in NO_TESTS for v in codes.values())}
    counts["other"] = counts["mutants"] - sum(counts[k] for k in ("killed", "timeout", "survived", "no_tests"))
    write_diffs(work, [k for k in survived if k not in why], mutmut)
    source = (REPO / mod.file).read_text(encoding="utf-8").splitlines()
    return {"file": mod.file, "functions": mod.functions or "all", "tests": mod.tests, **counts,
            "killed_pct": round(100 * (counts["killed"] + counts["timeout"]) / max(counts["mutants"], 1), 1),
            "explained_survivors": [k for k in survived if k in why],
            "unexplained_survivors": [k for k in survived if k not in why],
            "pragma_no_mutate_lines": sum("pragma: no mutate" in line for line in source),
            "run_time_s": round(seconds, 1)}


def write(results: dict) -> None:
    """Totals over the modules (in MODULES' order; modules no longer listed are dropped), survivors
    split again by the current tests/mutation_equivalent.md, written atomically."""
    why = explained()
    mods = {n: results["modules"][n] for n in MODULES if n in results["modules"]}
    for m in mods.values():
        surv = sorted(m["explained_survivors"] + m["unexplained_survivors"])
        m["explained_survivors"] = [k for k in surv if k in why]
        m["unexplained_survivors"] = [k for k in surv if k not in why]
    results["modules"] = mods
    results["total"] = ({k: sum(m[k] for m in mods.values()) for k in ("mutants", "killed", "timeout", "survived", "no_tests")}
                        | {"run_time_s": round(sum(m["run_time_s"] for m in mods.values()), 1),
                           "unexplained_survivors": sum(len(m["unexplained_survivors"]) for m in mods.values())})
    results["note"] = ("killed_pct counts a timeout as killed (mutmut's view: the suite stops the mutant); "
                       "run_time_s: one module's mutmut run (work copy, generation, stats, clean run, every "
                       "mutant) on a shared machine; total run_time_s sums the modules' last runs")
    atomic_write_json(OUT, results)


def print_table(results: dict) -> None:
    print("| module | file | mutants | killed | timeout | survived (explained) | killed % | pragma lines | time (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in results["modules"].items():
        surv = m["survived"] + m["no_tests"]
        print(f"| {name} | `{m['file']}` | {m['mutants']} | {m['killed']} | {m['timeout']} | "
              f"{surv} ({len(m['explained_survivors'])}) | {m['killed_pct']} | {m['pragma_no_mutate_lines']} | "
              f"{m['run_time_s']:.0f} |")
    t = results["total"]
    print(f"| total | | {t['mutants']} | {t['killed']} | {t['timeout']} | {t['survived'] + t['no_tests']} | "
          f"{100 * (t['killed'] + t['timeout']) / max(t['mutants'], 1):.1f} | | {t['run_time_s']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (mutmut --max-children)")
    ap.add_argument("--keep", action="store_true", help="reuse runs/mutants/<name> (mutmut's cache) instead of starting clean")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--table", action="store_true", help="print mutation.json as the README's Markdown table")
    args = ap.parse_args()
    if args.table:      # also re-reads tests/mutation_equivalent.md
        results = json.loads(OUT.read_text())
        write(results)
        print_table(results)
        return
    if args.list:
        for name, mod in MODULES.items():
            print(f"{name:20s} {mod.file:32s} {', '.join(mod.functions) or 'all functions'}")
        return
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        raise SystemExit(f"unknown module(s) {unknown}; known: {', '.join(MODULES)}")
    t0 = time.perf_counter()
    for name in args.modules or list(MODULES):
        r = run_module(name, MODULES[name], args.max_children, args.keep)
        # read back just before the write: runs of other modules at the same time keep their entries
        results = json.loads(OUT.read_text()) if OUT.exists() else {}
        results.setdefault("modules", {})[name] = r
        print(f"{name:20s} {r['mutants']:4d} mutants  killed {r['killed']:4d}  timeout {r['timeout']:3d}  "
              f"survived {r['survived']:3d}  no tests {r['no_tests']:3d}  -> {r['killed_pct']:5.1f}%  "
              f"unexplained {len(r['unexplained_survivors']):3d}  pragma lines {r['pragma_no_mutate_lines']:2d}  "
              f"{r['run_time_s']:7.1f} s", flush=True)
        for k in r["unexplained_survivors"]:
            print(f"    survived: {k}")
        results.update({"tool": "mutmut 3.8.1", "max_children": args.max_children, "cpus": os.cpu_count(),
                        "last_run_s": round(time.perf_counter() - t0, 1),
                        "last_run_modules": args.modules or list(MODULES)})
        write(results)      # after every module: a long run that stops keeps what it measured
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
