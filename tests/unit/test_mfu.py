"""pretrain/mfu.py: which datasheet row a GPU name gets (SXM vs NVL vs PCIe), the fp32 rate with TF32
off and on, and which peak each `train.mfu_peak` mode uses, with the CUDA calls stood in for (the
real measurement is in tests/stages/test_pretrain_gpu.py)."""
from __future__ import annotations

import math

import pytest
import torch

from pretrain import mfu

T = 1e12


@pytest.mark.parametrize("name, row, bf16", [
    ("NVIDIA H200", "H200 SXM", 989.5 * T), ("NVIDIA H200 NVL", "H200 NVL", 835.5 * T),
    ("NVIDIA GH200 480GB", "GH200", 989.5 * T), ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.5 * T),
    ("NVIDIA H100 NVL", "H100 NVL", 835.5 * T), ("NVIDIA H100 PCIe", "H100 PCIe", 756.5 * T),
    ("NVIDIA A100-SXM4-80GB", "A100", 312 * T), ("NVIDIA A100 80GB PCIe", "A100", 312 * T),
    ("NVIDIA L40S", "L40S", 362 * T), ("NVIDIA L40", "L40", 181 * T), ("NVIDIA L4", "L4", 121 * T),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 165.2 * T)])
def test_a_gpu_name_gets_its_own_datasheet_row(name, row, bf16):
    value, source = mfu.gpu_table_peak(name, torch.bfloat16, tf32=False)
    assert value == bf16 and source.startswith(f"table:{row} dense bf16 (NVIDIA ")


@pytest.mark.parametrize("name", ["NVIDIA A10G", "Tesla V100-SXM2-16GB", "NVIDIA B200", "Some New GPU"])
def test_a_gpu_not_in_the_table_gets_no_row(name):
    assert mfu.gpu_table_peak(name, torch.bfloat16, tf32=False) is None


def test_fp32_uses_the_tf32_rate_only_when_tf32_is_on():
    off, src_off = mfu.gpu_table_peak("NVIDIA H200", torch.float32, tf32=False)
    on, src_on = mfu.gpu_table_peak("NVIDIA H200", torch.float32, tf32=True)
    assert (off, on) == (67 * T, 494.5 * T) and "tf32 off" in src_off and "dense tf32" in src_on


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device named as asked, whose measured matmul does 790 TFLOP/s."""
    measured = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: fake_gpu.name)
    monkeypatch.setattr(mfu, "measure_gpu_peak", lambda device, dtype: measured.append(dtype) or 790 * T)
    fake_gpu.measured = measured
    return fake_gpu


@pytest.mark.parametrize("name, mode, value, source, measured", [
    ("NVIDIA H200", "auto", 989.5 * T, "table:H200 SXM", False),
    ("NVIDIA H200", "table", 989.5 * T, "table:H200 SXM", False),
    ("NVIDIA H200", "measured", 790 * T, "measured-matmul:NVIDIA H200 8192^3 bf16", True),
    ("Some New GPU", "auto", 790 * T, "measured-matmul:Some New GPU", True),
    ("Some New GPU", "table", math.nan, "unknown GPU Some New GPU", False)])
def test_each_peak_mode_records_which_peak_it_used(fake_gpu, name, mode, value, source, measured):
    fake_gpu.name = name
    got, src = mfu.peak_flops(torch.device("cuda", 0), torch.bfloat16, mode)
    assert (math.isnan(got) and math.isnan(value)) or got == value
    assert src.startswith(source) and bool(fake_gpu.measured) == measured


def test_a_bad_peak_mode_is_refused():
    with pytest.raises(ValueError, match="auto, table, measured"):
        mfu.peak_flops(torch.device("cpu"), torch.float32, "datasheet")
