"""Export a pretraining run (or one of its checkpoints) as an HF model folder.

Writes `<run>/model/`: model.safetensors, config.json, generation_config.json and the tokenizer
copied from the run's data folder. The standard (`swiglu`) variant is a plain Qwen2 folder that
loads with `AutoModelForCausalLM.from_pretrained(path)` and no trust_remote_code; the other
variants load after `import pretrain.model` (which registers their model_type with transformers).
The folder is written beside the target and renamed into place, so a crash never leaves half a model.

Run as:
    make export RUN=runs/pretrain/<run>                     # = python -m pretrain.export <run>
    python -m pretrain.export <run> checkpoint=<run>/checkpoints/step_000500 out=/tmp/model
(CPU or GPU: export loads the sharded checkpoint into one unsharded CPU model.)
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from core.runs import RunError, check_tokenizer_files
from pretrain import checkpoint as ckpt_lib
from pretrain.model import build_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def hf_config_from_state(state: dict):
    from transformers import CONFIG_MAPPING  # our model types are registered by pretrain.model's import
    return CONFIG_MAPPING[state["hf_config"]["model_type"]].from_dict(state["hf_config"])


def save_hf(out_dir: Path, model: torch.nn.Module, tokenizer_dir: Path) -> Path:
    """Save an unsharded fp32 model + tokenizer + generation config to `out_dir` atomically."""
    from transformers import AutoTokenizer, GenerationConfig
    out_dir = Path(out_dir)
    tokenizer_dir = Path(tokenizer_dir)
    check_tokenizer_files(tokenizer_dir)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.config.use_cache = True  # training turned the KV cache off; generation wants it
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               bos_token_id=None, do_sample=False, max_new_tokens=256)
    model.save_pretrained(tmp, safe_serialization=True)
    for name in TOKENIZER_FILES:  # copy byte-for-byte so tokenizer_sha256 matches the data folder's
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, tmp / name)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def export_checkpoint(ckpt: Path, out_dir: Path) -> Path:
    state = ckpt_lib.read_state(ckpt)
    model = build_model(hf_config_from_state(state))
    ckpt_lib.load_model_only(ckpt, model)
    tok_dir = Path(state["data_path"]) / "tokenizer"
    if not tok_dir.is_dir():
        raise RunError(f"tokenizer missing: {tok_dir} (the run's data folder); cannot export {ckpt} without it")
    return save_hf(out_dir, model, tok_dir)


def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if argv else 2)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    run = Path(argv[0])
    opts = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
    unknown = set(opts) - {"checkpoint", "out"}
    if unknown or any("=" not in a for a in argv[1:]):
        raise SystemExit(f"usage: python -m pretrain.export <run> [checkpoint=<dir>] [out=<dir>] (got {argv[1:]})")
    ckpt = Path(opts["checkpoint"]) if "checkpoint" in opts else ckpt_lib.latest(run / "checkpoints")
    if ckpt is None:
        raise SystemExit(f"{run}/checkpoints has no complete checkpoint to export")
    out = Path(opts.get("out", run / "model"))
    try:
        export_checkpoint(ckpt, out)
    except RunError as e:
        raise SystemExit(f"export failed: {e}")
    print(f"exported {ckpt} -> {out}")
    return out


if __name__ == "__main__":
    main()
