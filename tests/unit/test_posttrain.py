"""core/posttrain.py: the bridge from trainer logs to metrics.jsonl (TRL callback and LLaMA-Factory's
trainer_state.json), and the config checks shared by SFT, DPO and GRPO."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from core.config import ConfigError
from core.log import read_metrics
from core.posttrain import _record, device_flags, metrics_from_state, resolve_init, trainer_log_callback

KEYS = {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "lr", "rewards/": "reward/", "kl": "kl"}


def test_record_maps_names_in_key_map_order_and_drops_what_cannot_be_plotted():
    logs = {"kl": float("nan"), "learning_rate": 1e-5, "loss": float("nan"), "epoch": 0.5, "grad_norm": None,
            "rewards/mcq/mean": 0.25, "rewards/mcq/std": 0.1, "rewards/fmt/mean": 1.0, "note": "x"}
    rec = _record(logs, KEYS)
    assert list(rec) == ["loss", "lr", "reward/mcq", "reward/fmt"]      # kl NaN and grad_norm None left out
    assert math.isnan(rec["loss"]) and rec["lr"] == 1e-5 and rec["reward/mcq"] == 0.25


def test_trainer_log_callback_writes_one_record_per_training_log(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    cb = trainer_log_callback(path, {"loss": "loss", "learning_rate": "lr", "num_tokens": "tokens",
                                     "mean_token_accuracy": "token_acc"})
    state = SimpleNamespace(max_steps=4, global_step=0)
    cb.on_train_begin(None, state, None)
    for step, tokens in ((1, 100.0), (2, 300.0)):
        state.global_step = step
        cb.on_log(None, state, None, logs={"loss": 2.0 / step, "learning_rate": 1e-4, "num_tokens": tokens,
                                           "mean_token_accuracy": 0.5})
    cb.on_log(None, state, None, logs={"learning_rate": 1e-4})                     # no loss: not a step
    cb.on_log(None, state, None, logs={"train_runtime": 3.5, "train_loss": 1.5})   # the summary
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["loss"] == 1.0
    assert list(rows[1])[1:6] == ["loss", "lr", "tok_per_s", "tokens", "token_acc"]
    assert rows[1]["tokens"] == 300 and rows[1]["tok_per_s"] > 0
    assert cb.last["num_tokens"] == 300.0 and cb.summary == {"train_runtime": 3.5, "train_loss": 1.5}
    assert "step 00002/00004" in capsys.readouterr().out


def test_metrics_from_llamafactory_state(tmp_path):
    state = tmp_path / "trainer_state.json"
    keys = {"loss": "loss", "learning_rate": "lr", "num_input_tokens_seen": "tokens"}
    state.write_text(json.dumps({"max_steps": 2, "log_history": [
        {"epoch": 0.5, "learning_rate": 2e-5, "loss": 6.0, "num_input_tokens_seen": 10, "step": 1},
        {"epoch": 1.0, "learning_rate": 1e-5, "loss": 5.0, "num_input_tokens_seen": 20, "step": 2},
        {"step": 2, "train_loss": 5.5, "train_runtime": 1.0}]}))
    (tmp_path / "metrics.jsonl").write_text('{"step": 9, "loss": 1.0}\n')            # a stale file is replaced
    records = metrics_from_state(state, tmp_path / "metrics.jsonl", keys)
    assert records == [{"loss": 6.0, "lr": 2e-5, "tokens": 10}, {"loss": 5.0, "lr": 1e-5, "tokens": 20}]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    # Fewer steps than logging_steps: the end-of-training train_loss is the one record.
    state.write_text(json.dumps({"max_steps": 1, "log_history": [
        {"step": 1, "train_loss": 5.5, "num_input_tokens_seen": 7, "train_runtime": 1.0}]}))
    assert metrics_from_state(state, tmp_path / "metrics.jsonl", keys) == [{"loss": 5.5, "lr": 0.0, "tokens": 7}]


def test_config_errors_are_user_errors():
    with pytest.raises(ConfigError, match="train.precision must be auto"):
        device_flags("fp16")
    assert device_flags("fp32")["bf16"] is False
    with pytest.raises(ConfigError, match="init_from is required"):
        resolve_init("")
