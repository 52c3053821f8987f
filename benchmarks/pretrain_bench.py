"""Pretraining throughput: our loop (pretrain.train) vs transformers `Trainer`, same run.

Both train the same model (four configs, see CONFIGS: the demo's debug size at the demo recipe's
shape, a Qwen2 with hidden 256 and 4 layers with the demo tokenizer's ~4k vocabulary and with 32k,
and the registry's ~0.1B with 32k; built by core.models.build_model with the same seed) on the same blocks
(the BlockLoader order of one token folder written here from the demo corpus), without attention
masks (full blocks: SDPA's causal path for both), with the same sequence length, batch, optimiser
(fused AdamW, grad clip 1.0, warmup + cosine) and precision: bf16 autocast when the CPU supports
bf16 (Trainer: bf16=True; ours: train.precision=bf16), fp32 otherwise (`--precision`);
torch.compile off for both unless `--compile` (then on for both: Trainer compiles the model, our
loop each block). One untimed run of each side comes first (a process's first run is slow); then
the runs alternate (ours, Trainer, ours, Trainer, ...) and the headline is the median of the
per-repetition ratios (each pair runs back to back, so load from other processes hurts both
alike); best-vs-best is recorded as well. Per-step time is the median of steps after the warmup
ones, data loading and the optimiser step included. Trainer logs once at the end (logging_steps
huge), loads data without workers and computes the loss the way transformers does (full logits
upcast to fp32); our loop takes it from the final hidden states with a chunked lm_head +
cross-entropy (pretrain.model.linear_cross_entropy), its only difference.

Writes benchmarks/results/pretrain.json (atomically): tokens/s of each, the ratio (target >= 1.3x
on CPU), our MFU against the measured CPU matmul peak.

Run as:
    .venv/bin/python benchmarks/pretrain_bench.py                 # CPU, ~8 minutes
    .venv/bin/python benchmarks/pretrain_bench.py --configs demo_debug --reps 3
    .venv/bin/python benchmarks/pretrain_bench.py --configs base_0p5b_gpu --vocab 32000   # GPU: 0.5B MFU
(on a GPU machine both sides run bf16 on the GPU.)
"""
from __future__ import annotations

import argparse
import os

# This script is its own process: set it before torch loads OpenMP, as the Makefile does for every
# target (see pretrain/train.py's docstring); both sides get it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core.runs import atomic_write_json, env_info, now_iso  # noqa: E402


def build_data(tmp: Path, vocab: int) -> Path:
    from data_recipes.demo_data import pretrain_corpus
    from data_recipes.tokenizer import build_tokenizer
    from pretrain.data import write_token_folder
    texts = [d for docs in pretrain_corpus().values() for d in docs]
    tok = build_tokenizer(texts, vocab_size=vocab)
    return write_token_folder(tmp / "data", tok, texts, num_shards=2)


def run_ours(data: Path, tmp: Path, a, rep: int) -> dict:
    from core.log import read_metrics
    from pretrain.train import main
    args = [f"data.path={data}", f"data.seq_len_tokens={a.seq}", f"train.batch_size_tokens={a.seq * a.batch}",
            f"train.micro_batch_size={a.batch}", f"train.max_steps={a.steps}", "train.log_every_steps=1",
            f"train.save_every_steps={a.steps * 10}", f"train.precision={a.precision}", "export=false",
            f"train.compile={str(a.compile).lower()}",
            "optim.warmup_steps=2", f"run.root={tmp}", f"run.name=ours{rep}", f"model.size={a.size}",
            f"model.vocab_multiple={a.vocab_multiple}"]
    run = main(args)
    rows = read_metrics(run / "metrics.jsonl")[a.warmup:]
    step_s = statistics.median(a.seq * a.batch / r["tok_per_s"] for r in rows)
    return {"step_s": step_s, "tok_per_s": a.seq * a.batch / step_s,
            "mfu": statistics.median(r["mfu"] for r in rows), "final_loss": rows[-1]["loss"]}


def run_trainer(data: Path, tmp: Path, a, rep: int) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging
    from core.models import build_model
    from pretrain.data import BlockLoader
    from pretrain.train import ModelOptions
    hf_logging.set_verbosity_error()
    loader = BlockLoader.fresh(data, a.seq, seed=0)
    blocks = loader.tokens(loader.next_ids(a.steps * a.batch))

    class Blocks(torch.utils.data.Dataset):
        def __len__(self):
            return len(blocks)

        def __getitem__(self, i):  # the same (input, target) split as our loop
            return {"input_ids": blocks[i, :-1], "labels": blocks[i, 1:]}

    class Timer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter())

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(data / "tokenizer")
    model = build_model(_hf_config(ModelOptions(size=a.size, vocab_multiple=a.vocab_multiple), tok), seed=0)
    # Labels are already shifted: disable the model's own shift by computing the loss ourselves.
    def loss_fn(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits.float()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
    timer = Timer()
    args = TrainingArguments(output_dir=str(tmp / f"trainer{rep}"), max_steps=a.steps,
                             per_device_train_batch_size=a.batch, learning_rate=3e-4, weight_decay=0.1,
                             adam_beta2=0.95, max_grad_norm=1.0, warmup_steps=2, lr_scheduler_type="cosine",
                             bf16=a.precision == "bf16", use_cpu=not torch.cuda.is_available(),
                             logging_steps=10 ** 6, save_strategy="no", report_to=[], dataloader_num_workers=0,
                             torch_compile=a.compile, seed=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Blocks(), callbacks=[timer],
                      compute_loss_func=loss_fn)
    t0 = time.perf_counter()
    trainer.train()
    stamps = [t0] + timer.times
    steps = [b - a_ for a_, b in zip(stamps, stamps[1:])][a.warmup:]
    step_s = statistics.median(steps)
    return {"step_s": step_s, "tok_per_s": a.seq * a.batch / step_s}


def _hf_config(model_options, tok):
    from pretrain.model import model_config
    vocab = -(-len(tok) // model_options.vocab_multiple) * model_options.vocab_multiple
    return model_config(model_options, vocab, tok.pad_token_id, tok.eos_token_id)


# name -> (model size, seq len, batch sequences, steps, vocab multiple): the demo recipe's shape, a
# 4M-parameter model with the demo tokenizer's ~4k vocabulary, the same model with a 32k vocabulary
# (the embedding padded to 32000 rows: the compute of a real 32k tokenizer; our data recipes train
# 16k-65k tokenizers), and the registry's ~0.1B with 32k. The loop differs from Trainer only in the
# loss, so the ratio follows the lm_head + loss share of the step: ~70% of the matmul FLOPs at
# hidden 256 / 32k, ~25% at 0.1B / 32k, where the blocks' matmuls (the same for both) dominate.
CONFIGS = {"demo_debug": ("debug", 128, 16, 30, 64), "hidden256": ("bench", 256, 8, 10, 64),
           "hidden256_v32k": ("bench", 256, 8, 10, 32000),
           # The registry's ~0.1B (hidden 768, 12 layers) with a 32k vocabulary: matmul-bound on CPU.
           "small_0p1b_v32k": ("small_0p1b", 256, 4, 8, 32000),
           # GPU only (not in the default list): the MFU of the ~0.5B size for benchmarks/RESULTS.md.
           "base_0p5b_gpu": ("base_0p5b", 2048, 8, 30, 64)}
DEFAULT_CONFIGS = "demo_debug,hidden256,hidden256_v32k,small_0p1b_v32k"
TARGET_SPEEDUP = 1.3   # issue #3: >= 1.3x Trainer's tokens/s on CPU


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile on for both sides (compile steps fall in --warmup)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pretrain.json"))
    a = p.parse_args()
    if a.precision == "auto":
        bf16_ok = torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported()
        a.precision = "bf16" if bf16_ok else "fp32"
    from pretrain import model as model_lib
    model_lib.SIZES["bench"] = model_lib.Size(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=704,
                                              max_seq_len_tokens=1024)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = build_data(tmp, a.vocab)
        # A process's first training run is slow (thread pools, allocator, lazy imports: 18.5k vs
        # 27k tok/s measured at the debug size), so both sides run once, untimed, before any timing.
        a.size, a.seq, a.batch, a.steps, a.vocab_multiple = CONFIGS["demo_debug"]
        a.steps = a.warmup + 3
        run_ours(data, tmp, a, "warmup")
        run_trainer(data, tmp, a, "warmup")
        for name in a.configs.split(","):
            a.size, a.seq, a.batch, a.steps, a.vocab_multiple = CONFIGS[name]
            ours, theirs = [], []
            for rep in range(a.reps):
                ours.append(run_ours(data, tmp, a, f"{name}{rep}"))
                theirs.append(run_trainer(data, tmp, a, f"{name}{rep}"))
                print(f"{name} rep {rep}: ours {ours[-1]['tok_per_s']:,.0f} tok/s, "
                      f"Trainer {theirs[-1]['tok_per_s']:,.0f} tok/s", flush=True)
            paired = [o["tok_per_s"] / t["tok_per_s"] for o, t in zip(ours, theirs)]
            best_ours = max(ours, key=lambda r: r["tok_per_s"])
            best_theirs = max(theirs, key=lambda r: r["tok_per_s"])
            size = model_lib.SIZES[a.size]
            results[name] = {
                "model": {"size": a.size, "hidden": size.hidden, "layers": size.layers, "heads": size.heads,
                          "intermediate": size.intermediate, "tokenizer_vocab": a.vocab,
                          "vocab": -(-a.vocab // a.vocab_multiple) * a.vocab_multiple},
                "seq_len_tokens": a.seq, "batch_sequences": a.batch, "steps": a.steps,
                "timed_steps": a.steps - a.warmup,
                "ours": {"tok_per_s": best_ours["tok_per_s"], "mfu": best_ours["mfu"], "all": ours},
                "trainer": {"tok_per_s": best_theirs["tok_per_s"], "all": theirs},
                # Headline: the median of the paired (same-rep, back-to-back) ratios; best vs best
                # is kept too, but one lucky repetition on a shared CPU moves it a lot.
                "speedup": statistics.median(paired), "speedup_paired": paired,
                "speedup_best_vs_best": best_ours["tok_per_s"] / best_theirs["tok_per_s"],
                "meets_target": statistics.median(paired) >= TARGET_SPEEDUP}
    result = {"benchmark": "pretrain", "date": now_iso(), "env": env_info(), "threads": torch.get_num_threads(),
              "precision": a.precision, "compile": a.compile, "reps": a.reps, "target_speedup": TARGET_SPEEDUP,
              "configs": results,
              "note": "CPU shared with other processes while measured; speedup = median of paired per-rep ratios; "
                      "ours: chunked lm_head + cross-entropy from the final hidden states, Trainer: full "
                      "logits upcast to fp32 (transformers' loss); everything else shared"}
    atomic_write_json(a.out, result)
    for name, r in results.items():
        print(f"{name}: ours {r['ours']['tok_per_s']:,.0f} tok/s (MFU {100 * r['ours']['mfu']:.1f}%) vs Trainer "
              f"{r['trainer']['tok_per_s']:,.0f} tok/s (best of {a.reps}); paired median {r['speedup']:.2f}x "
              f"(target {TARGET_SPEEDUP}x)")
    met = [n for n, r in results.items() if r["meets_target"]]
    print(f">= {TARGET_SPEEDUP}x on: {', '.join(met) or 'none'}; below on: {', '.join(n for n in results if n not in met) or 'none'}")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
