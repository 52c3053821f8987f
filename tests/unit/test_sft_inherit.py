"""What SFT inherits from its parent run (sft/train.py INHERITS, applied by core.posttrain.inherit):
every declared field exists, in SFT's config and in each named parent stage's config dataclass, with
the fallback's type; and inherit() takes the parent's value by the parent's stage, else the fallback.
Can fail: rename pretrain's optim.grad_clip_norm, or declare a parent field with a typo."""
from __future__ import annotations

import typing

import pytest
import yaml


def _stage_configs() -> dict:
    from pretrain.train import PretrainConfig
    from rl.dpo import DPOConfig
    from rl.grpo import GRPOConfig
    from sft.train import SFTConfig
    return {"pretrain": PretrainConfig, "sft": SFTConfig, "dpo": DPOConfig, "grpo": GRPOConfig}


def _field(cls, dotted: str):
    """(type without Optional, default) of the field `section.name` of a config dataclass."""
    section, name = dotted.split(".")
    try:
        sec_cls = typing.get_type_hints(cls)[section]
        tp = typing.get_type_hints(sec_cls)[name]
    except KeyError:
        pytest.fail(f"{cls.__name__} has no field {dotted}")
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return (args[0] if args else tp), sec_cls.__dataclass_fields__[name].default


def test_every_declared_field_exists_with_the_fallbacks_type():
    from sft.train import INHERITS, SFTConfig
    configs = _stage_configs()
    assert INHERITS
    for item in INHERITS:
        tp, default = _field(SFTConfig, item.key)
        assert default is None, f"{item.key}: unset must be None in SFTConfig to be inherited"
        assert tp is type(item.fallback), f"{item.key}: fallback {item.fallback!r} is not a {tp.__name__}"
        for stage, parent_key in item.parents.items():
            assert stage in configs, f"{item.key}: unknown parent stage {stage!r}"
            parent_tp, _ = _field(configs[stage], parent_key)
            assert parent_tp is tp, f"{item.key} <- {stage} {parent_key}: {parent_tp.__name__} vs {tp.__name__}"


def test_inherit_reads_the_parent_stages_field_else_the_fallback(tmp_path, capsys):
    from core.posttrain import inherit
    from sft.train import INHERITS, SFTConfig
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "optim": {"lr": 3e-4, "grad_clip_norm": 0.5, "max_grad_norm": 9.0},
        "data": {"seq_len_tokens": 128}, "train": {"seed": 7}}))
    cfg = SFTConfig()
    cfg.train.seed = 3                                   # set in the recipe: kept, not logged
    got = inherit(cfg, tmp_path, "pretrain", INHERITS)
    assert cfg.optim.lr == 3e-4 and cfg.optim.max_grad_norm == 0.5 and cfg.data.max_seq_len_tokens == 128
    assert cfg.train.seed == 3 and "train.seed" not in got
    assert cfg.optim.weight_decay == 0.0 and got["optim.weight_decay"]["from"].startswith("default")
    assert got["optim.max_grad_norm"]["from"].endswith("config.yaml: optim.grad_clip_norm")
    assert "inherit optim.lr = 0.0003" in capsys.readouterr().out
    # The same file read as an SFT parent's: SFT's own field names apply.
    cfg = SFTConfig()
    inherit(cfg, tmp_path, "sft", INHERITS)
    assert cfg.optim.max_grad_norm == 9.0 and cfg.data.max_seq_len_tokens == 1024
    # No parent run (an HF folder): every fallback.
    cfg = SFTConfig()
    inherit(cfg, None, None, INHERITS)
    assert (cfg.optim.lr, cfg.train.precision, cfg.data.max_seq_len_tokens) == (2e-5, "auto", 1024)
