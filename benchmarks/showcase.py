"""The demo's stage effects over several seeds: `make demo` (or `make showcase`) once per seed, each
seed set for every stage (pretraining init and data order, SFT through inheritance, DPO, GRPO), then
each stage's held-out checks (leaderboard/effects.py) side by side, with how many seeds met each
target and the wall time of each run. Not a test: the figures are recorded, met or missed, in
benchmarks/results/showcase.json, which the README quotes.

Run as:
    .venv/bin/python benchmarks/showcase.py                     # make demo, seeds 0 1 2 (~10 min each)
    .venv/bin/python benchmarks/showcase.py --target showcase   # every stage and check (~25-30 min each)
    .venv/bin/python benchmarks/showcase.py --seeds 3 --out /tmp/showcase.json
    .venv/bin/python benchmarks/showcase.py --target showcase --seeds 1 2 --keep   # add seeds to those recorded
    .venv/bin/python benchmarks/showcase.py --readme    # README's figures block from showcase.json (runs nothing)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.runs import atomic_write_json  # noqa: E402


def run_seed(target: str, seed: int, name: str, log_dir: Path) -> dict:
    """One `make <target>` with every stage seeded; its log goes to log_dir/<name>.log."""
    args = [f"DEMO={name}", f"PRETRAIN_ARGS=train.seed={seed} data.seed={seed}",
            f"DPO_ARGS=train.seed={seed}", f"GRPO_ARGS=train.seed={seed} prompts.seed={seed}"]
    if target == "showcase":
        args[0] = f"SHOWCASE={name}"
    log = log_dir / f"{name}.log"
    t0, load0 = time.time(), os.getloadavg()[0]
    with open(log, "w") as f:
        proc = subprocess.run(["make", "--no-print-directory", target, *args], cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: make {target} (seed {seed}) failed with exit {proc.returncode}; see {log}")
    last = "grpo" if target == "showcase" else "dpo"      # demo.mk: the demo's lineage ends at DPO
    effects = json.loads((ROOT / "runs" / last / name / "effects.json").read_text())
    return {"seed": seed, "run": name, "wall_s": round(wall, 1), "load_avg_at_start": round(load0, 2),
            "log": str(log), "effects": effects}


def kept_runs(entry: dict, target: str, new_seeds: list[int]) -> list[dict]:
    """The runs of an earlier record (`--keep`), their effects read back from their run folders."""
    last = "grpo" if target == "showcase" else "dpo"
    out = []
    for r in entry.get("runs", []):
        if r["seed"] in new_seeds:
            continue
        path = ROOT / "runs" / last / r["run"] / "effects.json"
        if not path.is_file():
            raise SystemExit(f"error: --keep: {path} is gone; rerun seed {r['seed']} instead")
        out.append({**r, "effects": json.loads(path.read_text())})
    return out


def summarise(runs: list[dict]) -> list[dict]:
    """Per (stage, check): the detail of every seed and how many met it."""
    table: dict[tuple[str, str], dict] = {}
    for r in runs:
        for e in r["effects"]:
            for c in e["checks"]:
                row = table.setdefault((e["stage"], c["check"]), {"stage": e["stage"], "check": c["check"],
                                                                  "met": 0, "seeds": len(runs), "per_seed": []})
                row["met"] += bool(c["met"])
                row["per_seed"].append({"seed": r["seed"], "met": c["met"], "detail": c["detail"]})
    return list(table.values())


def deltas(runs: list[dict]) -> list[dict]:
    """Per seed and stage: the accuracy deltas against the parent on each protocol."""
    out = []
    for r in runs:
        for e in r["effects"]:
            for d in e["deltas"]:
                if "error" in d:
                    continue
                out.append({"seed": r["seed"], "stage": e["stage"], "protocol": d["protocol"],
                            "acc_parent": round(d["acc_parent"], 4), "acc": round(d["acc"], 4),
                            "diff": round(d["diff"], 4), "ci95": [round(x, 4) for x in d["ci95"]],
                            "p_value": d["p_value"], "n": d["n"], "unparsed": d.get("unparsed")})
    return out


README = ROOT / "README.md"
BLOCK = ("<!-- showcase-figures: benchmarks/results/showcase.json via benchmarks/showcase.py -->\n",
         "<!-- /showcase-figures -->")


def markdown(record: dict) -> str:
    """The README's figures: per target, the checks met per seed, then every stage delta."""
    out = []
    for target in ("demo", "showcase"):
        if target not in record:
            continue
        t = record[target]
        walls = ", ".join(f"{r['wall_s'] / 60:.1f}" for r in t["runs"])
        out += [f"`make {target}`, seeds {', '.join(map(str, t['seeds']))} (wall minutes per seed: {walls}):", "",
                "| stage | check | met | per seed |", "|---|---|---|---|"]
        for c in t["checks"]:
            per = "; ".join(f"{s['seed']}: {s['detail']}" for s in c["per_seed"])
            out.append(f"| {c['stage']} | {c['check']} | {c['met']}/{c['seeds']} | {per} |")
        out.append("")
        if t["deltas"]:
            out += ["| seed | stage | protocol | parent -> this | diff [95% CI] | p | unparsed |",
                    "|---|---|---|---|---|---|---|"]
            for x in t["deltas"]:
                out.append(f"| {x['seed']} | {x['stage']} | {x['protocol']} | {100 * x['acc_parent']:.1f} -> "
                           f"{100 * x['acc']:.1f} | {100 * x['diff']:+.1f} [{100 * x['ci95'][0]:+.1f}, "
                           f"{100 * x['ci95'][1]:+.1f}] | {x['p_value']:.2g} | {x['unparsed']} |")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def write_readme(record: dict) -> None:
    text = README.read_text(encoding="utf-8")
    head, sep, rest = text.partition(BLOCK[0])
    _, sep2, tail = rest.partition(BLOCK[1])
    if not sep or not sep2:
        raise SystemExit(f"error: {README} has no showcase-figures block ({BLOCK[0].strip()} ... {BLOCK[1]})")
    README.write_text(head + BLOCK[0] + markdown(record) + BLOCK[1] + tail, encoding="utf-8")
    print(f"-> {README} (showcase figures)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", choices=["demo", "showcase"], default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "showcase.json"))
    ap.add_argument("--readme", action="store_true", help="only rewrite README's figures block from --out")
    ap.add_argument("--keep", action="store_true",
                    help="keep the seeds already recorded for this target (their run folders must still exist)")
    args = ap.parse_args()
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {}
    record = record if set(record) <= {"demo", "showcase"} else {}   # one entry per target
    if args.readme:
        return write_readme(record)
    kept = kept_runs(record.get(args.target, {}), args.target, args.seeds) if args.keep else []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = ROOT / "runs" / "showcase_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        name = f"{args.target}-seed{seed}-{stamp}"
        print(f"== make {args.target} seed {seed} -> runs/*/{name} (log {log_dir / name}.log)", flush=True)
        runs.append(run_seed(args.target, seed, name, log_dir))
        print(f"   {runs[-1]['wall_s'] / 60:.1f} min", flush=True)
    runs = sorted(kept + runs, key=lambda r: r["seed"])
    checks = summarise(runs)
    for c in checks:
        print(f"{c['stage']:<9} {c['met']}/{c['seeds']} met  {c['check']}: "
              + " | ".join(s["detail"] for s in c["per_seed"]))
    record[args.target] = {
        "target": args.target, "seeds": [r["seed"] for r in runs], "cpus": os.cpu_count(), "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "note": "each seed a whole `make " + args.target + "` run (setup excluded); wall_s depends on the "
                "machine's load (load_avg_at_start); thresholds from leaderboard/effects.py",
        "checks": checks, "deltas": deltas(runs),
        "runs": [{k: v for k, v in r.items() if k != "effects"} for r in runs]}
    atomic_write_json(out, record)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
