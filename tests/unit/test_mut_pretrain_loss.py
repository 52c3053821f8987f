"""The pretraining loss against F.cross_entropy written out: several softmax chunks in several
gradient groups, the compute dtype autocast or FSDP's bf16 weights ask for, the upstream gradient's
scale and the gradients' dtypes, and the buffers kept between calls (closes mutmut survivors of
pretrain/model.py's linear_cross_entropy; the equivalent ones are in tests/mutation_equivalent.md)."""
import pytest
import torch
import torch.nn.functional as F

from pretrain import model as model_lib
from pretrain.model import linear_cross_entropy


def data(n=1100, v=64, h=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, h, generator=g) * 2, torch.randn(v, h, generator=g), torch.randint(0, v, (n,), generator=g)


def test_chunks_within_groups_equal_the_plain_loss():
    h, w, t = data()
    t[::7] = -100
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    # 1100 rows: softmax chunks of 256 rows, gradient groups of 512 rows (2 chunks each, the last partial)
    loss = linear_cross_entropy(hh, ww, t, ignore_index=-100, chunk_elements=1, group_elements=512 * 64)
    (3 * loss).backward()
    rh, rw = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = F.cross_entropy(F.linear(rh, rw), t, ignore_index=-100, reduction="sum")
    (3 * ref).backward()                        # the upstream gradient scales both gradients
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(hh.grad, rh.grad, atol=1e-4) and torch.allclose(ww.grad, rw.grad, atol=1e-4)


def test_compute_dtype_follows_autocast_and_bf16_weights():
    h, w, t = data(n=300, seed=1)
    fp32 = linear_cross_entropy(h, w, t).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = linear_cross_entropy(h, w, t).item()
    bf16_ref = F.cross_entropy(F.linear(h.bfloat16(), w.bfloat16()).float(), t, reduction="sum").item()
    gap = abs(fp32 - bf16_ref)                   # what rounding the logits to bf16 changes (~1e-4 relative)
    assert gap > 1e-5 * abs(fp32) and abs(auto - bf16_ref) < gap / 4
    hb = h.clone().requires_grad_()
    wb = w.bfloat16().requires_grad_()           # FSDP mixed precision hands out bf16 parameters
    loss = linear_cross_entropy(hb, wb, t)
    assert abs(loss.item() - bf16_ref) < gap / 4
    loss.backward()
    assert (hb.grad.dtype, wb.grad.dtype) == (torch.float32, torch.bfloat16)
    hh = h.bfloat16().requires_grad_()
    ww = w.clone().requires_grad_()
    linear_cross_entropy(hh, ww, t).backward()
    assert (hh.grad.dtype, ww.grad.dtype) == (torch.bfloat16, torch.float32)


def test_buffers_are_kept_and_reused():
    model_lib.release_loss_buffers()
    a = model_lib._workspace("x", (4, 8), torch.float32, "cpu")
    b = model_lib._workspace("x", (4, 8), torch.float32, "cpu")     # the same size: the same memory
    c = model_lib._workspace("x", (2, 3), torch.float32, "cpu")     # smaller: a view of it
    d = model_lib._workspace("y", (2, 3), torch.float32, "cpu")     # another name: its own
    assert a.data_ptr() == b.data_ptr() == c.data_ptr() != d.data_ptr() and c.shape == (2, 3)
    e = model_lib._workspace("x", (5, 8), torch.float32, "cpu")     # bigger: a new buffer, kept
    assert model_lib._workspace("x", (4, 8), torch.float32, "cpu").data_ptr() == e.data_ptr() != a.data_ptr()
    with torch.inference_mode():
        assert model_lib._workspace("x", (4, 8), torch.float32, "cpu").data_ptr() != e.data_ptr()
    model_lib.release_loss_buffers()
    assert not model_lib._WORKSPACE


def test_bf16_weights_over_several_groups_equal_the_plain_loss():
    h, w, t = data(n=1100, seed=2)
    wb = w.bfloat16().requires_grad_()
    # bf16 compute: the chunks go through the fp32 copy and the bf16 gradient buffer, group by group
    loss = linear_cross_entropy(h, wb, t, chunk_elements=1, group_elements=512 * 64)
    loss.backward()
    ref_w = w.bfloat16().requires_grad_()
    ref = F.cross_entropy(F.linear(h.bfloat16(), ref_w).float(), t, reduction="sum")
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4)
    assert torch.allclose(wb.grad.float(), ref_w.grad.float(), rtol=0.05, atol=0.5)


def test_buffer_sizes_follow_the_documented_rule():
    """Chunks of max(256, chunk_elements // V) rows, gradient groups of whole chunks, ~group_elements // V rows."""
    h, w, t = data(n=1100, v=64, h=16, seed=4)
    model_lib.release_loss_buffers()
    linear_cross_entropy(h, w, t, chunk_elements=1, group_elements=512 * 64 + 100)
    sizes = {k[0]: v.numel() for k, v in model_lib._WORKSPACE.items()}
    assert sizes == {"logits": 256 * 64, "logp": 256 * 64, "grad": 512 * 64}
    model_lib.release_loss_buffers()
    linear_cross_entropy(h, w, t, chunk_elements=300 * 64, group_elements=2000 * 64)
    assert {k[0]: v.numel() for k, v in model_lib._WORKSPACE.items()} == {"logits": 300 * 64, "logp": 300 * 64,
                                                                         "grad": 1100 * 64}
    model_lib.release_loss_buffers()


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
def test_every_buffer_and_result_on_the_inputs_device(wdtype):
    """The meta device stands in for a GPU here: a buffer made on the default device (CPU) fails the
    matmul into it; the CPU buffers of an earlier call must not be handed out for another device."""
    model_lib.release_loss_buffers()
    h, w, t = data(n=300, seed=5)
    linear_cross_entropy(h, w.to(wdtype), t)                       # CPU buffers of the same names and sizes
    hm = torch.empty(300, 16, device="meta", requires_grad=True)
    wm = torch.empty(64, 16, device="meta", dtype=wdtype, requires_grad=True)
    tm = torch.zeros(300, dtype=torch.long, device="meta")
    loss = model_lib._LinearCrossEntropy.apply(hm, wm, tm, 128, 256, wdtype, -100)
    loss.backward()
    assert (loss.device.type, hm.grad.device.type, wm.grad.device.type) == ("meta",) * 3
    assert {k[2] for k in model_lib._WORKSPACE} == {"cpu", "meta"}
    assert all(v.device.type == k[2] for k, v in model_lib._WORKSPACE.items())
    model_lib.release_loss_buffers()


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
def test_fp32_buffers_and_loss_do_not_follow_the_default_dtype(wdtype):
    h, w, t = data(n=300, seed=6)
    want = F.cross_entropy(F.linear(h.to(wdtype), w.to(wdtype)).float(), t, reduction="sum").item()
    model_lib.release_loss_buffers()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        loss = linear_cross_entropy(h, w.to(wdtype), t)
    finally:
        torch.set_default_dtype(old)
        model_lib.release_loss_buffers()
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(want, rel=1e-4)


def test_bf16_compute_keeps_an_fp32_copy_of_the_logits_chunk():
    """bf16 compute: four buffers by name and dtype, the chunk ones of chunk rows (the fp32 copy of the
    bf16 logits feeds the log-softmax), the gradient group in bf16; fp32 compute has no copy."""
    h, w, t = data(n=1100, v=64, h=16, seed=7)
    model_lib.release_loss_buffers()
    linear_cross_entropy(h, w.bfloat16(), t, chunk_elements=1, group_elements=512 * 64)
    assert {(k[0], k[1]): v.numel() for k, v in model_lib._WORKSPACE.items()} == {
        ("logits", torch.bfloat16): 256 * 64, ("logits32", torch.float32): 256 * 64,
        ("logp", torch.float32): 256 * 64, ("grad", torch.bfloat16): 512 * 64}
    assert all(v.dtype == k[1] for k, v in model_lib._WORKSPACE.items())
    model_lib.release_loss_buffers()
    linear_cross_entropy(h, w, t, chunk_elements=1, group_elements=512 * 64)
    assert sorted((k[0], k[1]) for k in model_lib._WORKSPACE) == [
        ("grad", torch.float32), ("logits", torch.float32), ("logp", torch.float32)]
    model_lib.release_loss_buffers()
