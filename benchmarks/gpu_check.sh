#!/usr/bin/env bash
# The one prepared GPU check (benchmarks/gpu_check.py has the steps), for the lent machine as it is:
# one H200, python3 3.12 with torch 2.11.0+cu130 and transformers 5.17.0, no trl/datasets/vllm,
# no network, ~10 minutes per command, ~15 minutes of device time in all.
#
# Carry (ignored files that must travel with the working tree; made here by `prepare`):
#   runs/gpu_check/tokenizer_32k/   ~2.5 MiB  a 32k byte-level BPE trained on ../shared/data/pretrain (20 MB):
#                                             the real vocabulary of the 0.5B MFU figure
#   runs/gpu_check/cmmlu/           ~2.1 MiB  the shared CMMLU copy: the eval-parity questions
#   in all ~4.6 MiB of the 64 MiB a call may carry. No wheels: every step uses only what the image
#   has (SFT/DPO/GRPO would need the wheels trl 1.16.0, datasets 5.2.0, dill 0.4.1, multiprocess 0.70.19:
#   1.8 MB, and datasets wants pyarrow >= 24, unchecked there; no step here runs them). Without the carry the check still runs, on the demo corpus's ~4k
#   vocabulary and the 76 built-in demo questions, and says so in summary.json.
#
# Run as:
#   bash benchmarks/gpu_check.sh prepare      # HERE, once: builds the carry above (~1-2 min on 2 cores)
#   device run:  command "bash benchmarks/gpu_check.sh", carry ["runs/gpu_check"], timeout_s 540
#   GPU_CHECK_DRY=1 OUT=/tmp/gc bash benchmarks/gpu_check.sh    # CPU dry mode: same steps, tiny sizes
#
# It installs nothing, stops itself after 470 s (python's own deadline is 450 s) and writes under
# ${OUT:-benchmarks/results/gpu}: summary.json, environment.json, gpu_tests.log, pretrain_gpu.json,
# resume.json, eval_parity.json and gpu_check.log (this console output): 7 files. It prints each
# step's header and one result line, then summary.json: per step status/seconds and the three
# targets (bf16 MFU >= 45% at 0.5B; resume bitwise or within bf16 tolerance; CUDA-vs-CPU eval
# agreement >= 99%) as met, missed, or null when unmeasured. Exit 0 when every step ran.
# Copy pretrain_gpu.json to benchmarks/results/ and the figures into benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE

if [ "${1:-}" = "prepare" ]; then
    SHARED=${ZHLLM_SHARED_DATA:-../shared/data}
    mkdir -p runs/gpu_check
    [ -f runs/gpu_check/tokenizer_32k/tokenizer.json ] || \
        $PY benchmarks/pretrain_bench.py --only-tokenizer runs/gpu_check/tokenizer_32k --vocab 32000 \
            --corpus "$SHARED/pretrain" --corpus-mb 20 || exit 1
    if [ -d "$SHARED/cmmlu/test" ]; then
        rm -rf runs/gpu_check/cmmlu && cp -r "$SHARED/cmmlu" runs/gpu_check/cmmlu && chmod -R u+w runs/gpu_check/cmmlu
    fi
    du -sh runs/gpu_check/*; du -sh runs/gpu_check
    exit 0
fi

OUT=${OUT:-benchmarks/results/gpu}
export OUT
mkdir -p "$OUT"
timeout -k 5 470 $PY benchmarks/gpu_check.py 2>&1 | tee "$OUT/gpu_check.log"
