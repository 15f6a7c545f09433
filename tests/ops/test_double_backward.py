"""Double backward (gradients of gradients: gradient penalties, ``gradgradcheck``) of every op
on every backend.

A gradient taken with ``create_graph=True`` is computed as the reference's vector-Jacobian
product, which autograd differentiates again (``sapa.ops._library``); without it the backend's
own backward runs. ``gradgradcheck`` in float64 checks the second derivatives against finite
differences of the first (in fast mode, random projections, in the default run; ``-m slow``
checks every entry); the first derivatives of both paths agree.
"""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradgradcheck

from sapa.ops import local_assemble, local_similarity, sampled_attention, sapa_attention

NORMALIZERS = ("softmax", "relu", "sigmoid", "softplus", "none")
BORDERS = ("zeros", "valid")
K = 3


def _leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def _qkv():
    # 2x2 -> 3x5: not a multiple, a window larger than the map
    return _leaves((1, 2, 3, 5), (1, 2, 2, 2), (1, 2, 2, 2))


@pytest.mark.parametrize("normalizer", NORMALIZERS)
@pytest.mark.parametrize("border", BORDERS)
def test_attention_gradgradcheck(forced_backend, border, normalizer, require_backend):
    q, k, v = _qkv()
    require_backend(forced_backend, q, k, v)

    def op(q, k, v):
        return sapa_attention(q, k, v, K, normalizer=normalizer, border=border,
                              backend=forced_backend)

    assert gradgradcheck(op, (q, k, v), fast_mode=True)


@pytest.mark.parametrize("border", BORDERS)
def test_primitives_gradgradcheck(forced_backend, border, require_backend):
    q, k, v = _qkv()
    kernels = _leaves((1, K * K, 3, 5), seed=1)[0]
    require_backend(forced_backend, q, k, v)

    def sim(q, k):
        s = local_similarity(q, k, K, border=border, backend=forced_backend)
        return s.masked_fill(torch.isinf(s), 0.0)  # -inf outside ("valid") is a constant

    assert gradgradcheck(sim, (q, k), fast_mode=True)
    assert gradgradcheck(lambda a, v: local_assemble(a, v, K, border=border,
                                                     backend=forced_backend), (kernels, v),
                         fast_mode=True)


@pytest.mark.parametrize("backend", ["lean", "reference"])
@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid"])
def test_sampled_gradgradcheck(backend, normalizer):
    q, k, v = _leaves((1, 4, 3, 5), (1, 4, 2, 3), (1, 2, 2, 3))
    offsets = (0.7 * torch.randn(1, 2 * 2 * 2, 3, 5, generator=torch.Generator().manual_seed(3),
                                 dtype=torch.float64)).requires_grad_()

    def op(q, k, v, o):
        return sampled_attention(q, k, v, o, groups=2, num_points=2, normalizer=normalizer,
                                 backend=backend)

    assert gradgradcheck(op, (q, k, v, offsets), fast_mode=True)


def test_create_graph_gives_the_backends_first_derivatives(backend_name, require_backend):
    """The differentiable path (reference VJP) and the backend's own backward agree."""
    q, k, v = _qkv()
    require_backend(backend_name, q, k, v)
    out = sapa_attention(q, k, v, K, normalizer="softplus", border="valid", backend=backend_name)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=out.dtype)
    plain = torch.autograd.grad(out, (q, k, v), g, retain_graph=True)
    graphed = torch.autograd.grad(out, (q, k, v), g, create_graph=True)
    for a, b in zip(plain, graphed):
        assert b.requires_grad
        torch.testing.assert_close(a, b.detach())


def test_gradient_penalty_step(backend):
    """A training step with a penalty on the input gradient (the use case of double backward)
    runs with the automatic and every forced backend."""
    q, k, v = (t.detach().float().requires_grad_() for t in _qkv())
    out = sapa_attention(q, k, v, K, backend=backend)
    (gq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
    (out.mean() + gq.square().sum()).backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.slow
@pytest.mark.parametrize("normalizer", NORMALIZERS)
@pytest.mark.parametrize("border", BORDERS)
def test_slow_attention_full_gradgradcheck(forced_backend, border, normalizer, require_backend):
    q, k, v = _qkv()
    require_backend(forced_backend, q, k, v)

    def op(q, k, v):
        return sapa_attention(q, k, v, K, normalizer=normalizer, border=border,
                              backend=forced_backend)

    assert gradgradcheck(op, (q, k, v))


@pytest.mark.slow
def test_slow_sampled_full_gradgradcheck():
    q, k, v = _leaves((1, 4, 3, 5), (1, 4, 2, 3), (1, 2, 2, 3))
    offsets = (0.7 * torch.randn(1, 8, 3, 5, generator=torch.Generator().manual_seed(3),
                                 dtype=torch.float64)).requires_grad_()
    for backend in ("lean", "reference"):
        assert gradgradcheck(lambda *t: sampled_attention(*t, groups=2, num_points=2,
                                                          backend=backend), (q, k, v, offsets))


@pytest.mark.slow
def test_slow_triton_gradgradcheck(monkeypatch):
    from sapa.ops.backends import triton as tb

    if not tb._HAVE_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v = _qkv()
    assert gradgradcheck(lambda *t: sapa_attention(*t, K, backend="triton"), (q, k, v),
                         fast_mode=True)
