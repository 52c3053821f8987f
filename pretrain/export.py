"""Export a pretraining run (or one of its checkpoints) as an HF model folder.

Writes `<run>/model/` with `core.models.save_hf`: model.safetensors, config.json,
generation_config.json and the tokenizer copied byte-for-byte from the run's data folder. The
standard (`swiglu`) variant is a plain Qwen2 folder that loads with
`AutoModelForCausalLM.from_pretrained(path)` and no trust_remote_code; every variant loads with
`core.models.load_model(path)`. The folder is written beside the target and renamed into place,
so a crash never leaves half a model.

Run as:
    make export RUN=runs/pretrain/<run>                     # = python -m pretrain.export <run>
    python -m pretrain.export <run> checkpoint=<run>/checkpoints/step_000500 out=/tmp/model
(CPU or GPU: export loads the sharded checkpoint into one unsharded CPU model.)
"""
from __future__ import annotations

import sys
from pathlib import Path

from core.config import ConfigError
from core.errors import entrypoint
from core.models import build_model, config_from_dict, save_hf
from core.runs import RunError, RunLock
from pretrain import checkpoint as ckpt_lib


def hf_config_from_state(state: dict):
    """The HF config a checkpoint was trained with."""
    return config_from_dict(state["hf_config"])


def export_checkpoint(ckpt: Path, out_dir: Path) -> Path:
    state = ckpt_lib.read_state(ckpt)
    model = build_model(hf_config_from_state(state))
    ckpt_lib.load_model_only(ckpt, model)
    tok_dir = Path(state["data_path"]) / "tokenizer"
    if not tok_dir.is_dir():
        raise RunError(f"tokenizer missing: {tok_dir} (the run's data folder); cannot export {ckpt} without it")
    return save_hf(out_dir, model, None, tokenizer_dir=tok_dir, fresh_generation_config=True)


@entrypoint
def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if argv else 2)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    run = Path(argv[0])
    if not run.is_dir():
        raise RunError(f"run folder not found: {run}")
    opts = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
    unknown = set(opts) - {"checkpoint", "out"}
    if unknown or any("=" not in a for a in argv[1:]):
        raise ConfigError(f"usage: python -m pretrain.export <run> [checkpoint=<dir>] [out=<dir>] (got {argv[1:]})")
    ckpt = Path(opts["checkpoint"]) if "checkpoint" in opts else ckpt_lib.latest(run / "checkpoints")
    if ckpt is None:
        raise RunError(f"{run}/checkpoints has no complete checkpoint to export")
    out = Path(opts.get("out", run / "model"))
    with RunLock(run):          # not while the run trains, or another export writes it
        export_checkpoint(ckpt, out)
    print(f"exported {ckpt} -> {out}")
    return out


if __name__ == "__main__":
    main()
