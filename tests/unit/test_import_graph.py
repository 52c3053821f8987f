"""The house's import directions, checked over the source with `ast` (lazy imports inside functions
count too): no import circles between modules, and none of the forbidden arrows

    core         -> any stage
    data_recipes -> eval, sft, rl, pretrain
    eval         -> sft, rl, pretrain
    pretrain     -> sft, rl, eval
    leaderboard  -> torch, or any stage (it reads result files through core.results only)

Fails by naming the edge and the file:line that makes it. Can fail: add `import eval.data` to any
data_recipes module, or `from pretrain import model` to eval/run.py, and it goes red.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "data_recipes", "pretrain", "sft", "rl", "eval", "leaderboard")
STAGES = ("data_recipes", "pretrain", "sft", "rl", "eval", "leaderboard")
FORBIDDEN = {
    "core": set(STAGES),
    "data_recipes": {"eval", "sft", "rl", "pretrain"},
    "eval": {"sft", "rl", "pretrain"},
    "pretrain": {"sft", "rl", "eval"},
    "leaderboard": set(STAGES) - {"leaderboard"} | {"torch"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file; `from a import b` resolves to a.b when
    a.b is a module of ours, else to a."""
    out = []
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full if full in modules else base, node.lineno))
    return out


def graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    modules = source_modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[tuple[str, str], str] = {}
    for m, path in modules.items():
        for target, line in imports_of(path, modules):
            # Importing a.b.c runs a and a.b too; the deepest module of ours is the edge.
            t = target
            while t and t not in modules:
                t = t.rpartition(".")[0]
            name = t or target
            if name != m:
                edges[m].add(name)
                where.setdefault((m, name), f"{path.relative_to(REPO)}:{line}")
    return edges, where


def test_no_forbidden_directions():
    edges, where = graph()
    bad = []
    for src, targets in edges.items():
        for t in targets:
            top_src, top_t = src.split(".")[0], t.split(".")[0]
            if top_t in FORBIDDEN.get(top_src, ()):
                bad.append(f"{src} -> {t} ({where[(src, t)]})")
    assert not bad, "forbidden import directions:\n  " + "\n  ".join(sorted(bad))


def test_no_import_cycles():
    edges, where = graph()
    ours = {m: {t for t in ts if t in edges} for m, ts in edges.items()}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def strong(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in ours[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in ours:
        if v not in index:
            strong(v)
    detail = []
    for comp in cycles:
        inner = [f"{a} -> {b} ({where[(a, b)]})" for a in comp for b in ours[a] if b in comp]
        detail.append("; ".join(inner))
    assert not cycles, "import circles:\n  " + "\n  ".join(detail)


def test_leaderboard_imports_no_torch():
    """Transitively, at run time: building the board must not load torch (or any stage)."""
    code = ("import sys, leaderboard.build, leaderboard.plots; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'data_recipes', 'pretrain', 'sft', 'rl', 'eval')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
