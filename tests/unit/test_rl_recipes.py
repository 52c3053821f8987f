"""Every rl/recipes/*.yaml dry-runs through its entrypoint, and every preference recipe in
data_recipes/pref_mixes/ is well formed (and loads where its data is present)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.config import load_config
from data_recipes.preference import MIX_DIR, PreferenceDataError, load_recipe, recipe_path

RL_RECIPES = sorted((Path(__file__).resolve().parents[2] / "rl" / "recipes").glob("*.yaml"))


def entrypoint(recipe: Path):
    if "grpo" in recipe.stem:
        from rl import grpo
        return grpo.main, grpo.GRPOConfig
    from rl import dpo
    return dpo.main, dpo.DPOConfig


@pytest.mark.parametrize("recipe", RL_RECIPES, ids=lambda p: p.stem)
def test_rl_recipe_dry_runs(recipe, capsys):
    main, cls = entrypoint(recipe)
    text = recipe.read_text(encoding="utf-8")
    target = "grpo" if "grpo" in recipe.stem else "dpo"
    assert text.startswith("#") and f"make {target} RECIPE={recipe.stem} " in text   # header shows the command
    with pytest.raises(SystemExit) as e:
        main([str(recipe), "init_from=runs/sft/x", "--dry-run"])
    assert e.value.code == 0
    assert "init_from: runs/sft/x" in capsys.readouterr().out
    cfg = load_config(cls, recipe)
    if cls.__name__ == "DPOConfig":
        assert recipe_path(cfg.data.recipe).is_file()


def test_demo_recipes_exist():
    assert {"demo_dpo", "demo_grpo", "zh_dpo", "zh_grpo"} <= {p.stem for p in RL_RECIPES}


@pytest.mark.parametrize("mix", sorted(MIX_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_preference_recipes_are_well_formed(mix, tmp_path, monkeypatch):
    raw = yaml.safe_load(mix.read_text(encoding="utf-8"))
    assert raw["sources"] and raw.get("dedupe", "prompt") in ("prompt", "pair", "none")
    for src in raw["sources"]:
        assert {"path", "local", "hub"} & set(src), src
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # With an empty data root nothing outside the repo exists: either it loads from the repo,
    # or it says which source is missing.
    try:
        _, data = load_recipe(mix.stem, data_root=tmp_path)
        assert data.rows
    except PreferenceDataError as e:
        assert "not found" in str(e) or "hub is offline" in str(e)
