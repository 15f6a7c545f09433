"""Seeded random comparison of every backend with the reference, forward and backward.

Each case draws a shape (batch 0-2, d and C 1-6, maps of 1-5 points a side, output sizes x1,
x2, 2H+1 or anything larger), a kernel size (1-7, often larger than the map), a border, a
normalizer, a dtype and a memory layout, and, in most cases, NaN and +/-inf at a few random
places of the inputs and of the output gradient. Every backend must give what the reference
gives: NaN and +/-inf at exactly the same places, the finite values within the dtype's
tolerance. The window op runs on ``lean`` and ``numba`` (and ``triton`` under
``TRITON_INTERPRET=1`` on a few tiny cases), its two primitives too, SAPA-D's sampled op on
``lean``.

The default run takes a bounded number of cases (well under a minute); ``-m slow`` runs many
more. A failure prints the case, so ``python -c`` can replay it with ``_case(seed)``.
"""
from __future__ import annotations

import random

import pytest
import torch

from sapa.ops import local_assemble, local_similarity, sapa_attention
from sapa.ops.backends import numba as numba_backend
from sapa.ops.backends import reference
from sapa.ops.backends import triton as triton_backend
from sapa.ops.backends.reference import sampled as reference_sampled
from sapa.ops.sampled import sampled_attention

NORMALIZERS = ("softmax", "relu", "sigmoid", "softplus", "none")
BORDERS = ("zeros", "valid")
# Error allowed on finite values, relative to max(1, max |expected|). float64: sums in another
# order. float32: as in test_attention.py (the relu normalizer amplifies rounding by up to
# max|s| / sum relu(s)). Half precision: both sides compute in float32 and round the output
# once (2 ulps); the backends' gradients use the rounded output (delta = <grad, out>), which
# the normalisation amplifies as in float32 (16 ulps).
TOL = {torch.float64: 1e-9, torch.float32: 1e-3, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
GRAD_TOL = {torch.float64: 1e-9, torch.float32: 1e-3, torch.float16: 1.6e-2,
            torch.bfloat16: 1.3e-1}
WINDOW_BACKENDS = ["lean", "numba"]
HALF = (torch.float16, torch.bfloat16)
NAN, INF = float("nan"), float("inf")


def _case(seed: int) -> dict:
    rnd = random.Random(seed)
    h, w = rnd.randint(1, 5), rnd.randint(1, 5)
    kind = rnd.choice(["x1", "x2", "2H+1", "any"])
    if kind == "x1":
        ho, wo = h, w
    elif kind == "x2":
        ho, wo = 2 * h, 2 * w
    elif kind == "2H+1":
        ho, wo = 2 * h + 1, 2 * w + 1
    else:
        ho, wo = rnd.randint(h, 3 * h + 1), rnd.randint(w, 3 * w + 1)
    return dict(
        seed=seed,
        b=rnd.choice([1, 1, 2, 2, 0]),
        d=rnd.choice([1, 2, 3, 5, 6]),
        c=rnd.choice([1, 2, 4, 6]),
        size=(h, w), out=(ho, wo),
        k=rnd.choice([1, 3, 3, 5, 7]),
        border=rnd.choice(BORDERS),
        normalizer=rnd.choice(NORMALIZERS),
        dtype=rnd.choice([torch.float64, torch.float64, torch.float32, torch.float32,
                          torch.float16, torch.bfloat16]),
        channels_last=rnd.random() < 0.25,
        non_finite=rnd.random() < 0.7,
    )


def _poison(t: torch.Tensor, rnd: random.Random, values) -> torch.Tensor:
    """``t`` with one of ``values`` written at 1-3 random places."""
    t = t.clone()
    flat = t.view(-1)
    for _ in range(rnd.randint(1, 3)):
        if flat.numel():
            flat[rnd.randrange(flat.numel())] = rnd.choice(values)
    return t


def _tensors(case, shapes):
    """Random inputs of ``shapes``, the last one the output gradient, poisoned if the case says
    so (inputs with NaN, +inf and -inf; the gradient with NaN: see docs/operator.md for an
    infinite output gradient), in the case's dtype and layout."""
    rnd = random.Random(case["seed"] + 1)
    gen = torch.Generator().manual_seed(case["seed"])
    out = []
    for i, shape in enumerate(shapes):
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
        if case["non_finite"] and rnd.random() < 0.6:
            last = i == len(shapes) - 1
            t = _poison(t, rnd, [NAN] if last else [NAN, INF, -INF])
        t = t.to(case["dtype"])
        if case["channels_last"]:
            t = t.contiguous(memory_format=torch.channels_last)
        out.append(t)
    return out


def _run(fn, inputs, grad):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad)]


def assert_same(actual, expected, tol, what):
    """NaN, +inf and -inf at the same places; finite values within ``tol`` x max(1, |max|)
    (not compared if ``tol`` is ``None``)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        f"{what}: {actual.shape} {actual.dtype} != {expected.shape} {expected.dtype}")
    for kind, test in (("nan", torch.isnan), ("+inf", torch.isposinf),
                       ("-inf", torch.isneginf)):
        a, e = test(actual), test(expected)
        assert torch.equal(a, e), (
            f"{what}: {kind} at {int(a.sum())} places, the reference at {int(e.sum())} "
            f"({int((a != e).sum())} differ)")
    finite = torch.isfinite(expected)
    if tol is not None and finite.any():
        a, e = actual[finite].double(), expected[finite].double()
        err = (a - e).abs().max().item()
        scale = max(1.0, e.abs().max().item())
        assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}"


def _compare(results, wanted, case, names):
    """``results[0]`` is the output, the others gradients. The relu normalizer's gradients in
    half precision are compared for their non-finite places only: they divide the rounding of
    the half-precision output (in ``<grad, out>``) by ``sum relu(s)``, which a window of small
    scores makes tiny, so their error has no bound in ulps (their accuracy on conditioned inputs
    is tested in test_triton_backend.py)."""
    ill_conditioned = case["normalizer"] == "relu" and case["dtype"] in HALF
    for i, (name, a, e) in enumerate(zip(names, results, wanted)):
        tol = (GRAD_TOL if i else TOL)[case["dtype"]]
        assert_same(a, e, None if i and ill_conditioned else tol, f"{name} of case {case}")


def check_window_case(case, backends):
    b, d, c, (h, w), (ho, wo), k = (case[n] for n in ("b", "d", "c", "size", "out", "k"))
    border, normalizer = case["border"], case["normalizer"]
    q, kk, v, g = _tensors(case, [(b, d, ho, wo), (b, d, h, w), (b, c, h, w), (b, c, ho, wo)])
    wanted = _run(lambda *t: reference.sapa_attention(*t, k, normalizer, border), (q, kk, v), g)
    s_grad, a_grad = _tensors(dict(case, seed=case["seed"] + 7),
                              [(b, k * k, ho, wo), (b, c, ho, wo)])
    wanted_s = _run(lambda *t: reference.local_similarity(*t, k, border), (q, kk), s_grad)
    kernels = _tensors(dict(case, seed=case["seed"] + 11), [(b, k * k, ho, wo)])[0]
    wanted_a = _run(lambda *t: reference.local_assemble(*t, k, border), (kernels, v), a_grad)
    for backend in backends:
        got = _run(lambda *t: sapa_attention(*t, k, normalizer=normalizer, border=border,
                                             backend=backend), (q, kk, v), g)
        _compare(got, wanted, case, [f"{backend} attention {n}" for n in ("out", "dq", "dk", "dv")])
        got = _run(lambda *t: local_similarity(*t, k, border=border, backend=backend),
                   (q, kk), s_grad)
        _compare(got, wanted_s, case, [f"{backend} similarity {n}" for n in ("out", "dq", "dk")])
        got = _run(lambda *t: local_assemble(*t, k, border=border, backend=backend),
                   (kernels, v), a_grad)
        _compare(got, wanted_a, case,
                 [f"{backend} assemble {n}" for n in ("out", "dkernels", "dv")])


def check_sampled_case(case):
    rnd = random.Random(case["seed"] + 3)
    groups, points = rnd.choice([1, 2]), rnd.choice([1, 2, 4])
    b, (h, w), (ho, wo) = case["b"], case["size"], case["out"]
    d, c = case["d"], groups * case["c"]
    q, k, v, g = _tensors(case, [(b, groups * d, ho, wo), (b, groups * d, h, w), (b, c, h, w),
                                 (b, c, ho, wo)])
    gen = torch.Generator().manual_seed(case["seed"] + 5)
    offsets = (2 * torch.randn(b, 2 * groups * points, ho, wo, generator=gen,
                               dtype=torch.float64)).to(case["dtype"])
    args = (groups, points, case["normalizer"])
    wanted = _run(lambda *t: reference_sampled.sampled_attention(*t, *args), (q, k, v, offsets), g)
    got = _run(lambda *t: sampled_attention(*t, groups=groups, num_points=points,
                                            normalizer=case["normalizer"], backend="lean"),
               (q, k, v, offsets), g)
    _compare(got, wanted, case, [f"lean sampled {n}" for n in ("out", "dq", "dk", "dv", "doff")])


def _window_backends():
    return [b for b in WINDOW_BACKENDS if b != "numba" or numba_backend.jit_unavailable() is None]


def test_numba_is_fuzzed():
    """The numba backend's kernels load here, so the fuzz below holds it to the reference
    (rather than passing it over)."""
    assert numba_backend.jit_unavailable() is None


@pytest.mark.parametrize("start", range(0, 240, 40))
def test_fuzz_window_backends(start):
    for seed in range(start, start + 40):
        check_window_case(_case(seed), _window_backends())


def test_fuzz_sampled_lean():
    for seed in range(1000, 1060):
        check_sampled_case(_case(seed))


# the interpreter is slow: tiny cases only, and fewer of them in the default run
def _tiny_case(seed):
    case = _case(seed)
    rnd = random.Random(seed + 9)
    h, w = rnd.randint(1, 3), rnd.randint(1, 3)
    return dict(case, b=min(case["b"], 1), d=min(case["d"], 3), c=min(case["c"], 3), size=(h, w),
                out=(rnd.randint(h, 2 * h + 1), rnd.randint(w, 2 * w + 1)),
                k=min(case["k"], 5), non_finite=True)


# numpy, which runs the interpreted kernels, warns about the nan it is given
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.skipif(not triton_backend._HAVE_TRITON, reason="triton is not installed")
def test_fuzz_triton_interpreted(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for seed in (2000, 2001, 2002):
        check_window_case(_tiny_case(seed), ["triton"])


@pytest.mark.slow
@pytest.mark.parametrize("start", range(10_000, 14_000, 500))
def test_slow_fuzz_window_backends(start):
    for seed in range(start, start + 500):
        check_window_case(_case(seed), _window_backends())


@pytest.mark.slow
def test_slow_fuzz_sampled_lean():
    for seed in range(20_000, 21_000):
        check_sampled_case(_case(seed))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.skipif(not triton_backend._HAVE_TRITON, reason="triton is not installed")
def test_slow_fuzz_triton_interpreted(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for seed in range(30_000, 30_040):
        check_window_case(_tiny_case(seed), ["triton"])
