"""Launchers of the ``numba`` backend: numpy views of the tensors, the kernels' index tables,
the split of the work into tasks and threads, compilation on first use.

Loaded (with numpy and numba) when the backend first runs; ``sapa.ops.backends.numba`` holds
the backend's contract and falls back to ``lean`` for zero-size inputs before calling here.
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ... import _normalizers as nz
from ..._dtypes import compute_dtype
from ..._geometry import EPS
from ..reference import inside_mask
from . import fail
from . import kernels as _kernels

JOBS_PER_THREAD = 2
TASK_BYTES = 512 * 1024

# (kernel name, dtype) pairs compiled (or loaded from numba's cache) in this process; thread
# pools by size, and the process that made them (threads do not survive a fork)
_compiled: set = set()
_pools: tuple[dict, int] = ({}, 0)


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
    global _pools
    pools, pid = _pools
    if pid != os.getpid():  # threads do not survive fork
        pools = {}
        _pools = (pools, os.getpid())
    if workers not in pools:
        pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sapa-cpu")
    return pools[workers]


def _launch(name: str, ntasks: int, *args) -> None:
    """Run kernel ``name`` over tasks ``0 .. ntasks - 1`` in ``torch.get_num_threads()``
    threads. The kernels release the GIL. The tasks are cut into a few contiguous jobs per
    thread, taken from the pool's queue as threads free up, so a thread slowed down by other
    load on the machine does not hold up the rest. Python threads rather than numba's
    parallel loops: they compile several times faster and need no numba threading layer."""
    kernel = getattr(_kernels, name)
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
                3, 1, colin, 0, False, EPS, z((1, 1, 4, 4)), z((1, 4, 4)))
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


def _ready(dtype, *names) -> None:
    """Compile (or load from numba's cache) kernels ``names`` for ``dtype``, on tiny inputs;
    a failure is recorded and raised as ``BackendUnavailable`` (``fail``)."""
    for name in names:
        if (name, dtype) in _compiled:
            continue
        try:
            _launch(name, 1, *_probe_args(name, dtype))
        except Exception as e:  # a compiler failure: any error on these tiny inputs
            fail(f"numba failed to compile {name} ({type(e).__name__}: {e})", e)
        _compiled.add((name, dtype))


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    """A C-contiguous numpy view (a copy only if the dtype or the layout must change)."""
    return t.detach().to(dtype).contiguous().numpy()


def _empty(dtype, *shape):
    return torch.empty(shape, dtype=dtype)


# ---- the protocol (non-empty inputs) ---------------------------------------------------------

def attention_fwd(q, k, v, kernel_size, normalizer, border):
    """Returns ``(out, stat)``: ``B x C x H' x W'`` in the input dtype, ``B x H' x W'``."""
    cd = compute_dtype(q.dtype)
    _ready(cd, "attention_fwd")
    (b, _, ho, wo), (h, w) = q.shape, k.shape[2:]
    row_start, rowidx, src, step, colin = geometry(h, w, ho, wo, kernel_size)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    out, stat = _empty(cd, b, v.shape[1], ho, wo), _empty(cd, b, ho, wo)
    _launch("attention_fwd", ntasks, _np(q, cd), _np(k, cd), _np(v, cd), row_start, rowidx,
            src, step, kernel_size, block, colin, nz.CODES[normalizer], border == "valid", EPS,
            out.numpy(), stat.numpy())
    return out.to(v.dtype), stat


def attention_bwd(grad_out, q, k, v, out, stat, kernel_size, normalizer, border):
    """Returns ``(grad_q, grad_k, grad_v)``; recomputes the kernels from ``stat``. ``out``
    is not read: ``delta = <grad, out>`` is summed over the window instead."""
    cd = compute_dtype(q.dtype)
    _ready(cd, "attention_bwd_rows", "transpose")
    (b, _, ho, wo), (h, w) = q.shape, k.shape[2:]
    row_start, rowidx, src, step, colin = geometry(h, w, ho, wo, kernel_size)
    geo = (row_start, rowidx, src, step, kernel_size)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    g, qn = _np(grad_out, cd), _np(q, cd)
    kk = kernel_size * kernel_size
    weights, score_grads = _empty(cd, b, kk, ho, wo), _empty(cd, b, kk, ho, wo)
    gq, gk, gv = _empty(cd, *q.shape), _empty(cd, *k.shape), _empty(cd, *v.shape)
    _launch("attention_bwd_rows", ntasks, g, qn, _np(k, cd), _np(v, cd), _np(stat, cd), *geo,
            block, colin, nz.CODES[normalizer], border == "valid", weights.numpy(),
            score_grads.numpy(), gq.numpy())
    _launch("transpose", ntasks, weights.numpy(), g, *geo, block, gv.numpy())
    _launch("transpose", ntasks, score_grads.numpy(), qn, *geo, block, gk.numpy())
    return gq.to(q.dtype), gk.to(k.dtype), gv.to(v.dtype)


def similarity_fwd(q, k, kernel_size, border):
    """``B x K*K x H' x W'`` scores; ``-inf`` outside the map for ``border="valid"``."""
    cd = compute_dtype(q.dtype)
    _ready(cd, "similarity")
    (b, _, ho, wo), (h, w) = q.shape, k.shape[2:]
    row_start, rowidx, src, step, colin = geometry(h, w, ho, wo, kernel_size)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    out = _empty(cd, b, kernel_size * kernel_size, ho, wo)
    _launch("similarity", ntasks, _np(q, cd), _np(k, cd), row_start, rowidx, src, step,
            kernel_size, block, colin, border == "valid", out.numpy())
    return out.to(q.dtype)


def similarity_bwd(grad, q, k, kernel_size, border):
    cd = compute_dtype(q.dtype)
    _ready(cd, "assemble", "transpose")
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
    _ready(cd, "assemble")
    (b, _, ho, wo), (h, w) = kernels.shape, v.shape[2:]
    geo = geometry(h, w, ho, wo, kernel_size)[:4] + (kernel_size,)
    block, ntasks = _plan(b, h, ho, wo, kernel_size)
    out = _empty(cd, b, v.shape[1], ho, wo)
    _launch("assemble", ntasks, _np(kernels, cd), _np(v, cd), *geo, block, out.numpy())
    return out.to(v.dtype)


def assemble_bwd(grad, kernels, v, kernel_size, border):
    cd = compute_dtype(v.dtype)
    _ready(cd, "similarity", "transpose")
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
