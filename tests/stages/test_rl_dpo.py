"""`python -m rl.dpo` on a fake finished SFT run with the tiny model: a few TRL steps (finite loss,
parameters changed, reward margin recorded, run folder complete), bad rows, and the LLaMA-Factory
backend's generated config (its real run is slow and needs .venv-llamafactory)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from core.log import read_metrics
from core.runs import require_finished


def tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(model_dir / "model.safetensors"))


def test_dpo_trl_few_steps(tmp_path, tiny_sft_run):
    from rl.dpo import main
    out = main(["rl/recipes/demo_dpo.yaml", f"init_from={tiny_sft_run}", f"run.root={tmp_path}", "run.name=t",
                "data.max_rows=16", "train.max_steps=3", "train.batch_size=4", "train.log_every_steps=1",
                "optim.lr=1e-3", "optim.warmup_steps=0"])
    manifest = require_finished(out, stage="dpo")
    assert manifest["parent"] == str(tiny_sft_run) and manifest["steps"] == 3
    assert manifest["data_recipe"]["name"] == "demo" and len(manifest["data_recipe"]["hash"]) == 64
    assert manifest["tokens_seen"] > 0 and manifest["tokenizer_sha256"]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["reward_margin"])
        assert {"reward_acc", "logp_chosen", "logp_rejected", "lr"} <= set(r)
    assert rows[0]["reward_margin"] != rows[-1]["reward_margin"]
    before, after = tensors(tiny_sft_run / "model"), tensors(out / "model")
    assert set(before) == set(after)
    assert any(not (before[k] == after[k]).all() for k in before)
    decon = json.loads((out / "decontamination.json").read_text())
    assert decon["n_checked"] == 16 and decon["policy"] == "drop"
    # The exported model is a plain HF folder with the chat template.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    AutoModelForCausalLM.from_pretrained(out / "model")


def test_dpo_bad_rows_stop_before_any_run_folder(tmp_path, tiny_sft_run, user_error):
    from rl.dpo import main
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "问", "chosen": "同", "rejected": "同"}, ensure_ascii=False) + "\n"
                   + json.dumps({"prompt": "问2", "rejected": "乙"}, ensure_ascii=False) + "\n", encoding="utf-8")
    recipe = tmp_path / "bad_mix.yaml"
    recipe.write_text(yaml.safe_dump({"sources": [{"path": str(bad)}]}))
    err = user_error(main, [f"init_from={tiny_sft_run}", f"data.recipe={recipe}", f"run.root={tmp_path}",
                            "run.name=bad"])
    assert err.startswith("data error: ")
    assert f"{bad}:1: 'chosen' and 'rejected' are identical" in err and f"{bad}:2: missing 'chosen'" in err
    assert not (tmp_path / "dpo" / "bad").exists()        # stopped before any run folder was made


def test_dpo_missing_benchmark_folder_is_a_clear_error(tmp_path, tiny_sft_run, user_error):
    from rl.dpo import main
    err = user_error(main, ["rl/recipes/demo_dpo.yaml", f"init_from={tiny_sft_run}", f"run.root={tmp_path}",
                            "run.name=nb", f"decontam.benchmarks=[ceval:{tmp_path}/nowhere]"])
    assert err.startswith("decontamination error: benchmark 'ceval' not found")
    assert not (tmp_path / "dpo" / "nb" / "manifest.json").exists()


def test_dpo_refuses_an_unfinished_parent(tmp_path, tiny_sft_run, user_error):
    from rl.dpo import main
    unfinished = tmp_path / "sft" / "half"
    shutil.copytree(tiny_sft_run / "model", unfinished / "model")
    assert "unfinished" in user_error(main, [f"init_from={unfinished}", f"run.root={tmp_path}"])


def test_llamafactory_config_generation(tmp_path, tiny_sft_run):
    from data_recipes.preference import load_recipe
    from rl.dpo import DPOConfig
    from rl.llamafactory_dpo import write_inputs
    from core.config import ConfigError, load_config
    cfg = load_config(DPOConfig, "rl/recipes/demo_dpo.yaml", ["lora.enabled=true", "dpo.beta=0.2"])
    _, data = load_recipe("demo")
    data.rows[0]["prompt"].insert(0, {"role": "system", "content": "你是助手。"})
    path = write_inputs(cfg, tmp_path, tiny_sft_run / "model", data.rows, steps=7, flags={"bf16": False, "use_cpu": True})
    conf = yaml.safe_load(path.read_text())
    assert conf["stage"] == "dpo" and conf["finetuning_type"] == "lora" and conf["pref_beta"] == 0.2
    assert conf["max_steps"] == 7 and conf["use_cpu"] is True and conf["template"] == "chatml"
    assert conf["default_system"] == "" and conf["lora_target"].startswith("q_proj")
    info = json.loads((Path(conf["dataset_dir"]) / "dataset_info.json").read_text())
    assert info[conf["dataset"]]["ranking"] is True
    pairs = json.loads((Path(conf["dataset_dir"]) / "pairs.json").read_text())
    assert len(pairs) == len(data.rows)
    assert pairs[0]["system"] == "你是助手。" and pairs[0]["conversations"][0]["from"] == "human"
    assert pairs[0]["chosen"] == {"from": "gpt", "value": data.rows[0]["chosen"][0]["content"]}
    cfg2 = load_config(DPOConfig, None, ["dpo.loss_type=[sigmoid,sft]"])
    with pytest.raises(ConfigError, match="one dpo.loss_type"):
        write_inputs(cfg2, tmp_path, tiny_sft_run / "model", data.rows, 1, {"bf16": False, "use_cpu": True})


@pytest.mark.backends
def test_dpo_llamafactory_backend_runs(tmp_path, tiny_sft_run):
    from rl.llamafactory_dpo import LF_CLI
    if not LF_CLI.is_file():
        pytest.skip(f"{LF_CLI} not installed (make setup-llamafactory)")
    from rl.dpo import main
    out = main(["rl/recipes/demo_dpo.yaml", f"init_from={tiny_sft_run}", f"run.root={tmp_path}", "backend=llamafactory",
                "data.max_rows=16", "train.max_steps=2", "train.batch_size=4", "train.log_every_steps=1"])
    manifest = require_finished(out, stage="dpo")
    assert manifest["backend"] == "llamafactory" and manifest["steps"] == 2
    rows = read_metrics(out / "metrics.jsonl")
    assert rows and all(math.isfinite(r["loss"]) for r in rows)
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "chat_template.jinja").is_file()
