"""What is specific to the ``numba`` backend (``sapa.ops.backends.numba``, alias ``"cpu"``).

The generic suites (``test_attention.py``, ``test_primitives.py``, ``test_gradcheck.py``) hold
every backend, this one included, to a float64 ground truth. Here: the kernels' own code paths
(integer and non-integer scales, channel and window chunks and their remainders, several rows
per task, several tasks per thread), gradcheck on those shapes, half precision, memory layouts,
threads and determinism, the fallback to ``lean`` when the JIT is unavailable (and the error
when the backend is forced), and the on-disk compile cache.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch.autograd import gradcheck

from sapa.ops import choose_backend, dispatch, local_assemble, local_similarity, sapa_attention
from sapa.ops.backends import lean, reference
from sapa.ops.backends import numba as cpu

NORMALIZERS = ("softmax", "relu", "sigmoid", "softplus", "none")
BORDERS = ("zeros", "valid")

JIT_REASON = cpu.jit_unavailable()  # loads numba (and the launchers) when it can
launch = cpu._state["launch"]
# the fallback tests that also run (and matter most) where numba is missing
RUN_WITHOUT_JIT = {"test_fallback_when_disabled_warns_once",
                   "test_fallback_when_numba_cannot_import", "test_cpu_is_an_alias"}


@pytest.fixture(autouse=True)
def _jit_guard(request):
    """Skips the tests that need the compiled kernels where they are unavailable. Where they
    are available, fails a test whose kernels failed to compile: the backend would have
    fallen back to ``lean`` with a warning, and the test passed on lean's results."""
    if JIT_REASON is not None and request.node.originalname not in RUN_WITHOUT_JIT:
        pytest.skip(f"the cpu backend's JIT is unavailable here: {JIT_REASON}")
    yield
    if JIT_REASON is None:
        assert cpu._state["error"] is None, cpu._state["error"]


def test_every_kernel_compiles():
    names = ("attention_fwd", "attention_bwd_rows", "similarity", "assemble", "transpose")
    for dtype in (torch.float32, torch.float64):
        launch._ready(dtype, *names)  # raises BackendUnavailable if one fails


# (H, W) -> (H', W'): integer scale (shifted-view path), non-integer in both / one dimension
# (gathered path), same size, a map smaller than the window
SIZES = {
    "6x5->12x10": ((6, 5), (12, 10)),
    "5x6->11x13": ((5, 6), (11, 13)),
    "4x6->9x12": ((4, 6), (9, 12)),
    "4x4->4x4": ((4, 4), (4, 4)),
    "2x3->6x9": ((2, 3), (6, 9)),
}


def _inputs(gen, b, d, c, size, dtype=torch.float64, grad=True):
    (h, w), (ho, wo) = size
    shapes = ((b, d, ho, wo), (b, d, h, w), (b, c, h, w))
    return [torch.randn(*s, generator=gen, dtype=dtype).requires_grad_(grad) for s in shapes]


def _close(a, b, tol):
    assert a.shape == b.shape and a.dtype == b.dtype
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ---- against the reference: the kernels' code paths -----------------------------------------

@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("border", BORDERS)
def test_attention_matches_reference_on_kernel_paths(size, kernel_size, border):
    # B=2 and H>=4: several rows per task and several tasks; d=5, C=6: a chunk of 4 channels
    # plus a remainder; K*K in {1, 9, 25, 49}: window chunks of 4 plus remainders
    gen = torch.Generator().manual_seed(0)
    q, k, v = _inputs(gen, 2, 5, 6, SIZES[size])
    g = torch.randn(2, 6, *q.shape[2:], generator=gen, dtype=torch.float64)
    for normalizer in NORMALIZERS:
        args = (q, k, v, kernel_size)
        kw = dict(normalizer=normalizer, border=border)
        out = sapa_attention(*args, **kw, backend="numba")
        ref = reference.sapa_attention(q, k, v, kernel_size, normalizer, border)
        _close(out, ref, 1e-10)
        grads = torch.autograd.grad(out, (q, k, v), g)
        grads_ref = torch.autograd.grad(ref, (q, k, v), g)
        for a, b in zip(grads, grads_ref):
            _close(a, b, 1e-10)


@pytest.mark.parametrize("size", ["6x5->12x10", "5x6->11x13"])
@pytest.mark.parametrize("border", BORDERS)
def test_primitives_match_reference_on_kernel_paths(size, border):
    gen = torch.Generator().manual_seed(1)
    q, k, v = _inputs(gen, 2, 5, 6, SIZES[size])
    for kernel_size in (3, 5):
        s = local_similarity(q, k, kernel_size, border=border, backend="numba")
        s_ref = reference.local_similarity(q, k, kernel_size, border)
        assert torch.equal(torch.isfinite(s), torch.isfinite(s_ref))
        _close(s.masked_fill(~torch.isfinite(s), 0), s_ref.masked_fill(~torch.isfinite(s_ref), 0),
               1e-10)
        gs = torch.randn(s.shape, generator=gen, dtype=s.dtype)
        for a, b in zip(torch.autograd.grad(s, (q, k), gs),
                        torch.autograd.grad(s_ref, (q, k), gs)):
            _close(a, b, 1e-10)

        kern = torch.randn(s.shape, generator=gen, dtype=s.dtype, requires_grad=True)
        out = local_assemble(kern, v, kernel_size, border=border, backend="numba")
        ref = reference.local_assemble(kern, v, kernel_size, border)
        _close(out, ref, 1e-10)
        go = torch.randn(out.shape, generator=gen, dtype=out.dtype)
        for a, b in zip(torch.autograd.grad(out, (kern, v), go),
                        torch.autograd.grad(ref, (kern, v), go)):
            _close(a, b, 1e-10)


@pytest.mark.parametrize("normalizer", NORMALIZERS)
@pytest.mark.parametrize("border", BORDERS)
def test_attention_gradcheck_on_kernel_paths(normalizer, border):
    # several tasks, both channel remainders, an odd size in one dimension
    gen = torch.Generator().manual_seed(2)
    q, k, v = _inputs(gen, 2, 5, 5, ((4, 3), (8, 7)))

    def op(q, k, v):
        return sapa_attention(q, k, v, 3, normalizer=normalizer, border=border, backend="numba")

    assert gradcheck(op, (q, k, v))


def test_primitives_gradcheck_on_kernel_paths():
    gen = torch.Generator().manual_seed(3)
    q, k, v = _inputs(gen, 2, 5, 5, ((4, 3), (8, 6)))

    def sim(q, k):
        s = local_similarity(q, k, 3, border="valid", backend="numba")
        return s.masked_fill(~torch.isfinite(s), 0.0)

    assert gradcheck(sim, (q, k))
    kern = torch.randn(2, 9, 8, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b: local_assemble(a, b, 3, backend="numba"), (kern, v))


def test_float32_realistic_values():
    # float32 against the float64 reference: the kernels accumulate in the input dtype
    gen = torch.Generator().manual_seed(4)
    q, k, v = _inputs(gen, 2, 16, 24, ((9, 11), (19, 23)))
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    out = sapa_attention(q32, k32, v32, 5, backend="numba")
    ref = reference.sapa_attention(q, k, v, 5, "softmax", "zeros")
    _close(out.double(), ref, 1e-4)
    g = torch.randn(out.shape, generator=gen)
    grads = torch.autograd.grad(out, (q32, k32, v32), g)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g.double())
    for a, b in zip(grads, grads_ref):
        _close(a.double(), b, 1e-4)


def test_float32_softmax_extremes():
    # large scores: most exponentials underflow (the float32 path has its own exp); a NaN
    # query spoils exactly the output points that read it, as in the reference
    gen = torch.Generator().manual_seed(11)
    q, k, v = (t.detach() for t in _inputs(gen, 1, 4, 6, ((5, 6), (10, 12)), torch.float32))
    q = q * 100
    for border in BORDERS:
        out = sapa_attention(q, k, v, 5, border=border, backend="numba")
        ref = reference.sapa_attention(q.double(), k.double(), v.double(), 5, "softmax", border)
        _close(out.double(), ref, 1e-5)
    q[0, 1, 4, 7] = float("nan")
    out = sapa_attention(q, k, v, 5, backend="numba")
    ref = reference.sapa_attention(q, k, v, 5, "softmax", "zeros")
    assert torch.isnan(out).any() and torch.equal(torch.isnan(out), torch.isnan(ref))


# ---- dtypes and layouts ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_computes_in_float32(dtype):
    gen = torch.Generator().manual_seed(5)
    q, k, v = (t.detach().to(dtype).requires_grad_()
               for t in _inputs(gen, 1, 4, 6, ((5, 6), (10, 12)), torch.float32))
    out = sapa_attention(q, k, v, 3, backend="numba")
    assert out.dtype == dtype
    # the same inputs, upcast: the backend computes in float32 and rounds once at the end,
    # so it agrees with the float32 reference to the output dtype's rounding
    tol = dict(rtol=2 * torch.finfo(dtype).eps, atol=1e-3)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = reference.sapa_attention(q32, k32, v32, 3, "softmax", "zeros")
    torch.testing.assert_close(out.float(), ref.detach().to(dtype).float(), **tol)
    g = torch.randn(out.shape, generator=gen).to(dtype)
    grads = torch.autograd.grad(out, (q, k, v), g)
    grads_ref = torch.autograd.grad(ref, (q32, k32, v32), g.float())
    for a, b in zip(grads, grads_ref):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.to(dtype).float(), **tol)


def test_half_precision_primitives_keep_dtype():
    q = torch.randn(1, 3, 8, 8, dtype=torch.bfloat16)
    k = torch.randn(1, 3, 4, 4, dtype=torch.bfloat16)
    s = local_similarity(q, k, 3, border="valid", backend="numba")
    assert s.dtype == torch.bfloat16 and torch.isneginf(s).any()
    out = local_assemble(s.float().softmax(1).bfloat16(), k, 3, backend="numba")
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 8, 8)


def test_channels_last_and_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(6)
    q, k, v = (t.detach() for t in _inputs(gen, 2, 4, 6, ((5, 6), (10, 12)), torch.float32))
    expected = sapa_attention(q, k, v, 5, backend="numba")
    cl = [t.to(memory_format=torch.channels_last) for t in (q, k, v)]
    assert torch.equal(sapa_attention(*cl, 5, backend="numba"), expected)
    # a channel slice is not contiguous either
    wide = torch.cat([v, torch.randn(2, 3, 5, 6, generator=gen)], dim=1)
    assert torch.equal(sapa_attention(q, k, wide[:, :6], 5, backend="numba"), expected)


def test_expanded_gradient():
    # y.sum().backward() hands the backward a stride-0 gradient
    gen = torch.Generator().manual_seed(7)
    q, k, v = _inputs(gen, 1, 4, 6, ((5, 6), (10, 12)), torch.float32)
    sapa_attention(q, k, v, 3, backend="numba").sum().backward()
    dense = _inputs(torch.Generator().manual_seed(7), 1, 4, 6, ((5, 6), (10, 12)), torch.float32)
    out = sapa_attention(*dense, 3, backend="numba")
    grads = torch.autograd.grad(out, dense, torch.ones(out.shape).contiguous())
    for t, g in zip((q, k, v), grads):
        assert torch.equal(t.grad, g)


def test_empty_batch_runs_lean():
    q, k, v = torch.randn(0, 2, 8, 8), torch.randn(0, 2, 4, 4), torch.randn(0, 3, 4, 4)
    assert sapa_attention(q, k, v, 3, backend="numba").shape == (0, 3, 8, 8)


# ---- threads and determinism -----------------------------------------------------------------

def _attention_and_grads(threads, seed=8):
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    q, k, v = _inputs(gen, 2, 8, 12, ((8, 7), (16, 15)), torch.float32)
    out = sapa_attention(q, k, v, 5, backend="numba")
    g = torch.randn(out.shape, generator=gen)
    return (out, *torch.autograd.grad(out, (q, k, v), g))


def test_results_do_not_depend_on_threads_and_repeat_bitwise():
    threads = torch.get_num_threads()
    try:
        one = _attention_and_grads(1)
        for n in (2, 3, 1):
            for a, b in zip(one, _attention_and_grads(n)):
                assert torch.equal(a, b), f"differs with {n} threads"
    finally:
        torch.set_num_threads(threads)


def test_uses_torch_num_threads(monkeypatch):
    workers, jobs, real_pool = [], [], launch._pool

    class CountingPool:
        def __init__(self, n):
            workers.append(n)
            self.pool = real_pool(n)

        def submit(self, fn, *args):
            jobs.append(args[:3])  # (first task, end, stride)
            return self.pool.submit(fn, *args)

    monkeypatch.setattr(launch, "_pool", CountingPool)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        q, k, v = torch.randn(2, 2, 16, 16), torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
        sapa_attention(q, k, v, 3, backend="numba")
        ntasks = launch._plan(2, 8, 16, 16, 3)[1]
    finally:
        torch.set_num_threads(threads)
    assert workers == [3]
    # contiguous jobs, at least one per thread, covering every task exactly once
    jobs.sort()
    assert len(jobs) >= 3 and jobs[0][0] == 0 and all(j[2] == 1 for j in jobs)
    assert all(a[1] == b[0] for a, b in zip(jobs, jobs[1:]))
    assert jobs[-1][1] == ntasks


def test_custom_ops_pass_opcheck_and_compile():
    gen = torch.Generator().manual_seed(10)
    q, k, v = _inputs(gen, 1, 3, 5, ((3, 4), (6, 9)), torch.float32)
    torch.library.opcheck(torch.ops.sapa.attention.default,
                          (q, k, v, 3, "softmax", "valid", "numba"))
    compiled = torch.compile(
        lambda q, k, v: sapa_attention(q, k, v, 3, backend="numba"), fullgraph=True,
        backend="eager")
    torch.testing.assert_close(compiled(q, k, v), sapa_attention(q, k, v, 3, backend="numba"))


# ---- dispatch and fallback -------------------------------------------------------------------

def test_default_for_cpu_tensors_only():
    q = torch.randn(1, 2, 4, 4)
    assert choose_backend(q, q) is cpu
    meta = torch.empty(1, 2, 4, 4, device="meta")
    assert "meta" in cpu.can_run(meta)
    with pytest.raises(RuntimeError, match="cannot run here"):
        choose_backend(meta, backend="numba")


def test_cpu_is_an_alias():
    """``backend="cpu"``, the backend's name before it moved to ``backends/numba``, still works."""
    q, k, v = (t.detach() for t in _inputs(torch.Generator().manual_seed(9), 1, 2, 3,
                                           ((3, 4), (6, 8)), torch.float32))
    assert dispatch.load_backend("cpu") is cpu and "cpu" not in dispatch.list_backends()
    assert dispatch.canonical_backend("cpu") == "numba"
    if JIT_REASON is None:
        assert torch.equal(sapa_attention(q, k, v, 3, backend="cpu"),
                           sapa_attention(q, k, v, 3, backend="numba"))


@pytest.fixture
def fresh_state(monkeypatch):
    """Let a test break the JIT; everything is restored afterwards (the launchers, the
    recorded error, the compiled kernels, which backends were warned about)."""
    monkeypatch.setitem(cpu._state, "error", None)
    monkeypatch.setitem(cpu._state, "launch", cpu._state["launch"])
    monkeypatch.setattr(dispatch, "_warned", set())
    if launch is not None:
        monkeypatch.setattr(launch, "_compiled", set(launch._compiled))
    return monkeypatch


def _inputs32():
    return [t.detach() for t in _inputs(torch.Generator().manual_seed(9), 1, 2, 3,
                                        ((3, 4), (6, 8)), torch.float32)]


def _three_calls():
    q, k, v = _inputs32()
    return [sapa_attention(q, k, v, 3) for _ in range(3)], lean.attention_fwd(
        q, k, v, 3, "softmax", "zeros")[0]


def _fallback_warnings(caught):
    return [w for w in caught if "cannot run here" in str(w.message)]


def test_fallback_when_disabled_warns_once(fresh_state):
    fresh_state.setenv(cpu.DISABLE_ENV, "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs, expected = _three_calls()
        q = torch.randn(1, 2, 4, 4)
        assert choose_backend(q, q) is lean
    fallback = _fallback_warnings(caught)
    assert len(fallback) == 1 and issubclass(fallback[0].category, RuntimeWarning)
    message = str(fallback[0].message)
    # it says why, and does not tell the user to install what is installed
    assert f"{cpu.DISABLE_ENV}=1 is set" in message and "'lean'" in message
    assert "install" not in message
    for out in outs:
        assert torch.equal(out, expected)
    with pytest.raises(RuntimeError, match=f"backend='numba' cannot run here: {cpu.DISABLE_ENV}"):
        sapa_attention(*_inputs32(), 3, backend="numba")


def test_fallback_when_numba_cannot_import(fresh_state):
    fresh_state.setitem(cpu._state, "launch", None)
    fresh_state.setitem(sys.modules, "sapa.ops.backends.numba.launch", None)  # import raises
    fresh_state.delattr(cpu, "launch", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs, expected = _three_calls()
    assert "cannot be imported" in cpu.jit_unavailable()
    fallback = _fallback_warnings(caught)
    assert len(fallback) == 1 and "pip install 'sapa[cpu]'" in str(fallback[0].message)
    for out in outs:
        assert torch.equal(out, expected)
    assert "cannot be imported" in cpu.can_run(torch.zeros(1))


def test_fallback_when_compilation_fails(fresh_state):
    class Broken:
        def __getattr__(self, name):
            def fail(*args):
                raise RuntimeError("LLVM ERROR: simulated")
            return fail

    fresh_state.setattr(launch, "_kernels", Broken())
    fresh_state.setattr(launch, "_compiled", set())
    q, k, v = _inputs32()
    with pytest.raises(RuntimeError, match="numba failed to compile attention_fwd.*simulated"):
        sapa_attention(q, k, v, 3, backend="numba")  # forced: the error, not a fallback
    fresh_state.setitem(cpu._state, "error", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the automatic choice finds out at the first launch, then runs lean instead
        out = sapa_attention(q, k, v, 3)
        again = sapa_attention(q, k, v, 3)
    assert torch.equal(out, lean.attention_fwd(q, k, v, 3, "softmax", "zeros")[0])
    assert torch.equal(again, out)
    assert "failed to compile" in cpu.can_run(q)
    assert len(_fallback_warnings(caught)) == 1


# ---- compile cache ---------------------------------------------------------------------------

_CACHE_PROBE = r"""
import json, torch
from sapa.ops import sapa_attention
from sapa.ops.backends.numba import kernels
q, k, v = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4)
sapa_attention(q, k, v, 3, backend="numba")
stats = kernels.attention_fwd.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def test_compiled_kernels_are_cached_across_processes():
    # compile here if the cache is cold (cache=True writes it); a fresh process then loads it
    q, k, v = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4)
    sapa_attention(q, k, v, 3, backend="numba")
    env = {key: val for key, val in os.environ.items() if key != cpu.DISABLE_ENV}
    proc = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"hits": 1, "misses": 0}
