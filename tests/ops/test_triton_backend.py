"""The Triton backend (``sapa.ops.backends.triton``) against the reference, forward and backward.

On the CPU the kernels run under Triton's interpreter: every test here sets
``TRITON_INTERPRET=1`` for its own duration only (``interpreter`` fixture), so the rest of the
suite never picks the slow interpreter. The interpreter pays per program and per operation, so
the shapes are tiny; they still cover odd output sizes (``2H + 1``), windows larger than the
map, several programs per map, several channel chunks, batches and int64 offsets. Tests that
need a GPU run when CUDA is present and skip, saying so, otherwise. The larger sweep is
``-m slow``.
"""
from __future__ import annotations

import pytest
import torch

from sapa.ops import dispatch, local_assemble, local_similarity, sapa_attention
from sapa.ops.backends import reference
from sapa.ops.backends import triton as tb

pytestmark = pytest.mark.skipif(not tb._HAVE_TRITON, reason="triton is not installed")

NORMALIZERS = ("softmax", "relu", "sigmoid", "softplus", "none")
BORDERS = ("zeros", "valid")
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# (H, W), (H', W')
SIZES = {
    "2H+1": ((4, 5), (9, 11)),
    "x1": ((3, 4), (3, 4)),
    "x3": ((2, 3), (6, 9)),
    "mixed": ((3, 2), (7, 8)),
    "window>map": ((1, 2), (3, 5)),
}

# Errors relative to max(1, max |expected|), expected computed in float64 from the same inputs.
# float64: summation order only.
TOL_F64 = 1e-12
# float32: a few roundings, amplified by |s| ~ 5 through the normalisation and the chain rule
# (measured <= 6e-7, 5 eps). The relu normaliser divides by sum(relu(s)) + 1e-6, small when a
# window holds only small positive scores, which amplifies rounding by max|s| / sum(relu(s))
# (measured 4e-6 here; 8e-5 on the inputs of test_attention.py).
TOL_F32 = {"relu": 2e-4}
TOL_F32_DEFAULT = 1e-5
# float16 / bfloat16 accumulate in float32: the output is off by one rounding; the gradients by a
# few more, because delta = <grad, out> uses the rounded output (measured <= 2.3 ulps of 1.0 over
# ten seeds).
ULPS_HALF = 4


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """Run CPU tensors through Triton's interpreter while a test of this module runs."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def randn(shape, seed, dtype=torch.float64, positive=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    return (t.abs() if positive else t).to(dtype)


def attention_inputs(size="2H+1", b=1, d=3, c=5, dtype=torch.float64, seed=0, positive=False):
    (h, w), (ho, wo) = SIZES[size]
    return (randn((b, d, ho, wo), seed, dtype, positive), randn((b, d, h, w), seed + 1, dtype, positive),
            randn((b, c, h, w), seed + 2, dtype), randn((b, c, ho, wo), seed + 3, dtype))


def run(fn, inputs, grad):
    """``fn(*inputs)`` and the gradients of ``<fn(*inputs), grad>`` for every input."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(grad)
    return (out, *(t.grad for t in leaves))


def expected(fn, inputs, grad):
    """The reference in float64 on the same values."""
    return run(fn, [t.double() for t in inputs], grad.double())


def assert_close(actual, want, tol, what):
    assert actual.shape == want.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(want.shape)}"
    scale = max(1.0, want.abs().max().item())
    err = (actual.double() - want).abs().max().item() if want.numel() else 0.0
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}"


def check(results, wanted, tol, names=("out", "grad_q", "grad_k", "grad_v")):
    for name, a, e in zip(names, results, wanted):
        assert_close(a, e, tol, name)


def small_tiles(monkeypatch):
    """Programs of 64 lanes (2 per 9 x 11 map; 4 low-resolution points per gathered program)
    and channel chunks smaller than d = 3 and C = 5 (partial last chunks)."""
    monkeypatch.setattr(tb, "INTERPRETER_LANES", 64)
    for name, size in (("MAX_BLOCK_D", 2), ("MAX_BLOCK_C", 4), ("GATHER_BLOCK", 2)):
        monkeypatch.setattr(tb, name, size)


def triton_attention(kernel_size, normalizer, border):
    return lambda q, k, v: sapa_attention(q, k, v, kernel_size, normalizer=normalizer,
                                          border=border, backend="triton")


def reference_attention(kernel_size, normalizer, border):
    return lambda q, k, v: reference.sapa_attention(q, k, v, kernel_size, normalizer, border)


# ---- the interpreter and the dispatch --------------------------------------------------------

def test_interpreter_is_honoured():
    """The kernels that ran on CPU tensors are Triton's interpreted functions."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    q, k, v, _ = attention_inputs()
    sapa_attention(q, k, v, 3, backend="triton")
    assert isinstance(tb.kernels(True).attention.attention_fwd, InterpretedFunction)
    # the compiled copy is a separate import (what CUDA tensors use)
    assert isinstance(tb.kernels(False).attention.attention_fwd, JITFunction)


def test_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    q, k, v, _ = attention_inputs()
    assert "TRITON_INTERPRET=1" in tb.can_run(q, k, v)
    with pytest.raises(RuntimeError, match="backend='triton' cannot run here.*TRITON_INTERPRET=1"):
        sapa_attention(q, k, v, 3, backend="triton")
    # and the automatic choice passes it over
    assert dispatch.choose_backend(q, k, v) is not tb


def test_missing_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(tb, "_HAVE_TRITON", False)
    q, k, v, _ = attention_inputs()
    with pytest.raises(RuntimeError, match="triton is not installed"):
        sapa_attention(q, k, v, 3, backend="triton")
    assert dispatch.choose_backend(q, k, v) is not tb


def test_dispatch_order_and_devices():
    assert dispatch.AUTO_ORDER[0] == "triton", "CUDA tensors go to Triton first"
    meta = torch.empty(1, 2, 3, 3, device="meta")
    assert "got devices ['meta']" in tb.can_run(meta, meta)


# ---- sapa_attention: every border x normalizer x dtype ---------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("normalizer", NORMALIZERS)
@pytest.mark.parametrize("border", BORDERS)
def test_attention_matches_reference(border, normalizer, dtype):
    # relu in half precision: keep every score positive, or a window with one small positive
    # score makes the exact gradient ~0 while the rounding of `out` in delta, divided by the
    # tiny sum(relu(s)), is not (an ill-conditioning of the relu normaliser, not of the kernel)
    positive = normalizer == "relu" and dtype in (torch.float16, torch.bfloat16)
    q, k, v, g = attention_inputs(dtype=dtype, positive=positive)
    results = run(triton_attention(3, normalizer, border), (q, k, v), g)
    assert all(t.dtype == dtype for t in results)
    wanted = expected(reference_attention(3, normalizer, border), (q, k, v), g)
    if dtype == torch.float64:
        check(results, wanted, TOL_F64)
    elif dtype == torch.float32:
        check(results, wanted, TOL_F32.get(normalizer, TOL_F32_DEFAULT))
    else:
        check(results, wanted, ULPS_HALF * torch.finfo(dtype).eps)


@pytest.mark.parametrize("size, kernel_size, normalizer, border", [
    ("x1", 9, "softmax", "zeros"), ("x3", 5, "sigmoid", "valid"), ("mixed", 7, "softmax", "zeros"),
    ("window>map", 9, "relu", "valid"), ("window>map", 7, "softmax", "zeros"),
    ("2H+1", 1, "softmax", "valid")])
def test_attention_sizes_and_kernel_sizes(size, kernel_size, normalizer, border):
    q, k, v, g = attention_inputs(size)
    results = run(triton_attention(kernel_size, normalizer, border), (q, k, v), g)
    check(results, expected(reference_attention(kernel_size, normalizer, border), (q, k, v), g),
          TOL_F64)


def test_attention_several_programs_and_channel_chunks(monkeypatch):
    """Blocks smaller than the map and than d, C: masks at every edge, batch offsets."""
    small_tiles(monkeypatch)
    q, k, v, g = attention_inputs(b=2, d=3, c=5)
    results = run(triton_attention(3, "softmax", "valid"), (q, k, v), g)
    check(results, expected(reference_attention(3, "softmax", "valid"), (q, k, v), g), TOL_F64)


def test_attention_int64_offsets(monkeypatch):
    """The int64 offset path (taken for tensors of 2**31 elements or more per sample)."""
    import triton.language as tl

    monkeypatch.setattr(tb, "_index_dtype", lambda *tensors, sizes=(): tl.int64)
    q, k, v, g = attention_inputs(b=2)
    results = run(triton_attention(3, "softmax", "zeros"), (q, k, v), g)
    check(results, expected(reference_attention(3, "softmax", "zeros"), (q, k, v), g), TOL_F64)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_attention_memory_layouts(layout):
    """channels_last and strided inputs are read in place; an expanded gradient (``sum()``)
    too; gradients come back with their input's strides; inputs are left untouched."""
    q, k, v, g = attention_inputs(b=2)

    def lay(t):
        if layout == "channels_last":
            return t.contiguous(memory_format=torch.channels_last)
        big = torch.zeros(t.shape[0], 2 * t.shape[1], t.shape[2], 2 * t.shape[3], dtype=t.dtype)
        big[:, ::2, :, ::2] = t
        return big[:, ::2, :, ::2]

    leaves = [lay(t).requires_grad_() for t in (q, k, v)]
    before = [t.detach().clone() for t in leaves]
    out = sapa_attention(*leaves, 3, border="valid", backend="triton")
    (out * lay(g)).sum().backward()
    wanted = expected(reference_attention(3, "softmax", "valid"), (q, k, v), g)
    check((out, *(t.grad for t in leaves)), wanted, TOL_F64)
    for t, b in zip(leaves, before):
        assert torch.equal(t.detach(), b), "the op modified its input"
    # the protocol's gradients have their input's strides (what the fake promises)
    q, k, v = (t.detach() for t in leaves)
    out, stat = tb.attention_fwd(q, k, v, 3, "softmax", "valid")
    grads = tb.attention_bwd(lay(g), q, k, v, out, stat, 3, "softmax", "valid")
    assert [t.stride() for t in grads] == [torch.empty_like(t).stride() for t in (q, k, v)]


def test_attention_empty_batch():
    q, k, v, _ = attention_inputs(b=0)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    out = sapa_attention(*leaves, 3, backend="triton")
    assert out.shape == (0, 5, 9, 11)
    out.sum().backward()
    assert all(t.grad.shape == t.shape for t in leaves)


def test_attention_backward_is_deterministic():
    """Gathered dk / dv, no atomics: two backward passes are bitwise equal."""
    q, k, v, g = attention_inputs(b=2)
    first = run(triton_attention(3, "softmax", "zeros"), (q, k, v), g)
    second = run(triton_attention(3, "softmax", "zeros"), (q, k, v), g)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("normalizer, border", [("softmax", "valid"), ("softplus", "zeros")])
def test_attention_gradcheck(normalizer, border):
    # fast mode (random projections) keeps the interpreter runs few; -m slow runs the full one
    q, k, v, _ = attention_inputs("mixed", d=2, c=2)
    inputs = [t.requires_grad_() for t in (q, k, v)]
    assert torch.autograd.gradcheck(triton_attention(3, normalizer, border), inputs,
                                    fast_mode=True)


# ---- the primitives ----------------------------------------------------------------------------

def _similarity_grad(scores, seed):
    # a gradient that is 0 where the reference's scores are -inf (outside points, "valid")
    return randn(scores.shape, seed).masked_fill(torch.isinf(scores), 0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("size, kernel_size", [("2H+1", 3), ("window>map", 5)])
@pytest.mark.parametrize("border", BORDERS)
def test_similarity_matches_reference(border, size, kernel_size, dtype):
    q, k, _, _ = attention_inputs(size, dtype=dtype)
    g = _similarity_grad(reference.local_similarity(q.double(), k.double(), kernel_size, border), 7)
    def fn(q, k):
        return local_similarity(q, k, kernel_size, border=border, backend="triton")
    results = run(fn, (q, k), g.to(dtype))
    wanted = expected(lambda q, k: reference.local_similarity(q, k, kernel_size, border), (q, k), g)
    # -inf at the same places ("valid"), then compare the finite values
    assert torch.equal(torch.isinf(results[0]), torch.isinf(wanted[0]))
    results = (results[0].masked_fill(torch.isinf(results[0]), 0), *results[1:])
    wanted = (wanted[0].masked_fill(torch.isinf(wanted[0]), 0), *wanted[1:])
    tol = {torch.float64: TOL_F64, torch.float32: TOL_F32_DEFAULT}.get(dtype)
    check(results, wanted, tol or ULPS_HALF * torch.finfo(dtype).eps,
          names=("scores", "grad_q", "grad_k"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("size, kernel_size", [("2H+1", 3), ("window>map", 5)])
@pytest.mark.parametrize("border", BORDERS)
def test_assemble_matches_reference(border, size, kernel_size, dtype):
    (h, w), (ho, wo) = SIZES[size]
    kernels = randn((1, kernel_size**2, ho, wo), 3, dtype)
    v = randn((1, 5, h, w), 4, dtype)
    g = randn((1, 5, ho, wo), 5, dtype)
    def fn(a, v):
        return local_assemble(a, v, kernel_size, border=border, backend="triton")
    results = run(fn, (kernels, v), g)
    wanted = expected(lambda a, v: reference.local_assemble(a, v, kernel_size, border),
                      (kernels, v), g)
    tol = {torch.float64: TOL_F64, torch.float32: TOL_F32_DEFAULT}.get(dtype)
    check(results, wanted, tol or ULPS_HALF * torch.finfo(dtype).eps,
          names=("out", "grad_kernels", "grad_v"))


def test_primitives_compose_to_attention():
    """softmax(similarity) assembled equals the fused op (both on Triton)."""
    q, k, v, _ = attention_inputs()
    for border in BORDERS:
        scores = local_similarity(q, k, 3, border=border, backend="triton")
        out = local_assemble(torch.softmax(scores, dim=1), v, 3, border=border, backend="triton")
        assert_close(out, sapa_attention(q, k, v, 3, border=border, backend="triton"), TOL_F64,
                     "composed")


def test_primitives_several_programs_and_deterministic(monkeypatch):
    small_tiles(monkeypatch)
    q, k, v, g = attention_inputs()
    gs = _similarity_grad(reference.local_similarity(q, k, 3, "valid"), 9)
    def sim(q, k):
        return local_similarity(q, k, 3, border="valid", backend="triton")
    first = run(sim, (q, k), gs)
    assert all(torch.equal(a, b) for a, b in zip(first, run(sim, (q, k), gs)))
    wanted = expected(lambda q, k: reference.local_similarity(q, k, 3, "valid"), (q, k), gs)
    finite = torch.isfinite(wanted[0])
    assert_close(first[0][finite], wanted[0][finite], TOL_F64, "scores")
    check(first[1:], wanted[1:], TOL_F64, names=("grad_q", "grad_k"))

    kernels = randn((1, 9, 9, 11), 11)
    def asm(a, v):
        return local_assemble(a, v, 3, backend="triton")
    first = run(asm, (kernels, v), g)
    assert all(torch.equal(a, b) for a, b in zip(first, run(asm, (kernels, v), g)))
    check(first, expected(lambda a, v: reference.local_assemble(a, v, 3, "zeros"), (kernels, v), g),
          TOL_F64, names=("out", "grad_kernels", "grad_v"))


def test_primitives_gradcheck():
    q, k, v, _ = attention_inputs("mixed", d=2, c=2)
    (h, w), (ho, wo) = SIZES["mixed"]
    kernels = randn((1, 9, ho, wo), 6)
    for border in BORDERS:
        # "valid" writes -inf at outside points: check the similarity through a finite map
        def sim(q, k):
            return local_similarity(q, k, 3, border=border, backend="triton").clamp(min=-1e3)
        assert torch.autograd.gradcheck(sim, [q.requires_grad_(), k.requires_grad_()],
                                        fast_mode=True)
    def asm(a, v):
        return local_assemble(a, v, 3, backend="triton")
    assert torch.autograd.gradcheck(asm, [kernels.requires_grad_(), v.requires_grad_()],
                                    fast_mode=True)


# ---- the module --------------------------------------------------------------------------------

def test_sapa_module_on_triton_matches_reference():
    from sapa import SAPA

    torch.manual_seed(0)
    x, guide = torch.randn(2, 6, 3, 4), torch.randn(2, 5, 7, 9)
    fast = SAPA(6, 5, variant="G", kernel_size=3, embed_dim=4, backend="triton").double()
    slow = SAPA(6, 5, variant="G", kernel_size=3, embed_dim=4, backend="reference").double()
    slow.load_state_dict(fast.state_dict())
    x, guide = x.double(), guide.double()
    outs = []
    for m in (fast, slow):
        xi = x.clone().requires_grad_()
        out = m(xi, guide)
        out.square().sum().backward()
        outs.append((out, xi.grad, *(p.grad for p in m.parameters())))
    for a, b in zip(*outs):
        assert_close(a, b, TOL_F64, "module")


# ---- GPU ---------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("normalizer", ["softmax", "relu", "sigmoid", "none"])
@pytest.mark.parametrize("border", BORDERS)
def test_cuda_attention_matches_reference(monkeypatch, border, normalizer, dtype):
    monkeypatch.delenv("TRITON_INTERPRET")  # compiled kernels
    g = torch.Generator(device="cuda").manual_seed(0)
    b, d, c, (h, w), (ho, wo) = 2, 32, 96, (17, 20), (35, 40)  # d, C > one chunk; 2H+1 rows
    positive = normalizer == "relu" and dtype != torch.float32
    q, k = (torch.randn(s, generator=g, device="cuda") for s in ((b, d, ho, wo), (b, d, h, w)))
    if positive:
        q, k = q.abs(), k.abs()
    q, k = q / d**0.5, k
    v, grad = (torch.randn(s, generator=g, device="cuda") for s in ((b, c, h, w), (b, c, ho, wo)))
    q, k, v, grad = (t.to(dtype) for t in (q, k, v, grad))
    for kernel_size in (3, 5, 7):
        results = run(triton_attention(kernel_size, normalizer, border), (q, k, v), grad)
        wanted = expected(reference_attention(kernel_size, normalizer, border), (q, k, v), grad)
        tol = (TOL_F32.get(normalizer, TOL_F32_DEFAULT) if dtype == torch.float32
               else ULPS_HALF * torch.finfo(dtype).eps)
        check(results, wanted, tol)


@cuda
def test_cuda_deterministic_and_no_window_tensor(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    g = torch.Generator(device="cuda").manual_seed(0)
    b, d, c, (h, w), (ho, wo), kernel_size = 4, 32, 64, (32, 32), (64, 64), 5
    q, k, v, grad = (torch.randn(s, generator=g, device="cuda", dtype=torch.bfloat16)
                     for s in ((b, d, ho, wo), (b, d, h, w), (b, c, h, w), (b, c, ho, wo)))
    fn = triton_attention(kernel_size, "softmax", "zeros")
    first, second = run(fn, (q, k, v), grad), run(fn, (q, k, v), grad)
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    # the forward allocates its output and one float per output point, nothing K*K-sized
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        out = fn(q, k, v)
    torch.cuda.synchronize()
    window = b * kernel_size**2 * ho * wo * 2  # one bf16 K*K x H' x W' tensor
    extra = torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()
    assert extra < window / 4, f"forward used {extra} bytes besides its output"


# ---- slow: the larger sweep ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7, 9])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("border", BORDERS)
def test_slow_sweep(border, size, kernel_size):
    q, k, v, g = attention_inputs(size, b=2)
    for normalizer in NORMALIZERS:
        results = run(triton_attention(kernel_size, normalizer, border), (q, k, v), g)
        check(results, expected(reference_attention(kernel_size, normalizer, border), (q, k, v), g),
              TOL_F64)


@pytest.mark.slow
@pytest.mark.parametrize("normalizer", NORMALIZERS)
@pytest.mark.parametrize("border", BORDERS)
def test_slow_full_gradcheck(border, normalizer):
    q, k, v, _ = attention_inputs("window>map", d=2, c=2)
    inputs = [t.requires_grad_() for t in (q, k, v)]
    assert torch.autograd.gradcheck(triton_attention(3, normalizer, border), inputs)
