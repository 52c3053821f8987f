"""Peak FLOP/s for MFU: a table of known GPUs (dense bf16 tensor-core peak, no sparsity) and, on CPU,
a matmul measured once and cached in ~/.cache/zhllm-kit/cpu_peak_v4.json (keyed by CPU model, thread
count and dtype) so every run of a machine reports MFU against the same figure (see
measure_cpu_peak). Measured on a busy machine it reads low and MFU high: delete the cache file on a
quiet machine to measure again.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

# Dense bf16 peak per GPU in FLOP/s, from the vendors' datasheets (matched by substring, first wins).
GPU_PEAK_BF16 = [
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("H800", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12),
    ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 3090", 71e12),
    ("V100", 125e12), ("T4", 65e12),
]

CACHE = Path(os.environ.get("ZHLLM_CACHE", Path.home() / ".cache" / "zhllm-kit")) / "cpu_peak_v4.json"


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


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(peak FLOP/s of one process's device, where the figure comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_BF16:
            if key in name:
                scale = 1.0 if dtype in (torch.bfloat16, torch.float16) else 0.5  # tf32 is half the bf16 rate
                return flops * scale, f"table:{key}"
        return float("nan"), f"unknown GPU {name}"
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
    return cache[key], "measured-matmul"
