"""sft.train end to end on the tiny model (tiny_run_dir as INIT): full fine-tuning and LoRA for a few
steps, the run folder and manifest, merge == adapter logits, bad input stopping before any output."""
import json
import math

import pytest
import torch
import yaml

from conftest import REPO_ROOT

DEMO = str(REPO_ROOT / "sft" / "recipes" / "demo.yaml")
FAST = ["train.batch_size=4", "train.log_every_steps=1", "optim.warmup_steps=0",
        "samples.prompts=[你是谁？, Who are you]", "samples.max_new_tokens=4"]


def _sft(tmp_path, init, *extra):
    from sft.train import main
    return main([DEMO, f"init_from={init}", f"run.root={tmp_path / 'runs'}", *FAST, *extra])


def _weights(model_dir):
    from safetensors.torch import load_file
    return load_file(str(model_dir / "model.safetensors"))


def test_full_sft_run_folder_manifest_and_learning(tmp_path, tiny_run_dir):
    run = _sft(tmp_path, tiny_run_dir, "train.max_steps=3", "optim.lr=null")   # the demo recipe sets one
    m = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert m["stage"] == "sft" and m["parent"] == str(tiny_run_dir) and m["backend"] == "trl"
    assert m["finetuning"] == "full" and m["steps"] == 3 and m["tokens_seen"] > 0
    assert m["data_recipe"]["name"] == "demo" and len(m["data_recipe"]["hash"]) == 64
    assert m["tokenizer_sha256"] and math.isfinite(m["final_loss"])
    # The tiny fixture's config.yaml has no optimiser settings: every one falls back, and says so.
    assert m["inherited"]["optim.lr"] == {"value": 2e-5, "from": "default (not set in the recipe or the parent)"}
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 2e-5
    for name in ("config.yaml", "data_recipe.yaml", "data_report.json", "decontamination.json", "metrics.jsonl",
                 "samples.md", "model/config.json", "model/model.safetensors", "model/tokenizer.json",
                 "model/generation_config.json"):
        assert (run / name).is_file(), name
    decon = json.loads((run / "decontamination.json").read_text(encoding="utf-8"))
    assert decon["n_dropped"] == 2 and decon["per_benchmark"] == {"demo": 2}
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in rows)
    samples = (run / "samples.md").read_text(encoding="utf-8")
    assert "## 你是谁？" in samples and "## Who are you" in samples
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert "generation" in tok.chat_template
    assert json.loads((run / "model/generation_config.json").read_text())["eos_token_id"] == tok.eos_token_id
    before, after = _weights(tiny_run_dir / "model"), _weights(run / "model")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) - 1, f"only {changed} changed"


def test_lora_merge_equals_adapter_logits(tmp_path, tiny_run_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    # INIT named by its model/ folder: resolved as the run, which is recorded as the parent (issue 17).
    run = _sft(tmp_path, tiny_run_dir / "model", "train.max_steps=2", "lora.enabled=true", "lora.r=4",
               "lora.alpha=8", "optim.lr=5e-2")
    m = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert m["finetuning"] == "lora" and m["trainable_params"] < m["params"] / 2
    assert m["parent"] == str(tiny_run_dir)
    assert (run / "adapter" / "adapter_config.json").is_file()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 2, 3, 45, 46]])
    base = AutoModelForCausalLM.from_pretrained(tiny_run_dir / "model").eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, run / "adapter").eval()
        adapter_logits = adapted(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(run / "model").eval()(ids).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-5)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)   # the adapter learned something


def test_bad_input_stops_before_any_output(tmp_path, tiny_run_dir, user_error):
    (tmp_path / "bad.jsonl").write_text('{"instruction": "问"}\n{"instruction": "又问"}\n{"instruction": "x", '
                                        '"output": "y"}\n', encoding="utf-8")
    mix = tmp_path / "bad_mix.yaml"
    mix.write_text(yaml.safe_dump({"name": "bad", "data_root": str(tmp_path), "decontam": {"benchmarks": {"demo": ""}},
                                   "sources": [{"name": "b", "format": "alpaca", "path": "bad.jsonl"}]}),
                   encoding="utf-8")
    assert user_error(_sft, tmp_path, tiny_run_dir, f"data.recipe={mix}").startswith("data error: ")
    unfinished = tmp_path / "unfinished"
    (unfinished / "model").mkdir(parents=True)
    assert "no manifest.json" in user_error(_sft, tmp_path, unfinished)
    assert user_error(_sft, tmp_path, tiny_run_dir, "backend=nemo").startswith("config error: backend must be")
    assert not (tmp_path / "runs" / "sft").exists()


@pytest.mark.parametrize("recipe", sorted((REPO_ROOT / "sft" / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_dry_run(recipe, capsys):
    from core.config import load_config, parse_args
    from data_recipes.sft_mix import load_recipe
    from sft.train import SFTConfig
    with pytest.raises(SystemExit) as e:
        parse_args(SFTConfig, [str(recipe), "--dry-run"], prog="sft.train")
    assert e.value.code == 0 and "recipe:" in capsys.readouterr().out
    cfg = load_config(SFTConfig, recipe)
    assert load_recipe(cfg.data.recipe).sources   # the data recipe it names parses too


def test_packed_examples_do_not_attend_to_each_other(tmp_path, tiny_model_dir):
    """data.packing=true: sft/train.py keeps TRL's packing strategy (best-fit decreasing), which
    trains padding-free: one row, position_ids restarting at each example, no attention mask; from
    restarting position_ids transformers builds a block-diagonal mask for SDPA when no cache is in
    use (SFTTrainer.compute_loss passes use_cache=False). So each packed example's logits equal its
    logits alone; the plain causal row (no position_ids) would let later examples see earlier ones."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLConfig
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    assert TRLConfig.__dataclass_fields__["packing_strategy"].default in ("bfd", "bfd_split")  # -> pads free
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    examples = [torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist() for n in (7, 12, 5)]
    packed_row = {"input_ids": sum(examples, []), "seq_lengths": [len(e) for e in examples]}   # as bfd packs
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([packed_row])
    assert "attention_mask" not in batch and batch["position_ids"][0].tolist() == [*range(7), *range(12), *range(5)]
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0]
        leaky = model(input_ids=batch["input_ids"]).logits[0]
        o = 0
        for i, e in enumerate(examples):
            alone = model(input_ids=torch.tensor([e])).logits[0]
            assert torch.allclose(packed[o:o + len(e)], alone, atol=1e-5)
            if i > 0:   # without the restart, later examples see the earlier ones
                assert not torch.allclose(leaky[o:o + len(e)], alone, atol=1e-3)
            o += len(e)


def test_packed_sft_run(tmp_path, tiny_run_dir):
    """data.packing=true end to end (zh_mix packs): TRL packs padding-free on CPU/SDPA and trains."""
    run = _sft(tmp_path, tiny_run_dir, "train.max_steps=2", "data.packing=true")
    m = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert m["steps"] == 2 and math.isfinite(m["final_loss"]) and m["tokens_seen"] > 0
