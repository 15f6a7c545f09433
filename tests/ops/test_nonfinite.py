"""NaN and infinity propagate through every backend and normalizer as through the reference.

One NaN key (or an infinite query or value) spoils exactly the outputs and gradients it spoils
in the reference: the outputs whose windows hold it, and no more. A normalizer that clips
(``relu``) must not swallow a NaN (``relu(nan)`` is NaN), and a ``valid`` border must not let
a point it leaves out spoil anything (the score of an outside point is ``q * 0``, NaN for an
infinite ``q``). The randomized version of these checks is ``test_fuzz.py``.
"""
from __future__ import annotations

import pytest
import torch

from sapa.ops import sapa_attention
from sapa.ops.backends import reference, triton

NORMALIZERS = ("softmax", "relu", "sigmoid", "softplus", "none")
BORDERS = ("zeros", "valid")
NAN, INF = float("nan"), float("inf")
# (tensor, index, value): where the non-finite value goes
POISONS = {
    "nan key": ("k", (0, 0, 1, 1), NAN),
    "inf query": ("q", (0, 1, 2, 3), INF),
    "-inf value": ("v", (0, 2, 2, 0), -INF),
}


def _inputs(poison):
    g = torch.Generator().manual_seed(0)
    t = dict(zip("qkv", (torch.randn(s, generator=g, dtype=torch.float64)
                         for s in ((1, 3, 8, 10), (1, 3, 4, 5), (1, 4, 4, 5)))))
    name, index, value = POISONS[poison]
    t[name][index] = value
    return t["q"], t["k"], t["v"]


def _run(fn, inputs):
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    return [out.detach(), *torch.autograd.grad(out, leaves, g)]


def _same_places(got, want, what):
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want):
        for kind, test in (("nan", torch.isnan), ("+inf", torch.isposinf),
                           ("-inf", torch.isneginf)):
            assert torch.equal(test(a), test(e)), (
                f"{what} {name}: {kind} at {int(test(a).sum())} places, the reference at "
                f"{int(test(e).sum())}")
        finite = torch.isfinite(e)
        torch.testing.assert_close(a[finite], e[finite], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("poison", list(POISONS))
@pytest.mark.parametrize("normalizer", NORMALIZERS)
@pytest.mark.parametrize("border", BORDERS)
def test_non_finite_spreads_as_in_the_reference(backend_name, border, normalizer, poison,
                                                require_backend):
    inputs = _inputs(poison)
    require_backend(backend_name, *inputs)
    want = _run(lambda *t: reference.sapa_attention(*t, 3, normalizer, border), inputs)
    got = _run(lambda *t: sapa_attention(*t, 3, normalizer=normalizer, border=border,
                                         backend=backend_name), inputs)
    _same_places(got, want, f"{backend_name} {normalizer} {border} {poison}")


def test_relu_keeps_a_nan_key_on_every_backend(monkeypatch):
    """The numba and Triton kernels used to clip a NaN score to 0 (``max(s, 0)``): a NaN key
    left no trace in their outputs."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v = _inputs("nan key")
    want = torch.isnan(reference.sapa_attention(q, k, v, 3, "relu", "zeros"))
    assert want.sum() > 0
    for backend in ("lean", "numba", "triton") if triton._HAVE_TRITON else ("lean", "numba"):
        out = sapa_attention(q, k, v, 3, normalizer="relu", backend=backend)
        assert torch.equal(torch.isnan(out), want), backend


@pytest.mark.slow
@pytest.mark.skipif(not triton._HAVE_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("poison", list(POISONS))
@pytest.mark.parametrize("normalizer", NORMALIZERS)
@pytest.mark.parametrize("border", BORDERS)
def test_slow_triton_non_finite(border, normalizer, poison, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    inputs = _inputs(poison)
    want = _run(lambda *t: reference.sapa_attention(*t, 3, normalizer, border), inputs)
    got = _run(lambda *t: sapa_attention(*t, 3, normalizer=normalizer, border=border,
                                         backend="triton"), inputs)
    _same_places(got, want, f"triton {normalizer} {border} {poison}")
