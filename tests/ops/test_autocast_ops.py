"""The ops under ``torch.autocast``: they run in the autocast dtype, like a convolution.

Inside autocast, float32 / float16 / bfloat16 inputs are cast to the autocast dtype and the op
runs on them (computing in float32 inside, as for any half-precision input); the result has the
autocast dtype and the gradients the inputs' own dtypes. float64 inputs are left alone. Outside
autocast nothing is cast and mixed dtypes are an error. The reference follows the same policy,
and so does a graph compiled under autocast. CUDA (float16, bfloat16, GradScaler) runs where a
GPU is present.
"""
from __future__ import annotations

import pytest
import torch

from sapa.ops import local_assemble, local_similarity, sampled_attention, sapa_attention

CPU_DTYPES = (torch.bfloat16, torch.float16)
BACKENDS = ("reference", "lean", "numba", None)
K = 3


def _inputs(device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = ((2, 4, 7, 9), (2, 4, 3, 4), (2, 5, 3, 4))
    return [torch.randn(s, generator=g, dtype=dtype).to(device) for s in shapes]


def _ops(backend):
    """``name -> (fn, inputs)`` for every functional op on float32 inputs."""
    q, k, v = _inputs()
    kernels = torch.randn(2, K * K, 7, 9, generator=torch.Generator().manual_seed(1))
    offsets = torch.randn(2, 2 * 2 * 3, 7, 9, generator=torch.Generator().manual_seed(2))
    ops = {
        "sapa_attention": (lambda q, k, v: sapa_attention(q, k, v, K, backend=backend),
                           (q, k, v)),
        "local_similarity": (lambda q, k: local_similarity(q, k, K, backend=backend), (q, k)),
        "local_assemble": (lambda a, v: local_assemble(a, v, K, backend=backend), (kernels, v)),
    }
    if backend in (None, "lean", "reference"):
        ops["sampled_attention"] = (
            lambda q, k, v, o: sampled_attention(q, k, v[:, :4], o, groups=2, num_points=3,
                                                 backend=backend), (q, k, v, offsets))
    return ops


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b or "auto")
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_cpu_autocast_runs_in_the_autocast_dtype(dtype, backend):
    for name, (fn, inputs) in _ops(backend).items():
        leaves = [t.clone().requires_grad_() for t in inputs]
        with torch.autocast("cpu", dtype=dtype):
            out = fn(*leaves)
        assert out.dtype == dtype, name
        # the same as casting by hand, outside autocast
        want = fn(*(t.to(dtype) for t in inputs))
        assert torch.equal(out, want), name
        out.float().square().sum().backward()
        for t in leaves:
            assert t.grad.dtype == torch.float32 and torch.isfinite(t.grad).all(), name


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b or "auto")
def test_float64_inputs_are_not_cast(backend):
    for name, (fn, inputs) in _ops(backend).items():
        inputs = [t.double() for t in inputs]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(*inputs)
        assert out.dtype == torch.float64, name
        torch.testing.assert_close(out, fn(*inputs))


def test_mixed_dtypes_outside_autocast_are_an_error():
    q, k, v = _inputs()
    with pytest.raises(TypeError, match=r"v has dtype torch\.bfloat16 but q has torch\.float32"):
        sapa_attention(q, k, v.bfloat16(), K)
    # inside autocast the same call is cast, not refused
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sapa_attention(q, k, v.bfloat16(), K).dtype == torch.bfloat16


def test_autocast_of_another_device_does_not_apply():
    q, k, v = _inputs()
    with torch.autocast("cuda", dtype=torch.float16, enabled=torch.cuda.is_available()):
        assert sapa_attention(q, k, v, K).dtype == torch.float32


def test_compiled_graph_follows_the_policy():
    torch._dynamo.reset()
    q, k, v = _inputs()

    def fn(q, k, v):
        return sapa_attention(q, k, v, K) + local_assemble(
            torch.softmax(local_similarity(q, k, K), dim=1), v, K)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = fn(q, k, v), compiled(q, k, v)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want)
    assert compiled(q, k, v).dtype == torch.float32  # outside autocast: recompiled, as is


# ---- CUDA ------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA autocast)")


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", [None, "triton", "lean", "reference"], ids=lambda b: b or "auto")
def test_cuda_autocast_with_grad_scaler(dtype, backend):
    q, k, v = (t.requires_grad_() for t in _inputs("cuda"))
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=dtype):
        out = sapa_attention(q, k, v, K, backend=backend)
        loss = out.float().square().mean()
    assert out.dtype == dtype
    scaler.scale(loss).backward()
    for t in (q, k, v):
        assert t.grad.dtype == torch.float32 and torch.isfinite(t.grad).all()
    want = sapa_attention(*(t.detach().to(dtype) for t in (q, k, v)), K, backend=backend)
    torch.testing.assert_close(out, want)
