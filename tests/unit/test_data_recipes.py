"""Every data recipe dry-runs (hub recipes included: nothing is fetched), and config errors are named."""
from pathlib import Path

import pytest

from data_recipes.build import BuildConfig, main
from core.config import load_config

RECIPES = sorted((Path(__file__).resolve().parents[2] / "data_recipes" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_dry_run(recipe, capsys):
    assert main([str(recipe), "--dry-run"]) is None
    out = capsys.readouterr().out
    assert "# plan" in out and "operators:" in out
    cfg = load_config(BuildConfig, recipe)
    assert cfg.sources, f"{recipe} lists no sources"


def test_demo_recipe_is_small_and_local():
    cfg = load_config(BuildConfig, RECIPES[0].parent / "demo.yaml")
    assert cfg.tokenizer.vocab_size <= 8192 and cfg.data_root and not any(s.hub for s in cfg.sources)


@pytest.mark.parametrize("override, message", [
    (["on_error=maybe"], "on_error must be quarantine or fail"),
    (["clean.operators=[{name: nope}]"], "unknown operator 'nope'"),
    (["dedupe.bogus=1"], "unknown config key 'dedupe.bogus'"),
])
def test_config_errors_are_named(override, message, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(RECIPES[0].parent / "demo.yaml"), *override, "--dry-run"])
    assert e.value.code == 2 and message in capsys.readouterr().err
