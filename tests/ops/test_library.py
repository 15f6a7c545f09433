"""``torch.ops.sapa.*`` (``sapa.ops._library``): opcheck, torch.compile, torch.export, FLOPs.

Every custom op is checked with ``torch.library.opcheck`` (schema, autograd registration, fake
implementation against the real one -- strides included -- and AOT dispatch) on NCHW and
channels_last inputs, for every backend that runs through them (``lean``, ``numba``, ``triton``
under ``TRITON_INTERPRET=1`` on batch-1 tensors; SAPA-D's op on ``lean``) and for ``"auto"``,
the automatic choice made when the op runs. A SAPA module and the functional ops compile with
``fullgraph=True`` on every backend, the reference included, and export with ``torch.export``;
an exported program chooses its backend where it runs.

The compile tests use the ``aot_eager`` backend (dynamo with fullgraph, fake tensors and the
registered autograd: everything but inductor's code generation, which takes ~10 s per graph on
these machines); two inductor compiles run in the default suite, the others with ``-m slow``.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sapa import SAPA
from sapa.ops import list_backends, local_assemble, local_similarity, sapa_attention
from sapa.ops.dispatch import load_backend

OPS_BACKENDS = [name for name in list_backends() if name != "reference"] + ["auto"]
LAYOUT_CASES = [(b, layout) for b in OPS_BACKENDS for layout in ("nchw", "channels_last")]
ALL_BACKENDS = list_backends()
K = 3


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """Let the Triton backend run CPU tensors (interpreted) while a test of this module runs;
    the other backends are forced by name, so the automatic choice is never involved."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def require(backend, *tensors):
    if backend == "auto":
        return
    reason = load_backend(backend).can_run(*tensors)
    if reason is not None:
        pytest.skip(f"backend {backend!r} cannot run here: {reason}")


def tensors(layout, requires_grad=False, dtype=torch.float64, batch=2):
    """Small ``q, k, v, grad`` (2x3 -> 5x7: a 2H+1 size), in NCHW or channels_last."""
    g = torch.Generator().manual_seed(0)
    shapes = ((batch, 3, 5, 7), (batch, 3, 2, 3), (batch, 4, 2, 3), (batch, 4, 5, 7))
    out = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    if layout == "channels_last":
        out = [t.contiguous(memory_format=torch.channels_last) for t in out]
    return [t.requires_grad_(requires_grad) for t in out[:3]] + [out[3]]


def opcheck(op, args):
    result = torch.library.opcheck(op, args, raise_exception=False)
    failures = {name: r for name, r in result.items() if r != "SUCCESS"}
    assert not failures, failures


# ---- opcheck -----------------------------------------------------------------------------------

def _batch(backend):
    return 1 if backend == "triton" else 2  # the interpreter is slow


@pytest.mark.parametrize("backend, layout", LAYOUT_CASES)
def test_opcheck_attention(backend, layout):
    q, k, v, grad = tensors(layout, requires_grad=True, batch=_batch(backend))
    require(backend, q, k, v)
    opcheck(torch.ops.sapa.attention.default, (q, k, v, K, "softmax", "valid", backend))
    out, stat = torch.ops.sapa.attention(q, k, v, K, "sigmoid", "zeros", backend)
    detached = [t.detach() for t in (q, k, v, out, stat)]
    opcheck(torch.ops.sapa.attention_backward.default,
            (grad, *detached, K, "sigmoid", "zeros", backend))


@pytest.mark.parametrize("backend, layout", LAYOUT_CASES)
def test_opcheck_similarity(backend, layout):
    q, k, _, _ = tensors(layout, requires_grad=True, batch=_batch(backend))
    require(backend, q, k)
    opcheck(torch.ops.sapa.similarity.default, (q, k, K, "zeros", backend))
    grad = torch.randn(q.shape[0], K * K, 5, 7, dtype=q.dtype)
    if layout == "channels_last":
        grad = grad.contiguous(memory_format=torch.channels_last)
    opcheck(torch.ops.sapa.similarity_backward.default,
            (grad, q.detach(), k.detach(), K, "valid", backend))


@pytest.mark.parametrize("backend, layout", LAYOUT_CASES)
def test_opcheck_assemble(backend, layout):
    _, _, v, grad = tensors(layout, requires_grad=True, batch=_batch(backend))
    kernels = torch.randn(v.shape[0], K * K, 5, 7, dtype=v.dtype)
    if layout == "channels_last":
        kernels = kernels.contiguous(memory_format=torch.channels_last)
    kernels.requires_grad_()
    require(backend, kernels, v)
    opcheck(torch.ops.sapa.assemble.default, (kernels, v, K, "zeros", backend))
    opcheck(torch.ops.sapa.assemble_backward.default,
            (grad, kernels.detach(), v.detach(), K, "zeros", backend))


@pytest.mark.parametrize("backend", ["lean", "auto"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_opcheck_sampled_attention(backend, layout):
    g = torch.Generator().manual_seed(3)
    q, k, v, grad = (torch.randn(s, generator=g, dtype=torch.float64) for s in
                     ((2, 4, 5, 7), (2, 4, 2, 3), (2, 6, 2, 3), (2, 6, 5, 7)))
    offsets = torch.randn(2, 2 * 2 * 3, 5, 7, generator=g, dtype=torch.float64)
    inputs = [q, k, v, offsets]
    if layout == "channels_last":
        inputs = [t.contiguous(memory_format=torch.channels_last) for t in inputs]
    inputs = [t.requires_grad_() for t in inputs]
    opcheck(torch.ops.sapa.sampled_attention.default, (*inputs, 2, 3, "softmax", backend))
    out, stat = torch.ops.sapa.sampled_attention(*inputs, 2, 3, "relu", backend)
    detached = [t.detach() for t in (*inputs, out, stat)]
    opcheck(torch.ops.sapa.sampled_attention_backward.default,
            (grad, *detached, 2, 3, "relu", backend))


# ---- torch.compile -----------------------------------------------------------------------------

def _module(backend):
    torch.manual_seed(0)
    # variant G: every branch of the query (projections, gate, nearest upsampling)
    return SAPA(6, 5, variant="G", kernel_size=K, embed_dim=4, backend=backend).double()


def _module_inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64),
            torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64))


def _forward_backward(fn, *inputs):
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.square().sum().backward()
    return out.detach(), [t.grad for t in leaves]


def _compare_compiled(module, compiled, inputs):
    out, grads = _forward_backward(module, *inputs)
    params = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    out_c, grads_c = _forward_backward(compiled, *inputs)
    torch.testing.assert_close(out_c, out)
    for a, b in zip(grads_c + [p.grad for p in module.parameters()], grads + params):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_compile_module_fullgraph(backend):
    torch._dynamo.reset()
    module = _module(backend)
    x, guide = _module_inputs()
    require(backend, x, guide)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    _compare_compiled(module, compiled, (x, guide))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_compile_functional_fullgraph(backend):
    torch._dynamo.reset()
    q, k, v, _ = tensors("nchw")
    require(backend, q, k, v)

    def fn(q, k, v):
        scores = local_similarity(q, k, K, border="valid", backend=backend)
        composed = local_assemble(torch.softmax(scores, dim=1), v, K, backend=backend)
        fused = sapa_attention(q, k, v, K, normalizer="softplus", backend=backend)
        return composed + fused

    out, grads = _forward_backward(fn, q, k, v)
    out_c, grads_c = _forward_backward(torch.compile(fn, fullgraph=True, backend="aot_eager"),
                                       q, k, v)
    torch.testing.assert_close(out_c, out)
    for a, b in zip(grads_c, grads):
        torch.testing.assert_close(a, b)


def _inductor(backend, variant="B"):
    torch._dynamo.reset()
    module = SAPA(8, variant=variant, kernel_size=K, embed_dim=4, backend=backend)
    g = torch.Generator().manual_seed(2)
    x, guide = torch.randn(1, 8, 3, 4, generator=g), torch.randn(1, 8, 7, 9, generator=g)
    require(backend, x, guide)
    _compare_compiled(module, torch.compile(module, fullgraph=True), (x, guide))


def test_compile_module_inductor_triton():
    """The default compiler around the Triton launch (its stride assertions check the fakes)."""
    _inductor("triton")


def test_compile_module_inductor_index_regression():
    """torch 2.13's CPU inductor miscompiled the backward of ``index_select`` in SAPA-G's graph
    (its nearest upsampling; the reference's windows): wrong gradients, then heap corruption.
    Both index with advanced indexing now; this compiles that graph with the default compiler
    and compares forward and gradients with eager. The miscompiled kernel failed only when run
    with more than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _inductor("reference", variant="G")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["B", "G"])
@pytest.mark.parametrize("backend", [b for b in ALL_BACKENDS if b != "triton"])
def test_slow_compile_module_inductor(backend, variant):
    _inductor(backend, variant)


# ---- torch.export ------------------------------------------------------------------------------

def _sapa_nodes(exported):
    return [n for n in exported.graph.nodes if n.op == "call_function"
            and str(n.target).startswith("sapa.")]


@pytest.mark.parametrize("backend", [None, "lean", "triton"])
def test_export_module(backend):
    module = _module(backend)
    x, guide = _module_inputs()
    require(backend or "auto", x, guide)
    exported = torch.export.export(module, (x, guide))
    nodes = _sapa_nodes(exported)
    assert [str(n.target) for n in nodes] == ["sapa.attention.default"]
    # the backend the program will use is in its graph: the forced name, or "auto"
    assert nodes[0].args[-1] == (backend or "auto")
    torch.testing.assert_close(exported.module()(x, guide), module(x, guide))


def test_exported_program_chooses_its_backend_where_it_runs(monkeypatch, caplog):
    """Exported on the CPU with the automatic choice, the program holds no CPU backend: run
    where the numba backend cannot serve the tensors (as on a GPU, simulated here by numba
    refusing them), it runs another backend, chosen then."""
    from sapa.ops.backends import numba

    module = _module(None).float()
    x, guide = (t.float() for t in _module_inputs())
    exported = torch.export.export(module, (x, guide))
    assert all("numba" not in str(a) and "cpu" not in str(a)
               for n in _sapa_nodes(exported) for a in n.args if isinstance(a, str))
    want = module(x, guide)
    monkeypatch.setattr(numba, "can_run", lambda *t, automatic=False: "a tensor is on cuda:0")
    with caplog.at_level("DEBUG", logger="sapa.dispatch"):
        got = exported.module()(x, guide)
    assert "backend numba passed over: a tensor is on cuda:0" in caplog.text
    assert "backend lean (automatic)" in caplog.text
    torch.testing.assert_close(got, want)


def test_forced_backend_refuses_tensors_it_cannot_run(monkeypatch):
    """A program exported with a forced backend records it and refuses, with the reason,
    tensors that backend cannot run (here numba, refusing as it refuses CUDA tensors)."""
    from sapa.ops.backends import numba

    module = _module("numba").float()
    x, guide = (t.float() for t in _module_inputs())
    exported = torch.export.export(module, (x, guide))
    assert _sapa_nodes(exported)[0].args[-1] == "numba"
    monkeypatch.setattr(numba, "can_run", lambda *t, automatic=False: "a tensor is on cuda:0")
    with pytest.raises(RuntimeError, match="backend='numba' cannot run here: a tensor is on"):
        exported.module()(x, guide)


# ---- FLOPs -------------------------------------------------------------------------------------

def test_flop_counter_sees_registered_flops():
    q, k, v, _ = tensors("nchw", requires_grad=True)
    b, d, ho, wo = q.shape
    c = v.shape[1]
    points = b * ho * wo * K * K
    with FlopCounterMode(display=False) as counter:
        out = sapa_attention(q, k, v, K, backend="lean")
    assert counter.get_total_flops() == 2 * points * (d + c)
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    assert counter.get_total_flops() == 2 * points * (3 * d + 2 * c)

    with FlopCounterMode(display=False) as counter:
        scores = local_similarity(q, k, K, backend="lean")
        local_assemble(scores, v, K, backend="lean")
    assert counter.get_total_flops() == 2 * points * d + 2 * points * c
    counts = counter.get_flop_counts()["Global"]
    assert {str(op) for op in counts} >= {"sapa.similarity", "sapa.assemble"}
