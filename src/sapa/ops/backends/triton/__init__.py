"""The fused Triton backend: launchers of ``kernels/`` behind ``sapa.ops.backends.Backend``.

It implements the window family of the protocol (``torch.ops.sapa.*``):

- ``attention_fwd`` runs one fused kernel (scores, online softmax or running sums, assembly)
  and keeps only the per-point statistic of ``sapa.ops._normalizers``; no ``K*K x H' x W'``
  tensor is ever written.
- ``attention_bwd`` computes ``delta = <grad, out>`` per point, then ``dq`` per block of output
  points and ``dk``, ``dv`` per block of low-resolution points, each *gathering* over the
  output points whose windows hold it. No atomics: two backward passes are bitwise equal.
- ``similarity_*`` and ``assemble_*``: the two primitives, with the same gathered backward.

Accumulation is float32 for float16 / bfloat16 / float32 inputs (float64 for float64); results
come back in the inputs' dtype. Inputs may have any strides (NCHW, channels_last, expanded
gradients); outputs are contiguous NCHW, gradients take the strides of their input.

Where it runs (``can_run``): CUDA tensors when ``triton`` is installed; CPU tensors only under
Triton's interpreter, ``TRITON_INTERPRET=1``, and only when forced (slow: that is how CI tests
the kernels). Block sizes are fixed heuristics, not autotuned.

A GPU it cannot serve. The first launch of each launcher on each device and dtype is guarded:
if it fails (Triton cannot compile for this GPU or dtype, the kernels cannot be imported, the
driver refuses the launch), the failure is recorded, ``can_run`` refuses that device and dtype
from then on, and ``BackendUnavailable`` is raised: the automatic choice then runs ``lean``
with one warning, a forced ``backend="triton"`` raises. Later failures are errors like any
other. Without ``triton`` installed, CUDA tensors go to ``lean`` (one warning) as well.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading

import torch

from ..._dtypes import compute_dtype
from ..._geometry import EPS
from ..._normalizers import CODES
from .. import BackendUnavailable, Unavailable

NAME = "triton"
FAMILIES = ("window",)

_HAVE_TRITON = importlib.util.find_spec("triton") is not None
_PKG = __name__ + ".kernels"

# Tiles on the GPU. Query-side kernels: BLOCK_P output points x chunks of up to MAX_BLOCK_D /
# MAX_BLOCK_C channels per program; gathered kernels: GATHER_LANES lanes (low-resolution points
# x column pairs) x chunks of up to GATHER_BLOCK channels. Chosen from the register counts on
# sm_90 (``python benchmarks/gpu.py --resources``: no spills but 8 bytes in a few attention_fwd
# launches; docs/benchmarks.md); not yet timed on a GPU.
BLOCK_P = 32
MAX_BLOCK_D = 32
MAX_BLOCK_C = 64
GATHER_LANES = 64
GATHER_BLOCK = 32
NUM_WARPS = 8
# The interpreter pays per program and per operation, hardly per lane: it takes whole maps
# (up to this many lanes) in one program.
INTERPRETER_LANES = 2048

MAX_BATCH = 65535  # one program row per batch sample on grid axis 2

# (device, dtype) -> why the kernels failed there; (launcher, device, dtype) launched once
_failed: dict = {}
_launched: set = set()


def _device_reason(tensors, automatic: bool) -> str | None:
    """Why ``tensors`` are not this backend's to run (device, batch size), or ``None``: CUDA
    tensors, or CPU tensors under the interpreter when the backend is forced."""
    if tensors and tensors[0].dim() > 0 and tensors[0].shape[0] > MAX_BATCH:
        return f"batch size {tensors[0].shape[0]} > {MAX_BATCH} (the grid's third dimension)"
    kinds = {t.device.type for t in tensors}
    if kinds == {"cuda"}:
        return None
    if kinds != {"cpu"}:
        return ("Triton runs CUDA tensors (or CPU ones under TRITON_INTERPRET=1), "
                f"got devices {sorted(kinds)}")
    if automatic:  # never pick the interpreter (for tests) over the CPU backends unasked
        return "CPU tensors run Triton's interpreter only when backend='triton' is forced"
    if not _HAVE_TRITON:
        return "triton is not installed (pip install triton, or sapa[triton])"
    if os.environ.get("TRITON_INTERPRET") != "1":
        return ("CPU tensors run the Triton kernels only under Triton's interpreter: "
                "set TRITON_INTERPRET=1 (slow; meant for tests)")
    return None


def can_run(*tensors, automatic: bool = False) -> str | None:
    reason = _device_reason(tensors, automatic)
    if reason is not None:
        return reason
    if not _HAVE_TRITON:  # CUDA tensors: they are ours, but we cannot run them
        return Unavailable("triton is not installed (pip install triton, or sapa[triton])")
    failed = _failed.get((tensors[0].device, tensors[0].dtype))
    return None if failed is None else Unavailable(failed)


@contextlib.contextmanager
def _first_launch(name: str, t: torch.Tensor):
    """Guard the first launch of launcher ``name`` on ``t``'s device and dtype (see the module
    docstring): an error there is recorded and raised as ``BackendUnavailable``."""
    key = (name, t.device, t.dtype)
    if key in _launched:
        yield
        return
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except Exception as e:
        reason = (f"its first launch of {name} on {t.device} for {t.dtype} failed "
                  f"({type(e).__name__}: {e})")
        _failed[(t.device, t.dtype)] = reason
        raise BackendUnavailable(NAME, reason) from e
    _launched.add(key)


# ---- the kernels, one copy per mode ----------------------------------------------------------

_KERNELS: dict = {}
_LOCK = threading.Lock()


def _interpreted(t: torch.Tensor) -> bool:
    """CPU tensors run interpreted (``can_run`` asked for ``TRITON_INTERPRET=1``); CUDA tensors
    compiled, unless ``TRITON_INTERPRET=1`` asks to interpret everything, as in Triton."""
    return t.device.type == "cpu" or os.environ.get("TRITON_INTERPRET") == "1"


def kernels(interpret: bool):
    """The ``kernels`` package with every ``@triton.jit`` function interpreted
    (``interpret=True``) or compiled.

    ``triton.jit`` picks its mode from ``TRITON_INTERPRET`` once, when the decorated module is
    imported, and a kernel calls only helpers of its own mode. So each mode gets its own copy
    of the package, imported under a private name with the variable set accordingly; a process
    can then run CPU tensors interpreted and CUDA tensors compiled (the GPU test run does).
    """
    mod = _KERNELS.get(interpret)
    if mod is None:
        with _LOCK:
            mod = _KERNELS.get(interpret)
            if mod is None:
                mod = _KERNELS[interpret] = _import_copy(interpret)
    return mod


def _import_copy(interpret: bool):
    try:
        import triton  # noqa: F401
    except ImportError as e:  # installed (find_spec) but broken
        raise RuntimeError(f"backend 'triton' cannot import triton: {e}") from e
    name = f"{_PKG}_{'interpreted' if interpret else 'compiled'}"
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(os.path.dirname(__file__), "kernels", "__init__.py"),
        submodule_search_locations=[os.path.join(os.path.dirname(__file__), "kernels")])
    module = importlib.util.module_from_spec(spec)
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
    return module


# ---- launch helpers --------------------------------------------------------------------------

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def _chunk(n: int, cap: int) -> int:
    """Power-of-two chunk of ``n`` channels, at most ``cap``."""
    return min(cap, _next_pow2(n))


def _acc(dtype):
    import triton.language as tl

    return tl.float64 if compute_dtype(dtype) == torch.float64 else tl.float32


def _index_dtype(*tensors, sizes=()):
    """int32 offsets within a batch sample unless some tensor (or product of sizes the kernels
    form, such as ``H * H'``) reaches 2**31."""
    import triton.language as tl

    extents = [sum((n - 1) * abs(s) for n, s in zip(t.shape[1:], t.stride()[1:])) for t in tensors]
    return tl.int64 if max([*extents, *sizes]) >= 2**31 - 1 else tl.int32


class _Tiles:
    """Tile sizes of one call: ``block_p`` output points per query-side program, ``block_l``
    low-resolution points x ``nc`` column pairs per gathered program (``_common.gather_tile``),
    channel chunks, and the offset dtype."""

    def __init__(self, interpret: bool, kernel_size: int, low, out, channels, tensors):
        (h, w), (ho, wo), (d, c) = low, out, channels
        h, w = max(h, 1), max(w, 1)  # an empty low-resolution map: nothing to gather
        self.rh, self.rw = _cdiv(ho, h), _cdiv(wo, w)  # output rows / cols per low-res row / col
        self.nc = _next_pow2(kernel_size * self.rw)
        if interpret:
            self.block_p = min(_next_pow2(ho * wo), INTERPRETER_LANES)
            self.block_l = max(1, min(_next_pow2(h * w), INTERPRETER_LANES // self.nc))
        else:
            self.block_p = BLOCK_P
            self.block_l = max(1, GATHER_LANES // self.nc)
        self.n_p = _cdiv(ho * wo, self.block_p)
        self.n_l = _cdiv(h * w, self.block_l)
        self.block_d, self.block_c = _chunk(d, MAX_BLOCK_D), _chunk(c, MAX_BLOCK_C)
        self.gather_d, self.gather_c = _chunk(d, GATHER_BLOCK), _chunk(c, GATHER_BLOCK)
        # offsets of every tensor (inputs, outputs), and the products the kernels form
        self.idx = _index_dtype(*tensors, sizes=(ho * h, wo * w, self.n_p * self.block_p,
                                                 self.n_l * self.block_l * self.nc))


# ---- attention -------------------------------------------------------------------------------

def attention_fwd(q, k, v, kernel_size, normalizer, border):
    """Returns ``(out, stat)``: ``B x C x H' x W'`` in the input dtype, ``B x H' x W'``."""
    b, d, ho, wo = q.shape
    c, h, w = v.shape[1:]
    out = v.new_empty((b, c, ho, wo))
    stat = q.new_empty((b, ho, wo), dtype=compute_dtype(q.dtype))
    if stat.numel() == 0:
        return out, stat
    interpret = _interpreted(q)
    t = _Tiles(interpret, kernel_size, (h, w), (ho, wo), (d, c), (q, k, v, out))
    with _first_launch("attention_fwd", q):
        # at least one C block even for C = 0: it writes stat
        kernels(interpret).attention.attention_fwd[(t.n_p, max(1, _cdiv(c, t.block_c)), b)](
            q, k, v, out, stat, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            d, c, h, w, ho, wo,
            K=kernel_size, NORM=CODES[normalizer], VALID=border == "valid", EPS=EPS,
            BLOCK_P=t.block_p, BLOCK_D=t.block_d, BLOCK_C=t.block_c,
            ACC=_acc(q.dtype), IDX=t.idx, num_warps=NUM_WARPS)
    return out, stat


def attention_bwd(grad, q, k, v, out, stat, kernel_size, normalizer, border):
    """Returns ``(grad_q, grad_k, grad_v)``; recomputes every kernel weight from ``stat``.
    The border enters through ``stat`` (outside points hold ``k = v = 0``) and, for ``dq``,
    whether outside points count."""
    b, d, ho, wo = q.shape
    c, h, w = v.shape[1:]
    gq, gk, gv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if stat.numel() == 0:
        return gq.zero_(), gk.zero_(), gv.zero_()
    interpret = _interpreted(q)
    t = _Tiles(interpret, kernel_size, (h, w), (ho, wo), (d, c), (grad, q, k, v, out, gq, gk, gv))
    stat = stat.contiguous()
    acc = _acc(q.dtype)
    common = dict(K=kernel_size, NORM=CODES[normalizer], ACC=acc, IDX=t.idx,
                  num_warps=NUM_WARPS)
    gather = dict(BLOCK_L=t.block_l, NC=t.nc, BLOCK_D=t.gather_d, BLOCK_C=t.gather_c, **common)

    delta = torch.empty_like(stat)
    with _first_launch("attention_bwd", q):
        kern = kernels(interpret).attention
        kern.attention_delta[(t.n_p, b)](
            grad, out, delta, *grad.stride(), *out.stride(), c, ho, wo,
            BLOCK_P=t.block_p, BLOCK_C=t.block_c, ACC=acc, IDX=t.idx, num_warps=NUM_WARPS)
        if d:
            kern.attention_bwd_q[(t.n_p, _cdiv(d, t.block_d), b)](
                grad, q, k, v, stat, delta, gq,
                *grad.stride(), *q.stride(), *k.stride(), *v.stride(), *gq.stride(),
                d, c, h, w, ho, wo, VALID=border == "valid", BLOCK_P=t.block_p,
                BLOCK_D=t.block_d, BLOCK_C=t.block_c, **common)
            kern.attention_bwd_k[(t.n_l, _cdiv(d, t.gather_d), b)](
                grad, q, k, v, stat, delta, gk,
                *grad.stride(), *q.stride(), *k.stride(), *v.stride(), *gk.stride(),
                d, c, h, w, ho, wo, t.rh, t.rw, **gather)
        if c:
            kern.attention_bwd_v[(t.n_l, _cdiv(c, t.gather_c), b)](
                grad, q, k, stat, gv,
                *grad.stride(), *q.stride(), *k.stride(), *gv.stride(),
                d, c, h, w, ho, wo, t.rh, t.rw, **gather)
    return gq, gk, gv


# ---- similarity ------------------------------------------------------------------------------

def similarity_fwd(q, k, kernel_size, border):
    b, d, ho, wo = q.shape
    h, w = k.shape[2:]
    scores = q.new_empty((b, kernel_size * kernel_size, ho, wo))
    if scores.numel() == 0:
        return scores
    interpret = _interpreted(q)
    t = _Tiles(interpret, kernel_size, (h, w), (ho, wo), (d, 0), (q, k, scores))
    with _first_launch("similarity_fwd", q):
        kernels(interpret).similarity.similarity_fwd[(t.n_p, b)](
            q, k, scores, *q.stride(), *k.stride(), *scores.stride(), d, h, w, ho, wo,
            K=kernel_size, VALID=border == "valid", BLOCK_P=t.block_p, BLOCK_D=t.block_d,
            ACC=_acc(q.dtype), IDX=t.idx, num_warps=NUM_WARPS)
    return scores


def similarity_bwd(grad, q, k, kernel_size, border):
    """Entries of ``grad`` at window points outside the map: ``"zeros"`` multiplies them by
    ``k = 0``, ``"valid"`` ignores them (the reference's gradients)."""
    b, d, ho, wo = q.shape
    h, w = k.shape[2:]
    gq, gk = torch.empty_like(q), torch.empty_like(k)
    if b * ho * wo == 0 or d == 0:
        return gq.zero_(), gk.zero_()
    interpret = _interpreted(q)
    t = _Tiles(interpret, kernel_size, (h, w), (ho, wo), (d, 0), (grad, q, k, gq, gk))
    common = dict(K=kernel_size, ACC=_acc(q.dtype), IDX=t.idx, num_warps=NUM_WARPS)
    with _first_launch("similarity_bwd", q):
        kern = kernels(interpret).similarity
        kern.similarity_bwd_q[(t.n_p, _cdiv(d, t.block_d), b)](
            grad, k, gq, *grad.stride(), *k.stride(), *gq.stride(), d, h, w, ho, wo,
            VALID=border == "valid", BLOCK_P=t.block_p, BLOCK_D=t.block_d, **common)
        kern.similarity_bwd_k[(t.n_l, _cdiv(d, t.gather_d), b)](
            grad, q, gk, *grad.stride(), *q.stride(), *gk.stride(), d, h, w, ho, wo, t.rh, t.rw,
            BLOCK_L=t.block_l, NC=t.nc, BLOCK_D=t.gather_d, **common)
    return gq, gk


# ---- assemble --------------------------------------------------------------------------------

def assemble_fwd(kernels_, v, kernel_size, border):
    """Outside points hold ``v = 0``: both borders give the same sum."""
    b, _, ho, wo = kernels_.shape
    c, h, w = v.shape[1:]
    out = v.new_empty((b, c, ho, wo))
    if out.numel() == 0:
        return out
    interpret = _interpreted(v)
    t = _Tiles(interpret, kernel_size, (h, w), (ho, wo), (0, c), (kernels_, v, out))
    with _first_launch("assemble_fwd", v):
        kernels(interpret).assemble.assemble_fwd[(t.n_p, _cdiv(c, t.block_c), b)](
            kernels_, v, out, *kernels_.stride(), *v.stride(), *out.stride(), c, h, w, ho, wo,
            K=kernel_size, BLOCK_P=t.block_p, BLOCK_C=t.block_c, ACC=_acc(v.dtype), IDX=t.idx,
            num_warps=NUM_WARPS)
    return out


def assemble_bwd(grad, kernels_, v, kernel_size, border):
    b, _, ho, wo = kernels_.shape
    c, h, w = v.shape[1:]
    gkern, gv = torch.empty_like(kernels_), torch.empty_like(v)
    if b * ho * wo == 0:
        return gkern.zero_(), gv.zero_()
    interpret = _interpreted(v)
    t = _Tiles(interpret, kernel_size, (h, w), (ho, wo), (0, c), (grad, kernels_, v, gkern, gv))
    common = dict(K=kernel_size, ACC=_acc(v.dtype), IDX=t.idx, num_warps=NUM_WARPS)
    with _first_launch("assemble_bwd", v):
        kern = kernels(interpret).assemble
        kern.assemble_bwd_kernels[(t.n_p, b)](
            grad, v, gkern, *grad.stride(), *v.stride(), *gkern.stride(), c, h, w, ho, wo,
            BLOCK_P=t.block_p, BLOCK_C=t.block_c, **common)
        if c:
            kern.assemble_bwd_v[(t.n_l, _cdiv(c, t.gather_c), b)](
                grad, kernels_, gv, *grad.stride(), *kernels_.stride(), *gv.stride(),
                c, h, w, ho, wo, t.rh, t.rw, BLOCK_L=t.block_l, NC=t.nc, BLOCK_C=t.gather_c,
                **common)
    return gkern, gv
