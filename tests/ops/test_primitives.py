"""``local_similarity`` and ``local_assemble`` on every backend: against the ground truth, their
composition against the fused op, and the window index order ``p = (u + r) * K + (w + r)``."""
from __future__ import annotations

import ground_truth as gt
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sapa.ops import local_assemble, local_similarity, sapa_attention

D, C = 3, 4
TOL_F64 = 1e-10  # float64: the loops and the backends differ only in summation order
# name -> (H, W), (H', W')
SIZES = {
    "x2": ((4, 5), (8, 10)),
    "2H+1": ((4, 5), (9, 11)),
    "window>map": ((1, 2), (3, 5)),
}


def _arrays(size, seed=100):
    (h, w), (ho, wo) = SIZES[size]
    return (gt.random_array(seed, (2, D, ho, wo)), gt.random_array(seed + 1, (2, D, h, w)),
            gt.random_array(seed + 2, (2, C, h, w)))


def _leaf(a):
    return torch.tensor(a, requires_grad=True)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("border", gt.BORDERS)
def test_similarity_matches_ground_truth(backend, border, kernel_size, size, require_backend):
    q, k, _ = _arrays(size)
    grad = gt.random_array(7, (2, kernel_size**2) + q.shape[2:])
    scores, gq, gk = gt.similarity(q, k, kernel_size, border, grad)
    tq, tk = _leaf(q), _leaf(k)
    require_backend(backend, tq, tk)
    out = local_similarity(tq, tk, kernel_size, border=border, backend=backend)
    assert out.shape == scores.shape and out.dtype == torch.float64
    outside = np.isinf(scores)
    if border == "valid":
        # -inf exactly at the outside points, so a softmax over dim 1 leaves them out
        assert np.array_equal(torch.isneginf(out).detach().numpy(), outside)
    else:
        assert not outside.any() and torch.isfinite(out).all()
    finite = ~outside
    gt.assert_matches(out.detach()[torch.from_numpy(finite)], scores[finite], TOL_F64, "scores")
    out.backward(torch.tensor(grad))
    gt.assert_matches(tq.grad, gq, TOL_F64, "grad_q")
    gt.assert_matches(tk.grad, gk, TOL_F64, "grad_k")


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("border", gt.BORDERS)
def test_assemble_matches_ground_truth(backend, border, kernel_size, size, require_backend):
    q, _, v = _arrays(size)
    kernels = gt.random_array(8, (2, kernel_size**2) + q.shape[2:])  # any weights, not normalised
    grad = gt.random_array(9, (2, C) + q.shape[2:])
    out_gt, gkern, gv = gt.assemble(kernels, v, kernel_size, grad)
    tkern, tv = _leaf(kernels), _leaf(v)
    require_backend(backend, tkern, tv)
    out = local_assemble(tkern, tv, kernel_size, border=border, backend=backend)
    gt.assert_matches(out, out_gt, TOL_F64, "out")
    out.backward(torch.tensor(grad))
    gt.assert_matches(tkern.grad, gkern, TOL_F64, "grad_kernels")
    gt.assert_matches(tv.grad, gv, TOL_F64, "grad_v")


@pytest.mark.parametrize("size", ["x2", "2H+1"])
@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("border", gt.BORDERS)
def test_composition_equals_fused_op(backend, border, kernel_size, size, require_backend):
    """``local_assemble(softmax(local_similarity(q, k)), v) == sapa_attention(q, k, v)``,
    forward and backward, for both borders."""
    arrays = _arrays(size, seed=200)
    grad = torch.tensor(gt.random_array(3, (2, C) + arrays[0].shape[2:]))
    split = [_leaf(a) for a in arrays]
    fused = [_leaf(a) for a in arrays]
    require_backend(backend, *split)
    scores = local_similarity(split[0], split[1], kernel_size, border=border, backend=backend)
    composed = local_assemble(torch.softmax(scores, dim=1), split[2], kernel_size, border=border,
                              backend=backend)
    direct = sapa_attention(*fused, kernel_size, border=border, backend=backend)
    torch.testing.assert_close(composed, direct, rtol=TOL_F64, atol=TOL_F64)
    composed.backward(grad)
    direct.backward(grad)
    for a, b in zip(split, fused):
        torch.testing.assert_close(a.grad, b.grad, rtol=TOL_F64, atol=TOL_F64)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_window_index_order_is_unfold(backend, kernel_size, require_backend):
    """At ``H' = H`` the window of ``p`` is ``F.unfold``'s column ``p``: ``p = (u+r)*K + (w+r)``."""
    gen = torch.Generator().manual_seed(kernel_size)
    q = torch.randn(2, D, 5, 6, generator=gen, dtype=torch.float64)
    k = torch.randn(2, D, 5, 6, generator=gen, dtype=torch.float64)
    v = torch.randn(2, C, 5, 6, generator=gen, dtype=torch.float64)
    kernels = torch.randn(2, kernel_size**2, 5, 6, generator=gen, dtype=torch.float64)
    require_backend(backend, q, k, v)
    r = kernel_size // 2
    k_cols = F.unfold(k, kernel_size, padding=r).view(2, D, kernel_size**2, 5, 6)
    v_cols = F.unfold(v, kernel_size, padding=r).view(2, C, kernel_size**2, 5, 6)
    scores = local_similarity(q, k, kernel_size, backend=backend)
    torch.testing.assert_close(scores, (q[:, :, None] * k_cols).sum(1), rtol=TOL_F64, atol=TOL_F64)
    out = local_assemble(kernels, v, kernel_size, backend=backend)
    torch.testing.assert_close(out, (kernels[:, None] * v_cols).sum(2), rtol=TOL_F64, atol=TOL_F64)


def test_window_index_of_one_point(backend, require_backend):
    """A key that is non-zero at one low-res point ``(i0, j0)`` only scores at window index
    ``p = (i0 - i + r) * K + (j0 - j + r)`` of the output points ``l' -> (i, j)`` near it."""
    kernel_size, r = 5, 2
    h, w, ho, wo, i0, j0 = 4, 5, 8, 10, 1, 3
    q = torch.ones(1, 1, ho, wo, dtype=torch.float64)
    k = torch.zeros(1, 1, h, w, dtype=torch.float64)
    k[0, 0, i0, j0] = 1.0
    require_backend(backend, q, k)
    scores = local_similarity(q, k, kernel_size, backend=backend)[0]
    expected = torch.zeros_like(scores)
    for io in range(ho):
        for jo in range(wo):
            u, w_ = i0 - io * h // ho, j0 - jo * w // wo
            if abs(u) <= r and abs(w_) <= r:
                expected[(u + r) * kernel_size + (w_ + r), io, jo] = 1.0
    assert torch.equal(scores, expected)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_smooth_window_kernel_is_uniform(backend, kernel_size, require_backend):
    """Paper Eq. (4) on the kernels themselves: with every ``k`` equal, the softmax of the scores
    is ``1/n`` on the ``n`` inside points (``border="valid"``) whatever ``q`` is."""
    gen = torch.Generator().manual_seed(0)
    q = 4 * torch.randn(1, 3, 9, 11, generator=gen, dtype=torch.float64)
    k = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)[None, :, None, None].expand(1, 3, 4, 5)
    require_backend(backend, q, k)
    scores = local_similarity(q, k, kernel_size, border="valid", backend=backend)
    kernels = torch.softmax(scores, dim=1)
    (expected_scores,) = gt.similarity(q.numpy(), k.contiguous().numpy(), kernel_size, "valid")
    inside = torch.tensor(np.isfinite(expected_scores))
    n = inside.sum(dim=1, keepdim=True).expand_as(inside)
    expected = torch.where(inside, 1.0 / n.double(), torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(kernels, expected, rtol=0, atol=1e-12)
