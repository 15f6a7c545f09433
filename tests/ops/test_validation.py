"""Bad input to the public ops fails with a ``ValueError`` / ``TypeError`` that names the argument
and what was expected, before any backend is chosen or any work is done."""
from __future__ import annotations

import pytest
import torch

import sapa.ops.functional as functional
from sapa.ops import local_assemble, local_similarity, sapa_attention


@pytest.fixture
def no_work(monkeypatch):
    """Any call that gets past validation to the backend choice fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("validation let a bad call through to the backend choice")

    monkeypatch.setattr(functional.dispatch, "canonical_backend", fail)


def qkv(b=2, d=4, c=3, h=4, w=5, ho=8, wo=10, dtype=torch.float32):
    return (torch.randn(b, d, ho, wo, dtype=dtype), torch.randn(b, d, h, w, dtype=dtype),
            torch.randn(b, c, h, w, dtype=dtype))


def _with(args, **replace):
    names = ("q", "k", "v")
    return [replace.get(n, a) for n, a in zip(names, args)]


P = pytest.param

# replacements of q / k / v, error type, message pattern
ATTENTION_BAD_TENSORS = [
    P({"q": [[1.0]]}, TypeError, r"q must be a torch\.Tensor", id="q not a tensor"),
    P({"q": torch.randn(4, 8, 10)}, ValueError,
      r"q must be 4-D \(B x C x H x W\), got shape \(4, 8, 10\)", id="q 3-D"),
    P({"k": torch.randn(2, 4, 1, 4, 5)}, ValueError, r"k must be 4-D", id="k 5-D"),
    P({"v": torch.randn(4, 5)}, ValueError, r"v must be 4-D", id="v 2-D"),
    P({"v": torch.ones(2, 3, 4, 5, dtype=torch.int64)}, TypeError,
      r"v must be a floating-point tensor", id="v integer"),
    P({"k": torch.randn(1, 4, 4, 5)}, ValueError, r"batch size, got 2, 1 and 2", id="k batch"),
    P({"v": torch.randn(3, 3, 4, 5)}, ValueError, r"batch size, got 2, 2 and 3", id="v batch"),
    P({"k": torch.randn(2, 5, 4, 5)}, ValueError,
      r"q and k must have the same number of channels d", id="q/k channels"),
    P({"v": torch.randn(2, 3, 4, 6)}, ValueError,
      r"k and v must have the same spatial size H x W", id="k/v spatial"),
    P({"q": torch.randn(2, 4, 3, 10)}, ValueError,
      r"q \(the high-resolution side\) must be at least as large as k: "
      r"got q spatial size 3x10 and k spatial size 4x5", id="guide shorter"),
    P({"q": torch.randn(2, 4, 8, 4)}, ValueError, r"at least as large as k", id="guide narrower"),
    P({"k": torch.randn(2, 4, 4, 5, dtype=torch.float64)}, TypeError,
      r"k has dtype torch\.float64 but q has torch\.float32; all inputs must share one dtype",
      id="k dtype"),
    P({"v": torch.randn(2, 3, 4, 5, dtype=torch.float16)}, TypeError,
      r"v has dtype torch\.float16", id="v dtype"),
    P({"k": torch.randn(2, 4, 4, 5, device="meta")}, ValueError,
      r"k is on meta but q is on cpu; all inputs must be on one device", id="k device"),
    P({"v": torch.randn(2, 3, 4, 5, device="meta")}, ValueError,
      r"v is on meta but q is on cpu", id="v device"),
]


@pytest.mark.parametrize("replace, error, match", ATTENTION_BAD_TENSORS)
def test_attention_bad_tensors(no_work, replace, error, match):
    with pytest.raises(error, match=match):
        sapa_attention(*_with(qkv(), **replace), 3)


# keyword arguments, error type, message pattern
BAD_OPTIONS = [
    ({"kernel_size": 4}, ValueError, r"kernel_size must be an odd integer >= 1, got 4", "K even"),
    ({"kernel_size": 0}, ValueError, r"kernel_size must be an odd integer >= 1, got 0", "K zero"),
    ({"kernel_size": -3}, ValueError, r"kernel_size must be an odd integer >= 1, got -3",
     "K negative"),
    ({"kernel_size": 3.0}, TypeError, r"kernel_size must be an int, got float", "K float"),
    ({"kernel_size": "3"}, TypeError, r"kernel_size must be an int, got str", "K str"),
    ({"kernel_size": True}, TypeError, r"kernel_size must be an int, got bool", "K bool"),
    ({"border": "reflect"}, ValueError,
     r"border must be one of \['zeros', 'valid'\], got 'reflect'", "border"),
    ({"border": None}, ValueError, r"border must be one of", "border None"),
]
ATTENTION_BAD_OPTIONS = BAD_OPTIONS + [
    ({"normalizer": "softmin"}, ValueError,
     r"normalizer must be one of \['softmax', 'relu', 'sigmoid', 'softplus', 'none'\], "
     r"got 'softmin'", "normalizer"),
    ({"normalizer": "Softmax"}, ValueError, r"normalizer must be one of", "normalizer case"),
]


def _call(op, args, kwargs):
    kwargs = {"kernel_size": 3, **kwargs}
    return op(*args, kwargs.pop("kernel_size"), **kwargs)


@pytest.mark.parametrize("kwargs, error, match",
                         [P(*c[:3], id=c[3]) for c in ATTENTION_BAD_OPTIONS])
def test_attention_bad_options(no_work, kwargs, error, match):
    with pytest.raises(error, match=match):
        _call(sapa_attention, qkv(), kwargs)


@pytest.mark.parametrize("backend", ["cuda", "Lean", "", 3])
def test_unknown_backend(backend):
    with pytest.raises(ValueError, match=r"backend must be None or one of \['reference', 'lean'"):
        sapa_attention(*qkv(), 3, backend=backend)
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"backend must be None or one of"):
        local_similarity(q, k, 3, backend=backend)
    with pytest.raises(ValueError, match=r"backend must be None or one of"):
        local_assemble(torch.randn(2, 9, 8, 10), v, 3, backend=backend)


def _q_k():
    return torch.randn(2, 4, 8, 10), torch.randn(2, 4, 4, 5)


# positional tensors, keyword arguments, error type, message pattern
SIMILARITY_BAD = [
    P((torch.randn(4, 8, 10), torch.randn(2, 4, 4, 5)), {}, ValueError, r"q must be 4-D",
      id="q 3-D"),
    P((torch.randn(2, 4, 8, 10), 1.0), {}, TypeError, r"k must be a torch\.Tensor",
      id="k not tensor"),
    P((torch.randn(2, 4, 8, 10), torch.randn(1, 4, 4, 5)), {}, ValueError,
      r"q and k must have the same batch size, got 2 and 1", id="batch"),
    P((torch.randn(2, 4, 8, 10), torch.randn(2, 3, 4, 5)), {}, ValueError,
      r"same number of channels d", id="channels"),
    P((torch.randn(2, 4, 8, 4), torch.randn(2, 4, 4, 5)), {}, ValueError,
      r"q \(the high-resolution side\) must be at least as large as k", id="guide smaller"),
    P((torch.randn(2, 4, 8, 10), torch.randn(2, 4, 4, 5, dtype=torch.bfloat16)), {}, TypeError,
      r"k has dtype torch\.bfloat16 but q has torch\.float32", id="dtype"),
    P((torch.randn(2, 4, 8, 10, device="meta"), torch.randn(2, 4, 4, 5)), {}, ValueError,
      r"k is on cpu but q is on meta", id="device"),
] + [P(_q_k(), kw, e, m, id=name) for kw, e, m, name in BAD_OPTIONS]


@pytest.mark.parametrize("args, kwargs, error, match", SIMILARITY_BAD)
def test_similarity_bad_input(no_work, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        _call(local_similarity, args, kwargs)


def _kernels_v():
    return torch.randn(2, 9, 8, 10), torch.randn(2, 3, 4, 5)


ASSEMBLE_BAD = [
    P((torch.randn(9, 8, 10), torch.randn(2, 3, 4, 5)), {}, ValueError, r"kernels must be 4-D",
      id="kernels 3-D"),
    P((torch.randn(2, 9, 8, 10), None), {}, TypeError, r"v must be a torch\.Tensor, got NoneType",
      id="v not tensor"),
    P((torch.randn(2, 9, 8, 10), torch.randn(3, 3, 4, 5)), {}, ValueError,
      r"kernels and v must have the same batch size, got 2 and 3", id="batch"),
    P((torch.randn(2, 25, 8, 10), torch.randn(2, 3, 4, 5)), {}, ValueError,
      r"kernels must have kernel_size\*\*2 = 9 channels \(B x K\*K x H' x W'\), "
      r"got shape \(2, 25, 8, 10\)", id="kernel channels"),
    P((torch.randn(2, 9, 3, 10), torch.randn(2, 3, 4, 5)), {}, ValueError,
      r"kernels \(the high-resolution side\) must be at least as large as v", id="kernels smaller"),
    P((torch.randn(2, 9, 8, 10, dtype=torch.float64), torch.randn(2, 3, 4, 5)), {}, TypeError,
      r"v has dtype torch\.float32 but kernels has torch\.float64", id="dtype"),
    P((torch.randn(2, 9, 8, 10), torch.randn(2, 3, 4, 5, device="meta")), {}, ValueError,
      r"v is on meta but kernels is on cpu", id="device"),
] + [P(_kernels_v(), kw, e, m, id=name) for kw, e, m, name in BAD_OPTIONS]


@pytest.mark.parametrize("args, kwargs, error, match", ASSEMBLE_BAD)
def test_assemble_bad_input(no_work, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        _call(local_assemble, args, kwargs)


def test_valid_calls_pass_validation():
    """The bad-input tests above differ from these calls by one argument each."""
    q, k, v = qkv()
    assert sapa_attention(q, k, v, 3).shape == (2, 3, 8, 10)
    assert local_similarity(q, k, 3).shape == (2, 9, 8, 10)
    assert local_assemble(torch.randn(2, 9, 8, 10), v, 3).shape == (2, 3, 8, 10)


# ---- zero-size inputs ------------------------------------------------------------------------
# An empty batch is fine (an empty result, on every backend: test_attention.py, and below for the
# other ops). A feature with no channels or no points is refused, naming the argument: it has
# nothing to compare or reassemble.

EMPTY_ATTENTION = [
    P({"k": torch.randn(2, 4, 0, 5), "v": torch.randn(2, 3, 0, 5)}, r"k must have a non-empty "
      r"spatial size H x W \(at least 1 x 1\), got shape \(2, 4, 0, 5\)", id="H=0"),
    P({"k": torch.randn(2, 4, 4, 0), "v": torch.randn(2, 3, 4, 0)}, r"k must have a non-empty "
      r"spatial size H x W", id="W=0"),
    P({"q": torch.randn(2, 4, 0, 10)}, r"q must have a non-empty spatial size H' x W'",
      id="H'=0"),
    P({"v": torch.randn(2, 0, 4, 5)}, r"v must have at least one channel \(C >= 1\), got "
      r"shape \(2, 0, 4, 5\)", id="C=0"),
    P({"q": torch.randn(2, 0, 8, 10), "k": torch.randn(2, 0, 4, 5)},
      r"q must have at least one channel \(d >= 1\)", id="d=0"),
]


@pytest.mark.parametrize("replace, match", EMPTY_ATTENTION)
def test_attention_empty_sizes(no_work, replace, match):
    with pytest.raises(ValueError, match=match):
        sapa_attention(*_with(qkv(), **replace), 3)


def test_primitives_empty_sizes(no_work):
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"k must have a non-empty spatial size H x W"):
        local_similarity(q, torch.randn(2, 4, 0, 5), 3)
    with pytest.raises(ValueError, match=r"q must have at least one channel \(d >= 1\)"):
        local_similarity(q[:, :0], k[:, :0], 3)
    with pytest.raises(ValueError, match=r"v must have a non-empty spatial size H x W"):
        local_assemble(torch.randn(2, 9, 8, 10), torch.randn(2, 3, 4, 0), 3)
    with pytest.raises(ValueError, match=r"v must have at least one channel \(C >= 1\)"):
        local_assemble(torch.randn(2, 9, 8, 10), v[:, :0], 3)


def test_sampled_empty_sizes():
    from sapa.ops import sampled_attention

    q, k, v = torch.randn(1, 4, 6, 8), torch.randn(1, 4, 3, 4), torch.randn(1, 2, 3, 4)
    off = torch.randn(1, 8, 6, 8)
    with pytest.raises(ValueError, match=r"k must have a non-empty spatial size H x W"):
        sampled_attention(q, k[..., :0], v[..., :0], off, groups=2, num_points=2)
    with pytest.raises(ValueError, match=r"v must have at least one channel \(C >= 1\)"):
        sampled_attention(q, k, v[:, :0], off, groups=2, num_points=2)


@pytest.mark.parametrize("backend", ["reference", "lean", "numba", "triton"])
def test_empty_batch_every_op(backend, monkeypatch, require_backend):
    from sapa.ops import sampled_attention

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v = (t[:0].requires_grad_() for t in qkv())
    kernels = torch.randn(0, 9, 8, 10, requires_grad=True)
    require_backend(backend, q, k, v)
    outs = [sapa_attention(q, k, v, 3, backend=backend),
            local_similarity(q, k, 3, backend=backend),
            local_assemble(kernels, v, 3, backend=backend)]
    if backend in ("reference", "lean"):
        off = torch.randn(0, 8, 8, 10, requires_grad=True)
        outs.append(sampled_attention(q, k, v[:, :2], off, groups=2, num_points=2,
                                      backend=backend))
    assert [tuple(o.shape) for o in outs][:3] == [(0, 3, 8, 10), (0, 9, 8, 10), (0, 3, 8, 10)]
    sum(o.sum() for o in outs).backward()
    for t in (q, k, v, kernels):
        assert t.grad is not None and t.grad.shape == t.shape
