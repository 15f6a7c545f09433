"""The ``cpu`` backend: numba-compiled kernels for CPU tensors, the default on the CPU.

It implements the forward/backward protocol of ``sapa.ops._library`` (like ``lean``), with
kernels in ``sapa.ops.backends.numba.kernels`` that run on NCHW numpy views of the tensors, in
``torch.get_num_threads()`` threads, without a ``K*K x C x H' x W'`` intermediate:

- forward: one pass per block of output rows (scores, normalisation, assembly); only the
  per-point ``stat`` is kept;
- backward: a pass over output rows recomputes the kernels and gives ``dL/dq`` plus the
  kernels and score gradients (``B x K*K x H' x W'``, as large as ``K*K`` channels of the
  output); a pass over low-resolution rows *gathers* ``dL/dk`` and ``dL/dv`` from them. No
  atomics: results do not depend on the number of threads.

Conversions at the boundary (each costs a copy; nothing else is converted):

- non-contiguous inputs (``channels_last``, slices, expanded gradients) are made contiguous
  NCHW;
- ``float16`` / ``bfloat16`` are computed in ``float32`` (numpy has no ``bfloat16``) and the
  results cast back; ``stat`` stays ``float32``.

JIT. Kernels compile on first use for each dtype (``float32``, ``float64``) and are cached on
disk by numba (``__pycache__`` next to ``kernels.py``, or ``NUMBA_CACHE_DIR``), so later
processes load them in well under a second. Where numba is missing or cannot compile, or
``SAPA_DISABLE_JIT=1`` is set, ``can_run`` says why, automatic dispatch moves on to ``lean``
and one ``RuntimeWarning`` tells the user; a call already routed here runs ``lean`` instead.
Zero-size inputs also run ``lean``.
"""
from __future__ import annotations

import functools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .. import lean
from ..reference import inside_mask

NAME = "cpu"
DISABLE_ENV = "SAPA_DISABLE_JIT"
_EPS = 1e-6  # as sapa.ops._geometry.EPS
JOBS_PER_THREAD = 2
TASK_BYTES = 512 * 1024

_state = {"kernels": None, "error": None, "warned": False, "compiled": set(), "pools": ({}, 0)}


# ---- availability ----------------------------------------------------------------------------

def jit_unavailable() -> str | None:
    """Why the compiled kernels cannot run in this process, or ``None`` if they can."""
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return f"{DISABLE_ENV} is set"
    if _state["error"] is not None:
        return _state["error"]
    if _state["kernels"] is None:
        try:
            from . import kernels as cpu_kernels
        except Exception as e:  # numba missing, or broken on this platform
            _state["error"] = f"numba cannot be imported ({type(e).__name__}: {e})"
            return _state["error"]
        _state["kernels"] = cpu_kernels
    return None


def _warn_once(reason: str) -> None:
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            f"sapa: the compiled CPU backend cannot run ({reason}); falling back to the "
            "slower 'lean' backend. Install numba (pip install 'sapa[cpu]') to enable it.",
            RuntimeWarning, stacklevel=5)


def can_run(*tensors, automatic: bool = False) -> str | None:
    """``None`` if every tensor is on the CPU and the JIT works here, else the reason."""
    for t in tensors:
        if t.device.type != "cpu":
            return f"a tensor is on {t.device}, not the CPU"
    reason = jit_unavailable()
    if reason is not None:
        _warn_once(reason)
    return reason


# ---- geometry --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def geometry(h: int, w: int, ho: int, wo: int, kernel_size: int):
    """Index arrays of the kernels (all ``int64``, see ``kernels``):

    - ``row_start`` (``H + 1``): first output row whose projective row is ``l``;
    - ``rowidx`` (``H'``): projective row ``floor(i' H / H')`` of each output row;
    - ``src``, ``step``: gathered-row layout; window column ``w`` of output column ``j'`` is
      entry ``w * step + j'``, taken from padded column ``src[w * step + j']``;
    - ``colin`` (``K x W'`` bool): whether window column ``w`` of ``j'`` is inside the map.
    """
    r = kernel_size // 2
    rowidx = np.arange(ho, dtype=np.int64) * h // ho
    row_start = np.searchsorted(rowidx, np.arange(h + 1), side="left").astype(np.int64)
    colidx = np.arange(wo, dtype=np.int64) * w // wo
    if wo % w == 0:  # integer scale: every window column is a shifted view of one row
        step = wo // w
        src = np.arange(wo + 2 * r * step, dtype=np.int64) // step
    else:
        step = wo
        src = (colidx[None, :] + np.arange(kernel_size)[:, None]).reshape(-1)
    cols = colidx[None, :] + np.arange(kernel_size)[:, None] - r
    colin = (cols >= 0) & (cols < w)
    for a in (rowidx, row_start, src, colin):
        a.setflags(write=False)
    return row_start, rowidx, src, int(step), colin


def _plan(batch: int, h: int, ho: int, wo: int, kernel_size: int) -> tuple[int, int]:
    """``(block, ntasks)``: low-resolution rows per task and the number of tasks.

    Larger blocks gather each low-resolution row fewer times (``(block + K - 1) / block``),
    so blocks are as large as allows at least two tasks per thread and keeps a task's
    ``K*K x rows x W'`` kernel buffer within ``TASK_BYTES`` (about a core's L2 cache); then
    evened out over the rows.
    """
    threads = max(torch.get_num_threads(), 1)
    row_bytes = 4 * kernel_size * kernel_size * -(-ho // h) * wo  # per low-resolution row
    block = max(1, min(batch * h // (2 * threads), TASK_BYTES // row_bytes, h))
    nblk = -(-h // block)
    block = -(-h // nblk)
    return block, batch * -(-h // block)


# ---- launching -------------------------------------------------------------------------------

def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of exactly ``workers`` threads (new ones after a ``fork``)."""
    pools, pid = _state["pools"]
    if pid != os.getpid():  # threads do not survive fork
        pools = {}
        _state["pools"] = (pools, os.getpid())
    if workers not in pools:
        pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sapa-cpu")
    return pools[workers]


def _launch(name: str, ntasks: int, *args) -> None:
    """Run kernel ``name`` over tasks ``0 .. ntasks - 1`` in ``torch.get_num_threads()``
    threads. The kernels release the GIL. The tasks are cut into a few contiguous jobs per
    thread, taken from the pool's queue as threads free up, so a thread slowed down by other
    load on the machine does not hold up the rest. Python threads rather than numba's
    parallel loops: they compile several times faster and need no numba threading layer."""
    kernel = getattr(_state["kernels"], name)
    n = max(1, min(torch.get_num_threads(), ntasks))
    if n == 1:
        kernel(0, ntasks, 1, *args)
        return
    jobs = min(ntasks, JOBS_PER_THREAD * n)
    bounds = [ntasks * j // jobs for j in range(jobs + 1)]
    pool = _pool(n)
    futures = [pool.submit(kernel, t0, t1, 1, *args) for t0, t1 in zip(bounds, bounds[1:])]
    for f in futures:
        f.result()


def _probe_args(name: str, dtype):
    """Tiny arguments with the types of a real call of kernel ``name`` (for compiling)."""
    z = functools.partial(np.zeros, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    geo = geometry(2, 2, 4, 4, 3)
    row_start, rowidx, src, step, colin = geo
    if name == "attention_fwd":
        return (z((1, 1, 4, 4)), z((1, 1, 2, 2)), z((1, 1, 2, 2)), row_start, rowidx, src, step,
                3, 1, colin, 0, False, _EPS, z((1, 1, 4, 4)), z((1, 4, 4)))
    if name == "attention_bwd_rows":
        return (z((1, 1, 4, 4)), z((1, 1, 4, 4)), z((1, 1, 2, 2)), z((1, 1, 2, 2)), z((1, 4, 4)),
                row_start, rowidx, src, step, 3, 1, colin, 0, False, z((1, 9, 4, 4)),
                z((1, 9, 4, 4)), z((1, 1, 4, 4)))
    if name == "similarity":
        return (z((1, 1, 4, 4)), z((1, 1, 2, 2)), row_start, rowidx, src, step, 3, 1, colin,
                False, z((1, 9, 4, 4)))
    if name == "assemble":
        return (z((1, 9, 4, 4)), z((1, 1, 2, 2)), row_start, rowidx, src, step, 3, 1,
                z((1, 1, 4, 4)))
    if name == "transpose":
        return (z((1, 9, 4, 4)), z((1, 1, 4, 4)), row_start, rowidx, src, step, 3, 1,
                z((1, 1, 2, 2)))
    raise KeyError(name)


def _ready(dtype, *names) -> bool:
    """Compile (or load from the cache) kernels ``names`` for ``dtype``; ``False`` (with one
    warning) if the JIT is unavailable or fails, so the caller runs ``lean`` instead."""
    if jit_unavailable() is None:
        for name in names:
            if (name, dtype) in _state["compiled"]:
                continue
            try:
                _launch(name, 1, *_probe_args(name, dtype))
            except Exception as e:  # a compiler failure: any error on these tiny inputs
                _state["error"] = f"numba failed to compile {name} ({type(e).__name__}: {e})"
                break
            _state["compiled"].add((name, dtype))
        else:
            return True
    _warn_once(jit_unavailable())
    return False


def compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    """A C-contiguous numpy view (a copy only if the dtype or the layout must change)."""
    return t.detach().to(dtype).contiguous().numpy()


def _empty(dtype, *shape):
    return torch.empty(shape, dtype=dtype)


def _code(normalizer: str) -> int:
    return _state["kernels"].NORMALIZERS.index(normalizer)


def _any_empty(*tensors) -> bool:
    return any(t.numel() == 0 for t in tensors)


# ---- the protocol ----------------------------------------------------------------------------

def attention_fwd(q, k, v, kernel_size, normalizer, border):
    """Returns ``(out, stat)``: ``B x C x H' x W'`` in the input dtype, ``B x H' x W'``."""
    cd = compute_dtype(q.dtype)
    if _any_empty(q, k, v) or not _ready(cd, "attention_fwd"):
        return lean.attention_fwd(q, k, v, kernel_size, normalizer, border)
    (b, _, ho, wo), (h, w) = q.shape, k.shape[2:]
    row_start, rowidx, src, step, colin = geometry(h, w, ho, wo, kernel_size)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    out, stat = _empty(cd, b, v.shape[1], ho, wo), _empty(cd, b, ho, wo)
    _launch("attention_fwd", ntasks, _np(q, cd), _np(k, cd), _np(v, cd), row_start, rowidx,
            src, step, kernel_size, block, colin, _code(normalizer), border == "valid", _EPS,
            out.numpy(), stat.numpy())
    return out.to(v.dtype), stat


def attention_bwd(grad_out, q, k, v, out, stat, kernel_size, normalizer, border):
    """Returns ``(grad_q, grad_k, grad_v)``; recomputes the kernels from ``stat``. ``out``
    is not read: ``delta = <grad, out>`` is summed over the window instead."""
    cd = compute_dtype(q.dtype)
    if _any_empty(q, k, v) or not _ready(cd, "attention_bwd_rows", "transpose"):
        return lean.attention_bwd(grad_out, q, k, v, out, stat, kernel_size, normalizer, border)
    (b, _, ho, wo), (h, w) = q.shape, k.shape[2:]
    row_start, rowidx, src, step, colin = geometry(h, w, ho, wo, kernel_size)
    geo = (row_start, rowidx, src, step, kernel_size)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    g, qn = _np(grad_out, cd), _np(q, cd)
    kk = kernel_size * kernel_size
    weights, score_grads = _empty(cd, b, kk, ho, wo), _empty(cd, b, kk, ho, wo)
    gq, gk, gv = _empty(cd, *q.shape), _empty(cd, *k.shape), _empty(cd, *v.shape)
    _launch("attention_bwd_rows", ntasks, g, qn, _np(k, cd), _np(v, cd), _np(stat, cd), *geo,
            block, colin, _code(normalizer), border == "valid", weights.numpy(),
            score_grads.numpy(), gq.numpy())
    _launch("transpose", ntasks, weights.numpy(), g, *geo, block, gv.numpy())
    _launch("transpose", ntasks, score_grads.numpy(), qn, *geo, block, gk.numpy())
    return gq.to(q.dtype), gk.to(k.dtype), gv.to(v.dtype)


def similarity_fwd(q, k, kernel_size, border):
    """``B x K*K x H' x W'`` scores; ``-inf`` outside the map for ``border="valid"``."""
    cd = compute_dtype(q.dtype)
    if _any_empty(q, k) or not _ready(cd, "similarity"):
        return lean.similarity_fwd(q, k, kernel_size, border)
    (b, _, ho, wo), (h, w) = q.shape, k.shape[2:]
    row_start, rowidx, src, step, colin = geometry(h, w, ho, wo, kernel_size)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    out = _empty(cd, b, kernel_size * kernel_size, ho, wo)
    _launch("similarity", ntasks, _np(q, cd), _np(k, cd), row_start, rowidx, src, step,
            kernel_size, block, colin, border == "valid", out.numpy())
    return out.to(q.dtype)


def similarity_bwd(grad, q, k, kernel_size, border):
    cd = compute_dtype(q.dtype)
    if _any_empty(q, k) or not _ready(cd, "assemble", "transpose"):
        return lean.similarity_bwd(grad, q, k, kernel_size, border)
    (b, _, ho, wo), (h, w) = q.shape, k.shape[2:]
    geo = geometry(h, w, ho, wo, kernel_size)[:4] + (kernel_size,)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    g = grad.detach().to(cd)
    if border == "valid":  # the -inf scores outside the map are constants
        g = g.masked_fill(~inside_mask(h, w, kernel_size, (ho, wo), g.device), 0)
    g = _np(g, cd)
    gq, gk = _empty(cd, *q.shape), _empty(cd, *k.shape)
    _launch("assemble", ntasks, g, _np(k, cd), *geo, block, gq.numpy())
    _launch("transpose", ntasks, g, _np(q, cd), *geo, block, gk.numpy())
    return gq.to(q.dtype), gk.to(k.dtype)


def assemble_fwd(kernels, v, kernel_size, border):
    """``B x C x H' x W'``; points outside the map hold ``v = 0`` (both borders)."""
    cd = compute_dtype(v.dtype)
    if _any_empty(kernels, v) or not _ready(cd, "assemble"):
        return lean.assemble_fwd(kernels, v, kernel_size, border)
    (b, _, ho, wo), (h, w) = kernels.shape, v.shape[2:]
    geo = geometry(h, w, ho, wo, kernel_size)[:4] + (kernel_size,)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    out = _empty(cd, b, v.shape[1], ho, wo)
    _launch("assemble", ntasks, _np(kernels, cd), _np(v, cd), *geo, block, out.numpy())
    return out.to(v.dtype)


def assemble_bwd(grad, kernels, v, kernel_size, border):
    cd = compute_dtype(v.dtype)
    if _any_empty(kernels, v) or not _ready(cd, "similarity", "transpose"):
        return lean.assemble_bwd(grad, kernels, v, kernel_size, border)
    (b, _, ho, wo), (h, w) = kernels.shape, v.shape[2:]
    row_start, rowidx, src, step, colin = geometry(h, w, ho, wo, kernel_size)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    g = _np(grad, cd)
    gkern, gv = _empty(cd, *kernels.shape), _empty(cd, *v.shape)
    # dL/dkernels is the similarity of the gradient with v (zero outside: v = 0 there)
    _launch("similarity", ntasks, g, _np(v, cd), row_start, rowidx, src, step, kernel_size,
            block, colin, False, gkern.numpy())
    _launch("transpose", ntasks, _np(kernels, cd), g, row_start, rowidx, src, step,
            kernel_size, block, gv.numpy())
    return gkern.to(kernels.dtype), gv.to(v.dtype)
