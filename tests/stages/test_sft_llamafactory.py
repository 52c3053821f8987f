"""The llamafactory backend: its train YAML and dataset_info.json (always), and a real 1-step packed LoRA run
through `.venv-llamafactory/bin/llamafactory-cli` (marker `backends`: `make test-backends`; skipped when that venv is absent)."""
import json
import subprocess

import pytest
import torch
import yaml

from conftest import REPO_ROOT
from sft import llamafactory

LF_CLI = llamafactory.cli_path(".venv-llamafactory")


def _cfg(**lora):
    from sft.train import SFTConfig
    cfg = SFTConfig()
    cfg.lora.enabled = lora.get("enabled", True)
    cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.max_grad_norm = 1e-4, 0.0, 1.0
    cfg.train.seed, cfg.train.precision, cfg.train.max_steps = 0, "auto", 7
    cfg.data.max_seq_len_tokens = 256
    return cfg


def test_train_yaml_and_dataset_info(tmp_path, tiny_tokenizer, tiny_model_dir):
    from data_recipes.sft_mix import load_mix, load_recipe, run_decontam
    examples, _ = run_decontam(load_mix(load_recipe("demo"), tiny_tokenizer))
    cfg = _cfg()
    path = llamafactory.prepare(cfg, tmp_path, tiny_model_dir, examples, "sft_demo", cpu=True)
    y = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert y["stage"] == "sft" and y["do_train"] is True and y["finetuning_type"] == "lora"
    assert y["lora_rank"] == 16 and y["lora_alpha"] == 32 and y["lora_target"].split(",") == cfg.lora.target_modules
    assert y["template"] == "chatml" and y["train_on_prompt"] is False and y["cutoff_len"] == 256
    assert y["use_cpu"] is True and y["bf16"] is False and y["report_to"] == "none"
    assert y["learning_rate"] == 1e-4 and y["max_steps"] == 7 and y["lr_scheduler_type"] == "cosine"
    assert y["model_name_or_path"] == str(tiny_model_dir.resolve())
    info = json.loads((tmp_path / "llamafactory" / "data" / "dataset_info.json").read_text(encoding="utf-8"))
    assert list(info) == [y["dataset"]] and y["dataset_dir"] == str(tmp_path / "llamafactory" / "data")
    rows = json.loads((tmp_path / "llamafactory" / "data" / info["sft_demo"]["file_name"]).read_text(encoding="utf-8"))
    assert len(rows) == len(examples)
    full = llamafactory.train_yaml(_cfg(enabled=False), tiny_model_dir, tmp_path, "d", tmp_path / "o", cpu=False)
    assert full["finetuning_type"] == "full" and "lora_rank" not in full and "use_cpu" not in full
    assert full["bf16"] is True
    assert y["packing"] is False and y["neat_packing"] is False
    packed = _cfg()
    packed.data.packing = True     # packed examples isolated, as in the trl backend
    p = llamafactory.train_yaml(packed, tiny_model_dir, tmp_path, "d", tmp_path / "o", cpu=True)
    assert p["packing"] is True and p["neat_packing"] is True


@pytest.mark.backends
def test_real_llamafactory_lora_one_step(tmp_path, tiny_run_dir, tiny_model_dir):
    if not LF_CLI.is_file():
        pytest.skip(f"{LF_CLI} absent: run `make setup-llamafactory` to enable this test")
    # transformers 5.6 (LLaMA-Factory's) reads the tokenizer our 5.24 saved, with the same ids.
    py = LF_CLI.parent / "python"
    text = "广东省的省会是广州。<|im_end|>"
    theirs = subprocess.run([str(py), "-c", "import sys,json; from transformers import AutoTokenizer; "
                             "t=AutoTokenizer.from_pretrained(sys.argv[1]); print(json.dumps(t.encode(sys.argv[2], "
                             "add_special_tokens=False)))", str(tiny_model_dir), text],
                            capture_output=True, text=True, check=True, env={"HF_HUB_OFFLINE": "1"})
    from transformers import AutoModelForCausalLM, AutoTokenizer
    assert json.loads(theirs.stdout.strip().splitlines()[-1]) == \
        AutoTokenizer.from_pretrained(tiny_model_dir).encode(text, add_special_tokens=False)
    from sft.train import main
    run = main([str(REPO_ROOT / "sft/recipes/demo.yaml"), f"init_from={tiny_run_dir}", f"run.root={tmp_path}",
                "backend=llamafactory", "lora.enabled=true", "train.max_steps=1", "train.batch_size=2", "data.packing=true",
                "optim.warmup_steps=0", "optim.lr=1e-2", "samples.prompts=[你是谁？]", "samples.max_new_tokens=4"])
    m = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert m["backend"] == "llamafactory" and m["steps"] == 1 and m["finetuning"] == "lora"
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "metrics.jsonl").is_file()
    ids = torch.tensor([[1, 40, 41, 42, 2]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(run / "model")(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_run_dir / "model")(ids).logits
    assert not torch.allclose(merged, base, atol=1e-5)
