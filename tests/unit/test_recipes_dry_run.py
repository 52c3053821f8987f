"""Every recipe and benchmark YAML in the repository loads and dry-runs through its entrypoint.

    data_recipes/recipes/*.yaml -> data_recipes.build      pretrain/recipes/*.yaml -> pretrain.train
    sft/recipes/*.yaml          -> sft.train               rl/recipes/*.yaml -> rl.dpo | rl.grpo
    eval/benchmarks/*.yaml      -> eval.run

rl recipes are mapped by a `stage:` key or a `# stage: dpo|grpo` comment, else by `dpo`/`grpo` in
the file name. Runs in-process (runpy) so the heavy imports are paid once; a module that does not
exist yet is skipped with a message.
"""
import contextlib
import importlib.util
import io
import re
import runpy
import sys
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"data_recipes": "data_recipes.build", "pretrain": "pretrain.train", "sft": "sft.train"}


def _rl_module(path: Path) -> str | None:
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    hint = data.get("stage") if isinstance(data, dict) else None
    m = re.search(r"^#\s*stage:\s*(\w+)", text, re.M)
    hint = hint or (m.group(1) if m else None)
    if hint in ("dpo", "grpo"):
        return f"rl.{hint}"
    for stage in ("grpo", "dpo"):      # grpo first: "dpo" is not a substring of it, but be explicit
        if stage in path.stem:
            return f"rl.{stage}"
    return None


def _cases():
    for path in sorted(REPO.glob("*/recipes/*.yaml")):
        folder = path.parent.parent.name
        module = _rl_module(path) if folder == "rl" else FOLDERS.get(folder)
        yield pytest.param(path, module, id=str(path.relative_to(REPO)))
    for path in sorted((REPO / "eval" / "benchmarks").glob("*.yaml")):
        yield pytest.param(path, "eval.run", id=str(path.relative_to(REPO)))


@pytest.mark.parametrize("path, module", list(_cases()))
def test_recipe_dry_run(path, module, monkeypatch):
    if module is None:
        pytest.skip(f"{path.relative_to(REPO)}: no entrypoint known for it (add a `# stage:` comment)")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [module, str(path.relative_to(REPO)), "--dry-run"])
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        # runpy warns that the module was already imported (by an earlier test); harmless here.
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    assert code == 0, f"python -m {module} {path.relative_to(REPO)} --dry-run exited {code}:\n" \
                      f"{err.getvalue()[-2000:]}\n{out.getvalue()[-1000:]}"
    assert out.getvalue().strip(), f"{module} --dry-run printed nothing"
