from dataclasses import dataclass, field

import pytest

from core.config import ConfigError, load_config, parse_args
from core.errors import entrypoint


@dataclass
class Optim:
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 10


@dataclass
class Cfg:
    name: str = "x"
    use_bf16: bool = False
    max_steps: int = 100
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)
    limit: int | None = None


def test_defaults_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_steps: 5\noptim: {lr: 1.0e-3}\n")
    cfg = load_config(Cfg, recipe, ["optim.warmup_steps=2", "use_bf16=true", "optim.lr=2e-5",
                                    "tags=[a, b]", "optim.betas=0.8,0.9", "limit=none"])
    assert cfg.max_steps == 5 and cfg.optim.warmup_steps == 2 and cfg.use_bf16 is True
    assert cfg.optim.lr == pytest.approx(2e-5) and isinstance(cfg.optim.lr, float)
    assert cfg.tags == ["a", "b"] and cfg.optim.betas == [0.8, 0.9] and cfg.limit is None
    assert load_config(Cfg, recipe, ["limit=7"]).limit == 7
    # A list that YAML cannot parse falls back to a comma split instead of crashing.
    assert load_config(Cfg, None, ["tags=[a, Who are you?: x]"]).tags == ["a", "Who are you?: x"]


def test_unknown_keys_name_the_key_and_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim: {lrr: 1}\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr.*r\.yaml"):
        load_config(Cfg, recipe)
    with pytest.raises(ConfigError, match="'bogus'"):
        load_config(Cfg, None, ["bogus=1"])


def test_type_errors(tmp_path):
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(Cfg, None, ["max_steps=abc"])
    with pytest.raises(ConfigError, match="use_bf16"):
        load_config(Cfg, None, ["use_bf16=maybe"])
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(Cfg, None, ["max_steps=1.5"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, tmp_path / "missing.yaml")


def test_dry_run_prints_and_exits(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(Cfg, ["max_steps=3", "--dry-run"], prog="t")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "max_steps: 3" in out and "lr: 0.0003" in out


def test_bad_override_is_a_config_error_and_exits_2_through_an_entrypoint(capsys):
    with pytest.raises(ConfigError, match="nope"):
        parse_args(Cfg, ["nope=1"], prog="t")

    @entrypoint
    def main(argv=None):
        return parse_args(Cfg, argv, prog="t")
    with pytest.raises(SystemExit) as e:
        main(["nope=1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("config error: ") and "nope" in err and "Traceback" not in err
    assert main(["max_steps=3"])[0].max_steps == 3      # no error: main's own return value
