#!/usr/bin/env bash
# The one prepared GPU check (run on a lent GPU machine through the `device` tool, or on any CUDA box):
#   bash benchmarks/gpu_check.sh            # writes its figures under ${OUT:-benchmarks/results/gpu}
# It exercises the paths CPU CI cannot: bf16 FSDP pretraining (+ export) on CUDA/nccl, the ~0.5B MFU
# against Trainer, and the vLLM eval backend against the hf backend (skipped where vllm is absent:
# the lent H200 image has torch and transformers but no vllm, and vLLM's wheels exceed what a call can carry).
# Record the printed figures in benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUTDIR"
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUTDIR/gpu.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)" | tee -a "$OUTDIR/gpu.txt"
echo "== gpu tests (bf16 pretraining + export, vLLM vs hf agreement)"
timeout 240 $PY -m pytest -m gpu -q -p no:cacheprovider tests/stages/test_pretrain_gpu.py tests/stages/test_eval_vllm_gpu.py 2>&1 | tee "$OUTDIR/gpu_tests.log"
echo "== pretrain bench: ~0.5B bf16 MFU, our loop vs Trainer"
timeout 240 $PY benchmarks/pretrain_bench.py --configs base_0p5b_gpu --vocab 32000 --reps 1 2>&1 | tee "$OUTDIR/pretrain_gpu.log"
cp benchmarks/results/pretrain.json "$OUTDIR/pretrain_gpu.json" 2>/dev/null || true
