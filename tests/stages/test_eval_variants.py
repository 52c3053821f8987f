"""A model with one of our non-standard FFN variants (own model_type, defined in core/models.py) is
evaluated by a fresh `python -m eval.run` process: the eval loader must register the variants
itself (through core.models.load_model), without trust_remote_code."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_fresh_eval_process_loads_soft_moe_model(tiny_tokenizer, tmp_path):
    from core.models import build_model
    from pretrain.model import model_config
    cfg = SimpleNamespace(size="debug", ffn="soft_moe", se_reduction=4, moe_num_experts=4, moe_slots_per_expert=2,
                          moe_expert_intermediate_size=0, rope_theta=10000.0, init_std=0.02)
    model = build_model(model_config(cfg, len(tiny_tokenizer), pad_token_id=tiny_tokenizer.pad_token_id,
                                     eos_token_id=tiny_tokenizer.eos_token_id), seed=0)
    model_dir = tmp_path / "moe"
    model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "zhllm_qwen2_softmoe"
    out = subprocess.run([sys.executable, "-m", "eval.run", "eval/benchmarks/demo.yaml", f"model={model_dir}",
                          f"out_dir={tmp_path / 'eval'}", "limit=1", "bootstrap_samples=10"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "eval" / "demo.base-5shot-logits.json").read_text())
    assert result["n_questions"] == 4 and result["model"]["params"] > 0
