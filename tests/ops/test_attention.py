"""``sapa_attention`` on every backend against the plain-loop ground truth (``ground_truth.py``).

Forward and backward over borders x normalizers x K in {1, 3, 5, 7} x output sizes, the paper's
Eq. (4) property, half precision, non-contiguous / channels_last inputs and an empty batch.
"""
from __future__ import annotations

import ground_truth as gt
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sapa.ops import sapa_attention

B, D, C = 2, 4, 3
# name -> (H, W), (H', W')
SIZES = {
    "x2": ((4, 5), (8, 10)),
    "x4": ((3, 4), (12, 16)),
    "2H+1": ((4, 5), (9, 11)),  # not a multiple: odd sizes that real backbones produce
    "x1": ((4, 5), (4, 5)),
    "window>map": ((1, 2), (3, 5)),  # every window sticks out of the map
}
KERNEL_SIZES = (1, 3, 5, 7)

# Tolerances, relative to max(1, max |expected|) of each compared tensor (gt.assert_matches).
# float64: the loops and the backends differ only in summation order.
TOL_F64 = 1e-10
# float32: scores of d=4 products of N(0, 1) values carry ~1e-7 relative rounding, which the
# normalisation and the chain rule amplify by at most |s| ~ 10: 1e-5. The relu normaliser divides
# by sum(relu(s)) + 1e-6, which is small when a window holds only small positive scores; its
# gradients then amplify rounding by max|s| / sum(relu(s)) (measured 8e-5 on these inputs).
TOL_F32 = {"relu": 2e-4}
TOL_F32_DEFAULT = 1e-5


def inputs(size_name: str, batch: int = B, d: int = D, c: int = C):
    """``(q, k, v, grad_out)`` numpy float64 (float32-representable), fixed per size."""
    (h, w), (ho, wo) = SIZES[size_name]
    seed = 10 * list(SIZES).index(size_name)
    shapes = [(batch, d, ho, wo), (batch, d, h, w), (batch, c, h, w), (batch, c, ho, wo)]
    return tuple(gt.random_array(seed + i, s) for i, s in enumerate(shapes))


def run(backend, q, k, v, grad_out, kernel_size, normalizer, border, dtype, require_backend):
    """Forward + backward of the op; returns ``(out, grad_q, grad_k, grad_v)``."""
    q, k, v = (torch.tensor(a, dtype=dtype, requires_grad=True) for a in (q, k, v))
    require_backend(backend, q, k, v)
    out = sapa_attention(q, k, v, kernel_size, normalizer=normalizer, border=border,
                         backend=backend)
    assert out.dtype == dtype
    out.backward(torch.tensor(grad_out, dtype=dtype))
    return out, q.grad, k.grad, v.grad


def check_all(results, expected, tol):
    for name, a, e in zip(("out", "grad_q", "grad_k", "grad_v"), results, expected):
        gt.assert_matches(a, e, tol, name)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
@pytest.mark.parametrize("normalizer", gt.NORMALIZERS)
@pytest.mark.parametrize("border", gt.BORDERS)
def test_matches_ground_truth_float64(forced_backend, border, normalizer, kernel_size, size,
                                     require_backend):
    q, k, v, g = inputs(size)
    expected = gt.attention(q, k, v, kernel_size, normalizer, border, g)
    results = run(forced_backend, q, k, v, g, kernel_size, normalizer, border, torch.float64,
                  require_backend)
    check_all(results, expected, TOL_F64)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("normalizer", gt.NORMALIZERS)
@pytest.mark.parametrize("border", gt.BORDERS)
def test_matches_ground_truth_float32(backend, border, normalizer, size, require_backend):
    q, k, v, g = inputs(size)  # float32-representable: the same ground truth applies
    expected = gt.attention(q, k, v, 5, normalizer, border, g)
    results = run(backend, q, k, v, g, 5, normalizer, border, torch.float32, require_backend)
    check_all(results, expected, TOL_F32.get(normalizer, TOL_F32_DEFAULT))


# ---- paper Eq. (4): a smooth window gives the kernel 1/K^2 whatever q is ----------------------

def _h(s, normalizer):
    return {"softmax": torch.exp, "relu": F.relu, "sigmoid": torch.sigmoid,
            "softplus": F.softplus}[normalizer](s)


@pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
@pytest.mark.parametrize("normalizer", ["softmax", "relu", "sigmoid", "softplus"])
@pytest.mark.parametrize("border", gt.BORDERS)
def test_smooth_window_gives_average_kernel(backend, border, normalizer, kernel_size,
                                            require_backend):
    """Every ``k`` equal to one vector ``b``: each kernel weight is ``1/n`` over the ``n`` counted
    points (``n = K^2`` away from the border), so the output is the window mean of ``v``."""
    (h, w), (ho, wo) = (8, 9), (17, 19)
    gen = torch.Generator().manual_seed(kernel_size)
    b = torch.tensor([0.5, 1.0, 0.75], dtype=torch.float64)
    k = b[None, :, None, None].expand(2, 3, h, w).contiguous()
    v = torch.randn(2, 4, h, w, generator=gen, dtype=torch.float64)
    if normalizer == "softmax":
        q = 5 * torch.randn(2, 3, ho, wo, generator=gen, dtype=torch.float64)  # truly any q
    else:
        # h(s) must dominate the 1e-6 of the denominator, and relu(s) must not be 0 for all points
        # ("ignoring zero division", paper §4.1): positive scores.
        q = torch.rand(2, 3, ho, wo, generator=gen, dtype=torch.float64) * 3 + 0.2
    require_backend(backend, q, k, v)
    out = sapa_attention(q, k, v, kernel_size, normalizer=normalizer, border=border,
                         backend=backend)

    r = kernel_size // 2
    count_pad = border == "zeros"
    mean = F.avg_pool2d(v, kernel_size, stride=1, padding=r, count_include_pad=count_pad)
    rows = torch.arange(ho) * h // ho
    cols = torch.arange(wo) * w // wo
    expected = mean[:, :, rows][:, :, :, cols]
    if border == "zeros":
        # outside points score 0 (not <q, b>): the property holds away from the border only
        keep = ((rows >= r) & (rows < h - r))[:, None] & ((cols >= r) & (cols < w - r))[None, :]
        assert keep.any()
        out, expected = out[:, :, keep], expected[:, :, keep]
    # w = h(s) / (n h(s) + 1e-6) differs from 1/n by at most 1e-6 / (n h(s)) relative
    eps_rel = 0.0
    if normalizer != "softmax":
        eps_rel = 1e-6 / _h((q * b[None, :, None, None]).sum(1), normalizer).min().item()
    atol = (eps_rel + 1e-12) * v.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("border", gt.BORDERS)
def test_relu_with_only_negative_scores_gives_zero(backend, border, require_backend):
    """``relu(s) = 0`` in the whole window: ``w = 0 / (0 + 1e-6) = 0`` (the paper's "ignoring
    zero division"), so the output and every gradient are exactly 0, never NaN."""
    k = torch.rand(1, 2, 4, 5, dtype=torch.float64).requires_grad_()  # positive keys
    q = (-torch.rand(1, 2, 9, 11, dtype=torch.float64) - 0.1).requires_grad_()  # negative queries
    v = torch.randn(1, 3, 4, 5, dtype=torch.float64).requires_grad_()
    require_backend(backend, q, k, v)
    out = sapa_attention(q, k, v, 3, normalizer="relu", border=border, backend=backend)
    out.backward(torch.randn(out.shape, dtype=torch.float64))
    for t in (out, q.grad, k.grad, v.grad):
        assert torch.equal(t, torch.zeros_like(t))


# ---- half precision ------------------------------------------------------------------------

# unit roundoff of the output dtype: an fp32-accumulating backend is off by one rounding of its
# output (u * |out|) plus fp32 noise (1e-5 of the largest output).
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
# The reference is written for clarity, not precision: it computes scores, kernels and sums in
# the input dtype, so its error is a few roundings of the scores times max|v|.
REFERENCE_HALF_ULPS = 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("normalizer", gt.NORMALIZERS)
@pytest.mark.parametrize("border", gt.BORDERS)
def test_half_precision_forward(backend, border, normalizer, dtype, require_backend):
    q, k, v, _ = inputs("2H+1")
    q, k, v = (torch.tensor(a).to(dtype) for a in (q, k, v))
    require_backend(backend, q, k, v)
    out = sapa_attention(q, k, v, 5, normalizer=normalizer, border=border, backend=backend)
    assert out.dtype == dtype
    # the ground truth of the same (rounded) inputs
    (expected,) = gt.attention(*(t.double().numpy() for t in (q, k, v)), 5, normalizer, border)
    expected = torch.from_numpy(np.array(expected))
    u, scale = UNIT_ROUNDOFF[dtype], expected.abs().max().item()
    if backend == "reference":
        atol = REFERENCE_HALF_ULPS * u * scale
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=atol)
    else:
        err = (out.double() - expected).abs()
        bound = u * expected.abs() + 1e-5 * scale
        assert (err <= bound).all(), f"max excess {(err - bound).max().item():.3g}"


# ---- memory layouts ------------------------------------------------------------------------

def _layout(a: np.ndarray, layout: str) -> torch.Tensor:
    """The same values in another memory layout (a leaf that requires grad)."""
    t = torch.tensor(a)
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":  # a W x H tensor seen through .transpose
        t = t.transpose(2, 3).contiguous().transpose(2, 3)
    elif layout == "strided":  # every other element of a bigger tensor
        big = torch.zeros(t.shape[0], 2 * t.shape[1], t.shape[2], 2 * t.shape[3], dtype=t.dtype)
        big[:, ::2, :, ::2] = t
        t = big[:, ::2, :, ::2]
    assert layout == "contiguous" or not t.is_contiguous()
    return t.requires_grad_()


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "strided"])
@pytest.mark.parametrize("border", gt.BORDERS)
@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid"])
def test_non_contiguous_inputs(backend, layout, border, normalizer, require_backend):
    q, k, v, g = inputs("2H+1")
    expected = gt.attention(q, k, v, 3, normalizer, border, g)
    tq, tk, tv = (_layout(a, layout) for a in (q, k, v))
    before = [t.detach().clone() for t in (tq, tk, tv)]
    require_backend(backend, tq, tk, tv)
    out = sapa_attention(tq, tk, tv, 3, normalizer=normalizer, border=border, backend=backend)
    out.backward(_layout(g, layout).detach())
    check_all((out, tq.grad, tk.grad, tv.grad), expected, TOL_F64)
    for t, b in zip((tq, tk, tv), before):
        assert torch.equal(t.detach(), b), "the op modified its input"


# ---- empty batch ---------------------------------------------------------------------------

@pytest.mark.parametrize("border", gt.BORDERS)
@pytest.mark.parametrize("normalizer", ["softmax", "relu"])
def test_empty_batch(backend, border, normalizer, require_backend):
    q = torch.randn(0, D, 9, 11, requires_grad=True)
    k = torch.randn(0, D, 4, 5, requires_grad=True)
    v = torch.randn(0, C, 4, 5, requires_grad=True)
    require_backend(backend, q, k, v)
    out = sapa_attention(q, k, v, 3, normalizer=normalizer, border=border, backend=backend)
    assert out.shape == (0, C, 9, 11) and out.dtype == torch.float32
    out.sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and t.grad.shape == t.shape
