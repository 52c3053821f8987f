"""Peak FLOP/s for MFU: the vendors' datasheet figures for known GPUs, or a matmul measured on the
device itself, and a record of which one a run used (`peak_flops` returns the value and its source;
pretrain/train.py writes both into metrics' denominator and manifest.json).

`train.mfu_peak`:
    auto      a GPU in GPU_PEAKS: its datasheet figure; any other GPU and every CPU: measured
    table     the datasheet figure only (NaN and "unknown GPU ..." for a GPU not in the table)
    measured  the best of large square matmuls on this device, in the run's dtype

GPU figures are dense (no structured sparsity): the datasheets quote bf16 and TF32 "with sparsity",
so those are halved. SXM, NVL and PCIe parts of one chip differ in clocks and power, so they have
rows of their own, matched on torch.cuda.get_device_name (`nvidia-smi` names the SXM parts plainly:
'NVIDIA H200', 'NVIDIA H100 80GB HBM3'). fp32 training uses the TF32 tensor-core rate only when TF32
is switched on (core.compat.cuda_matmul_tf32; this project never switches it on), else the plain
fp32 rate, about 15x lower.

A measured peak reads what this card does today on random data (the lent H200 did ~790 TFLOP/s on
an 8192^3 bf16 matmul where its datasheet says 989): MFU against it is higher than against the
table. On CPU the matmul is measured once and cached in ~/.cache/zhllm-kit/cpu_peak_v4.json (keyed
by CPU model, thread count and dtype) so every run of a machine reports MFU against the same figure
(see measure_cpu_peak). Measured on a busy machine it reads low and MFU high: delete the cache file on
a quiet machine to measure again.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from core.compat import cuda_matmul_tf32


@dataclass(frozen=True)
class GpuPeak:
    pattern: str        # regex searched in torch.cuda.get_device_name(); the first row that matches wins
    name: str
    bf16: float         # dense bf16 tensor-core FLOP/s (fp32 accumulate)
    tf32: float         # dense TF32 tensor-core FLOP/s
    fp32: float         # plain fp32 (CUDA cores) FLOP/s
    source: str


T = 1e12
GPU_PEAKS = [
    # Hopper. NVL and PCIe rows before the plain names: 'H100 NVL' also contains 'H100'.
    GpuPeak(r"\bH200 NVL\b", "H200 NVL", 835.5 * T, 417.5 * T, 60 * T, "NVIDIA H200 datasheet, H200 NVL column"),
    GpuPeak(r"\bGH200\b", "GH200", 989.5 * T, 494.5 * T, 67 * T, "NVIDIA GH200 Grace Hopper datasheet"),
    GpuPeak(r"\bH200\b", "H200 SXM", 989.5 * T, 494.5 * T, 67 * T, "NVIDIA H200 datasheet, H200 SXM column"),
    GpuPeak(r"\bH100 NVL\b", "H100 NVL", 835.5 * T, 417.5 * T, 60 * T, "NVIDIA H100 datasheet, H100 NVL column"),
    GpuPeak(r"\bH100 PCIe\b", "H100 PCIe", 756.5 * T, 378 * T, 51 * T, "NVIDIA H100 datasheet, H100 PCIe column"),
    GpuPeak(r"\bH100\b", "H100 SXM", 989.5 * T, 494.5 * T, 67 * T, "NVIDIA H100 datasheet, H100 SXM column"),
    GpuPeak(r"\bH800 PCIe\b", "H800 PCIe", 756.5 * T, 378 * T, 51 * T, "NVIDIA H800 datasheet, PCIe column"),
    GpuPeak(r"\bH800\b", "H800 SXM", 989.5 * T, 494.5 * T, 67 * T, "NVIDIA H800 datasheet, SXM column"),
    # Ampere / Ada.
    GpuPeak(r"\bA100\b", "A100", 312 * T, 156 * T, 19.5 * T, "NVIDIA A100 datasheet (SXM and PCIe alike)"),
    GpuPeak(r"\bA800\b", "A800", 312 * T, 156 * T, 19.5 * T, "NVIDIA A800 datasheet"),
    GpuPeak(r"\bL40S\b", "L40S", 362 * T, 183 * T, 91.6 * T, "NVIDIA L40S datasheet"),
    GpuPeak(r"\bL40\b", "L40", 181 * T, 90.5 * T, 90.5 * T, "NVIDIA L40 datasheet"),
    GpuPeak(r"\bL4\b", "L4", 121 * T, 60 * T, 30.3 * T, "NVIDIA L4 datasheet"),
    GpuPeak(r"\bA10\b", "A10", 125 * T, 62.5 * T, 31.2 * T, "NVIDIA A10 datasheet"),
    GpuPeak(r"\bRTX 4090\b", "RTX 4090", 165.2 * T, 82.6 * T, 82.6 * T, "NVIDIA Ada GPU architecture whitepaper"),
    GpuPeak(r"\bRTX 3090\b", "RTX 3090", 71 * T, 35.6 * T, 35.6 * T, "NVIDIA GA102 (Ampere) whitepaper"),
]
PEAK_MODES = ("auto", "table", "measured")

CACHE = Path(os.environ.get("ZHLLM_CACHE", Path.home() / ".cache" / "zhllm-kit")) / "cpu_peak_v4.json"


def gpu_table_peak(device_name: str, dtype: torch.dtype, tf32: bool) -> tuple[float, str] | None:
    """(datasheet FLOP/s, source) of a GPU name in the table, or None."""
    for row in GPU_PEAKS:
        if re.search(row.pattern, device_name):
            if dtype in (torch.bfloat16, torch.float16):
                return row.bf16, f"table:{row.name} dense bf16 ({row.source})"
            rate, kind = (row.tf32, "tf32") if tf32 else (row.fp32, "fp32, tf32 off")
            return rate, f"table:{row.name} dense {kind} ({row.source})"
    return None


def measure_gpu_peak(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 10) -> float:
    """FLOP/s of n^3 matmuls on random data: the mean of `reps` timed after 3 warm-ups, CUDA events.
    fp32 runs at whatever TF32 setting is current, as the training does."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        torch.mm(a, b)
    end.record()
    torch.cuda.synchronize(device)
    seconds = start.elapsed_time(end) / 1000 / reps
    del a, b
    torch.cuda.empty_cache()
    return 2 * n ** 3 / seconds


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def measure_cpu_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048), reps: int = 10) -> float:
    """The best FLOP/s of square matmuls: all threads together, and one thread times the thread count
    (one thread's best run is rarely disturbed by other processes on a shared machine, where an
    all-thread matmul measured anywhere from 58 to 226 GFLOP/s), the larger of the two. Under load
    either can read low, which overstates MFU: v3 of this cache held 303 GFLOP/s for bf16 on 2
    threads where a quiet run measures ~430, so MFU read ~1.4x too high."""
    threads = torch.get_num_threads()

    def best(n: int) -> float:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        t_min = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            torch.mm(a, b)
            t_min = min(t_min, time.perf_counter() - t)
        return 2 * n ** 3 / t_min

    together = max(best(n) for n in sizes)
    torch.set_num_threads(1)
    try:
        alone = threads * max(best(n) for n in sizes[:1])
    finally:
        torch.set_num_threads(threads)
    return max(together, alone)


def cpu_peak(dtype: torch.dtype) -> float:
    """The cached CPU matmul peak of this machine, thread count and dtype (measured on first use)."""
    key = f"{_cpu_name()}|threads={torch.get_num_threads()}|{dtype}"
    try:
        cache = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = measure_cpu_peak(dtype)
        try:
            from core.runs import atomic_write_json
            atomic_write_json(CACHE, cache)
        except OSError:  # a read-only home only loses the cache
            pass
    return cache[key]


def peak_flops(device: torch.device, dtype: torch.dtype, mode: str = "auto") -> tuple[float, str]:
    """(peak FLOP/s of one process's device, where the figure comes from) for `mode` (PEAK_MODES)."""
    if mode not in PEAK_MODES:
        raise ValueError(f"mfu peak mode must be one of {', '.join(PEAK_MODES)}, not {mode!r}")
    if device.type != "cuda":
        return cpu_peak(dtype), "measured-matmul"
    name = torch.cuda.get_device_name(device)
    tf32 = dtype == torch.float32 and cuda_matmul_tf32()
    if mode != "measured":
        row = gpu_table_peak(name, dtype, tf32)
        if row is not None:
            return row
        if mode == "table":
            return float("nan"), f"unknown GPU {name}: not in pretrain/mfu.py GPU_PEAKS"
    kind = "bf16" if dtype in (torch.bfloat16, torch.float16) else ("fp32 tf32 on" if tf32 else "fp32 tf32 off")
    return measure_gpu_peak(device, dtype), f"measured-matmul:{name} 8192^3 {kind}"
