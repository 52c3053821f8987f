"""The house's size limits: no source file over 500 lines, no function over 80 lines unless the line
of its `def` (or the line above) says why with a `# long:` comment. Can fail: paste 81 lines into any
function, or grow a module past 500 lines."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "data_recipes", "pretrain", "sft", "rl", "eval", "leaderboard", "benchmarks")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 80


def sources():
    return [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]


def test_no_file_over_500_lines():
    long = [f"{p.relative_to(REPO)}: {n}" for p in sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES]
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_no_unexplained_long_function():
    bad = []
    for p in sources():
        lines = p.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                said = "# long:" in lines[node.lineno - 1] or (node.lineno > 1 and "# long:" in lines[node.lineno - 2])
                if n > MAX_FUNCTION_LINES and not said:
                    bad.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name}() {n} lines")
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines without a `# long:` reason: {bad}"
