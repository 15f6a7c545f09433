"""Numba kernels of the ``cpu`` backend, on NCHW numpy views of the tensors (no layout change).

Importing this module needs numba; ``sapa.ops.cpu`` imports it lazily and falls back to the
lean backend when that fails.

Tasks. Work is split into tasks of one batch element and a block of consecutive
low-resolution rows ``[l0, l1)``. A task owns the output rows whose projective row lies in its
block (``row_start[l0] <= i' < row_start[l1]``) or, in the transposed pass, the
low-resolution rows of the block: no two threads ever write the same memory, so nothing needs
atomics and every result is deterministic whatever the number of threads.

Columns. For one channel and one low-resolution row a task first *gathers* a row ``G`` of
length ``len(src)``: ``G[t] = xpad[src[t]]``, ``xpad`` the row with ``r`` zeros on both sides.
``src`` is chosen so that window column ``w`` (``0 <= w < K``) of every output column ``j'`` is
``G[w * step + j']``: each window offset is a contiguous slice, so every inner loop runs over
``j'`` on contiguous memory and vectorises (see ``sapa.ops.cpu.geometry``). The transposed
operation accumulates into such a row and scatters it back through ``src``.

Inner loops add four products per pass (``_madd4``; the remainders in one pass of one to five):
that cuts the read-modify-write traffic of the accumulator row and the per-loop set-up, which
otherwise bound the speed. Loops never divide by a runtime ``K``: offsets come from tables.

Kernel arrays (scores, weights, their gradients) are ``K*K x rows x W'`` views, row ``i'`` at
index ``i' - ioff``: a batch element of a ``B x K*K x H' x W'`` tensor (``ioff = 0``) or a
task's own buffer (``ioff`` its first output row).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

NORMALIZERS = ("softmax", "relu", "sigmoid", "softplus", "none")
SOFTMAX, RELU, SIGMOID, SOFTPLUS, NONE = range(5)
CHUNK = 4  # products per inner-loop pass

_JIT = dict(cache=True, fastmath=False, nogil=True)


# ---- inner loops -----------------------------------------------------------------------------

@njit(inline="always", **_JIT)
def _madd4(acc, x0, y0, x1, y1, x2, y2, x3, y3):
    for j in range(acc.shape[0]):
        acc[j] += (x0[j] * y0[j] + x1[j] * y1[j]) + (x2[j] * y2[j] + x3[j] * y3[j])


@njit(inline="always", **_JIT)
def _dot5(out, x0, y0, x1, y1, x2, y2, x3, y3, x4, y4):
    for j in range(out.shape[0]):
        out[j] = ((x0[j] * y0[j] + x1[j] * y1[j]) + (x2[j] * y2[j] + x3[j] * y3[j])) + x4[j] * y4[j]


@njit(inline="always", **_JIT)
def _madd3(acc, x0, y0, x1, y1, x2, y2):
    for j in range(acc.shape[0]):
        acc[j] += (x0[j] * y0[j] + x1[j] * y1[j]) + x2[j] * y2[j]


@njit(inline="always", **_JIT)
def _madd2(acc, x0, y0, x1, y1):
    for j in range(acc.shape[0]):
        acc[j] += x0[j] * y0[j] + x1[j] * y1[j]


@njit(inline="always", **_JIT)
def _madd1(acc, x0, y0):
    for j in range(acc.shape[0]):
        acc[j] += x0[j] * y0[j]


@njit(**_JIT)
def _window_tables(ksize, step):
    """Window point ``p`` -> its gathered row ``p // K`` and column offset ``(p % K) * step``
    (an integer division in the inner loops would cost as much as the arithmetic)."""
    kk = ksize * ksize
    prow = np.empty(kk, np.int64)
    pcol = np.empty(kk, np.int64)
    for p in range(kk):
        prow[p] = p // ksize
        pcol[p] = (p % ksize) * step
    return prow, pcol


@njit(**_JIT)
def _gather_rows(plane, row0, src, radius, pad, out):
    """``out[t, :]`` = gathered padded row ``row0 + t`` of ``plane`` (zeros outside the map)."""
    h, w = plane.shape
    for t in range(out.shape[0]):
        row = row0 + t
        o = out[t]
        if row < 0 or row >= h:
            o[:] = 0
            continue
        pad[radius:radius + w] = plane[row]
        for i in range(src.shape[0]):
            o[i] = pad[src[i]]


@njit(**_JIT)
def _scatter_row(acc_row, src, radius, pad, out_row):
    """Transpose of one gathered row: ``out_row[c] = sum_{t: src[t] = c + r} acc_row[t]``.

    ``src`` runs in non-decreasing stretches, so runs are summed in a register first (adding
    into ``pad`` one entry at a time would wait on the previous store every time).
    """
    pad[:] = 0
    prev = src[0]
    run = 0.0
    for i in range(src.shape[0]):
        if src[i] != prev:
            pad[prev] += run
            run = 0.0
            prev = src[i]
        run += acc_row[i]
    pad[prev] += run
    out_row[:] = pad[radius:radius + out_row.shape[0]]


# ---- block primitives (one task) -------------------------------------------------------------

@njit(**_JIT)
def _similarity_block(a, x, b, l0, l1, geo, ksize, gbuf, pad, out, ioff):
    """``out[p, i' - ioff, j'] = sum_c a[b, c, i', j'] * x[b, c, l(i') + u, l(j') + w]`` for the
    task's output rows (outside points contribute 0). ``a``: ``B x C x H' x W'``, ``x``:
    ``B x C x H x W``, ``gbuf``: ``CHUNK x (l1 - l0 + 2r) x len(src)``."""
    row_start, rowidx, src, step = geo
    r = ksize // 2
    kk = ksize * ksize
    wo = a.shape[3]
    i0, i1 = row_start[l0], row_start[l1]
    prow, pcol = _window_tables(ksize, step)
    out[:, i0 - ioff:i1 - ioff] = 0
    nc = a.shape[1]
    for c in range(0, nc, CHUNK):
        m = min(CHUNK, nc - c)
        for t in range(m):
            _gather_rows(x[b, c + t], l0 - r, src, r, pad, gbuf[t])
        for i in range(i0, i1):
            base = rowidx[i] - l0
            for p in range(kk):
                o = out[p, i - ioff]
                row, col = base + prow[p], pcol[p]
                if m == CHUNK:
                    _madd4(o, a[b, c, i], gbuf[0, row, col:col + wo],
                           a[b, c + 1, i], gbuf[1, row, col:col + wo],
                           a[b, c + 2, i], gbuf[2, row, col:col + wo],
                           a[b, c + 3, i], gbuf[3, row, col:col + wo])
                else:
                    for t in range(m):
                        _madd1(o, a[b, c + t, i], gbuf[t, row, col:col + wo])


@njit(**_JIT)
def _assemble_block(kern, ioff, x, b, l0, l1, geo, ksize, gbuf, pad, out):
    """``out[b, c, i', j'] = sum_p kern[p, i' - ioff, j'] * x[b, c, l(i') + u, l(j') + w]``
    for the task's output rows. ``gbuf``: ``(l1 - l0 + 2r) x len(src)``."""
    row_start, rowidx, src, step = geo
    r = ksize // 2
    kk = ksize * ksize
    wo = out.shape[3]
    i0, i1 = row_start[l0], row_start[l1]
    prow, pcol = _window_tables(ksize, step)
    for c in range(x.shape[1]):
        _gather_rows(x[b, c], l0 - r, src, r, pad, gbuf)
        for i in range(i0, i1):
            g = gbuf[rowidx[i] - l0:]
            ik = i - ioff
            o = out[b, c, i]
            if kk == 1:
                o[:] = 0
                _madd1(o, kern[0, ik], g[0, :wo])
                continue
            # K*K = 1 (mod 4) for odd K: one pass of five products, then passes of four
            _dot5(o, kern[0, ik], g[prow[0], pcol[0]:pcol[0] + wo],
                  kern[1, ik], g[prow[1], pcol[1]:pcol[1] + wo],
                  kern[2, ik], g[prow[2], pcol[2]:pcol[2] + wo],
                  kern[3, ik], g[prow[3], pcol[3]:pcol[3] + wo],
                  kern[4, ik], g[prow[4], pcol[4]:pcol[4] + wo])
            for p in range(5, kk, CHUNK):
                _madd4(o,
                       kern[p, ik], g[prow[p], pcol[p]:pcol[p] + wo],
                       kern[p + 1, ik], g[prow[p + 1], pcol[p + 1]:pcol[p + 1] + wo],
                       kern[p + 2, ik], g[prow[p + 2], pcol[p + 2]:pcol[p + 2] + wo],
                       kern[p + 3, ik], g[prow[p + 3], pcol[p + 3]:pcol[p + 3] + wo])


@njit(**_JIT)
def _transpose_block(kern, a, b, l0, l1, geo, ksize, ybuf, pad, pairs_i, pairs_u, out):
    """Gradient of ``_assemble_block`` w.r.t. ``x``, for low-resolution rows ``[l0, l1)``::

        out[b, c, row, col] = sum of kern[b, p, i', j'] * a[b, c, i', j']
                              over (i', j', p = (u, w)) with l(i') + u - r = row,
                              l(j') + w - r = col

    ``kern``: ``B x K*K x H' x W'``, ``a``: ``B x C x H' x W'``, ``out``: ``B x C x H x W``;
    ``ybuf``: ``(l1 - l0) x len(src)``; ``pairs_*``: room for every ``(i', u)`` reaching a row.
    """
    row_start, rowidx, src, step = geo
    r = ksize // 2
    h = out.shape[2]
    wo = a.shape[3]
    # the (i', u) whose window row u lands on each row of the block
    npairs = np.zeros(l1 - l0, np.int64)
    for row in range(l0, l1):
        for u in range(ksize):
            lsrc = row + r - u
            if 0 <= lsrc < h:
                for i in range(row_start[lsrc], row_start[lsrc + 1]):
                    pairs_i[row - l0, npairs[row - l0]] = i
                    pairs_u[row - l0, npairs[row - l0]] = u
                    npairs[row - l0] += 1
    for c in range(a.shape[1]):
        ybuf[:] = 0
        for row in range(l0, l1):
            n = npairs[row - l0]
            pi, pu = pairs_i[row - l0], pairs_u[row - l0]
            for w in range(ksize):
                y = ybuf[row - l0, w * step:w * step + wo]
                m = 0
                while m + CHUNK <= n:
                    i0, i1, i2, i3 = pi[m], pi[m + 1], pi[m + 2], pi[m + 3]
                    _madd4(y,
                           kern[b, pu[m] * ksize + w, i0], a[b, c, i0],
                           kern[b, pu[m + 1] * ksize + w, i1], a[b, c, i1],
                           kern[b, pu[m + 2] * ksize + w, i2], a[b, c, i2],
                           kern[b, pu[m + 3] * ksize + w, i3], a[b, c, i3])
                    m += CHUNK
                if n - m == 3:
                    i0, i1, i2 = pi[m], pi[m + 1], pi[m + 2]
                    _madd3(y, kern[b, pu[m] * ksize + w, i0], a[b, c, i0],
                           kern[b, pu[m + 1] * ksize + w, i1], a[b, c, i1],
                           kern[b, pu[m + 2] * ksize + w, i2], a[b, c, i2])
                elif n - m == 2:
                    i0, i1 = pi[m], pi[m + 1]
                    _madd2(y, kern[b, pu[m] * ksize + w, i0], a[b, c, i0],
                           kern[b, pu[m + 1] * ksize + w, i1], a[b, c, i1])
                elif n - m == 1:
                    _madd1(y, kern[b, pu[m] * ksize + w, pi[m]], a[b, c, pi[m]])
            _scatter_row(ybuf[row - l0], src, r, pad, out[b, c, row])


# ---- normalisation ---------------------------------------------------------------------------

@njit(**_JIT)
def _h(s, code):
    if code == RELU:
        return s if s > 0.0 else 0.0
    if code == SIGMOID:
        return 1.0 / (1.0 + math.exp(-s))
    # softplus as torch.nn.functional.softplus (beta 1, threshold 20)
    return s if s > 20.0 else math.log1p(math.exp(s))


@njit(**_JIT)
def _dh(s, code):
    if code == RELU:
        return 1.0 if s > 0.0 else 0.0
    sg = 1.0 / (1.0 + math.exp(-s))
    if code == SIGMOID:
        return sg * (1.0 - sg)
    return sg  # softplus' = sigmoid


@njit(**_JIT)
def _mask_outside(s, i, ik, rowidx, h, colin, fill):
    """Set ``s[p, ik, :]`` of window points outside the map (output row ``i``) to ``fill``."""
    ksize = colin.shape[0]
    r = ksize // 2
    for u in range(ksize):
        row = rowidx[i] + u - r
        row_in = 0 <= row < h
        for w in range(ksize):
            sp = s[u * ksize + w, ik]
            ci = colin[w]
            for j in range(sp.shape[0]):
                if not (row_in and ci[j]):
                    sp[j] = fill


@njit(**_JIT)
def _normalize_rows(s, ioff, i0, i1, rowidx, h, colin, code, valid, eps, stat):
    """Scores ``s[p, i' - ioff, :]`` -> kernels in place for output rows ``[i0, i1)``; writes
    ``stat[i', :]`` (see ``sapa.ops._normalizers``). ``colin[w, j']``: whether window column
    ``w`` of output column ``j'`` lies inside the map."""
    kk = s.shape[0]
    for i in range(i0, i1):
        ik = i - ioff
        st = stat[i]
        if code == SOFTMAX:
            if valid:
                _mask_outside(s, i, ik, rowidx, h, colin, -np.inf)
            m = s[0, ik].copy()
            for p in range(1, kk):
                sp = s[p, ik]
                for j in range(m.shape[0]):
                    m[j] = max(m[j], sp[j])
            st[:] = 0
            for p in range(kk):
                sp = s[p, ik]
                for j in range(m.shape[0]):
                    e = math.exp(sp[j] - m[j])
                    sp[j] = e
                    st[j] += e
            for p in range(kk):
                sp = s[p, ik]
                for j in range(m.shape[0]):
                    sp[j] /= st[j]
            for j in range(m.shape[0]):
                st[j] = m[j] + math.log(st[j])
        elif code == NONE:
            if valid:
                _mask_outside(s, i, ik, rowidx, h, colin, 0.0)
            st[:] = 0
        else:
            for p in range(kk):
                sp = s[p, ik]
                for j in range(sp.shape[0]):
                    sp[j] = _h(sp[j], code)
            if valid:
                _mask_outside(s, i, ik, rowidx, h, colin, 0.0)
            st[:] = eps
            for p in range(kk):
                sp = s[p, ik]
                for j in range(sp.shape[0]):
                    st[j] += sp[j]
            for p in range(kk):
                sp = s[p, ik]
                for j in range(sp.shape[0]):
                    sp[j] /= st[j]


@njit(**_JIT)
def _weights_and_score_grads(s, gw, ioff, i0, i1, rowidx, h, colin, code, valid, stat):
    """Backward of ``_normalize_rows``, in place for output rows ``[i0, i1)``: scores ``s`` ->
    kernels recomputed from ``stat``; ``gw = dL/dw`` -> ``dL/ds``. It uses
    ``delta = sum_p w_p dL/dw_p``, which equals ``<dL/dout, out>`` for the attention."""
    kk = s.shape[0]
    wo = s.shape[2]
    delta = np.empty(wo, s.dtype)
    for i in range(i0, i1):
        ik = i - ioff
        st = stat[i]
        if valid:
            _mask_outside(gw, i, ik, rowidx, h, colin, 0.0)
        if code == NONE:
            if valid:
                _mask_outside(s, i, ik, rowidx, h, colin, 0.0)
            continue
        delta[:] = 0
        if code == SOFTMAX:
            if valid:
                _mask_outside(s, i, ik, rowidx, h, colin, -np.inf)
            for p in range(kk):
                sp, gp = s[p, ik], gw[p, ik]
                for j in range(wo):
                    sp[j] = math.exp(sp[j] - st[j])
                    delta[j] += sp[j] * gp[j]
            for p in range(kk):
                sp, gp = s[p, ik], gw[p, ik]
                for j in range(wo):
                    gp[j] = sp[j] * (gp[j] - delta[j])
            continue
        for p in range(kk):  # gw is 0 outside the map, so w there does not matter
            sp, gp = s[p, ik], gw[p, ik]
            for j in range(wo):
                delta[j] += _h(sp[j], code) / st[j] * gp[j]
        for p in range(kk):
            sp, gp = s[p, ik], gw[p, ik]
            for j in range(wo):
                gp[j] = (gp[j] - delta[j]) / st[j] * _dh(sp[j], code)
                sp[j] = _h(sp[j], code) / st[j]
        if valid:
            _mask_outside(s, i, ik, rowidx, h, colin, 0.0)
            _mask_outside(gw, i, ik, rowidx, h, colin, 0.0)


# ---- kernels: parallel over tasks ------------------------------------------------------------

@njit(**_JIT)
def _task(t, nblk, block, h):
    """Task ``t`` -> batch element and low-resolution rows ``[l0, l1)``."""
    b = t // nblk
    l0 = (t % nblk) * block
    return b, l0, min(l0 + block, h)


@njit(**_JIT)
def attention_fwd(t0, t1, tstep, q, k, v, row_start, rowidx, src, step, ksize, block, colin, code, valid, eps,
                  out, stat):
    """Fused forward, one pass per task: scores, normalisation, assembly. Writes ``out``
    (``B x C x H' x W'``) and ``stat`` (``B x H' x W'``)."""
    geo = (row_start, rowidx, src, step)
    h, w = k.shape[2], k.shape[3]
    r = ksize // 2
    nblk = (h + block - 1) // block
    for t in range(t0, t1, tstep):
        b, l0, l1 = _task(t, nblk, block, h)
        i0, i1 = row_start[l0], row_start[l1]
        s = np.empty((ksize * ksize, i1 - i0, q.shape[3]), q.dtype)
        gbuf = np.empty((CHUNK, l1 - l0 + 2 * r, src.shape[0]), q.dtype)
        pad = np.zeros(w + 2 * r, q.dtype)
        _similarity_block(q, k, b, l0, l1, geo, ksize, gbuf, pad, s, i0)
        _normalize_rows(s, i0, i0, i1, rowidx, h, colin, code, valid, eps, stat[b])
        _assemble_block(s, i0, v, b, l0, l1, geo, ksize, gbuf[0], pad, out)


@njit(**_JIT)
def attention_bwd_rows(t0, t1, tstep, grad, q, k, v, stat, row_start, rowidx, src, step, ksize, block, colin,
                       code, valid, weights, score_grads, gq):
    """First backward pass, over output rows: recomputes the kernels into ``weights``, writes
    ``dL/ds`` into ``score_grads`` (both ``B x K*K x H' x W'``) and ``dL/dq`` into ``gq``.
    ``transpose`` then turns them into ``dL/dv`` and ``dL/dk``."""
    geo = (row_start, rowidx, src, step)
    h, w = k.shape[2], k.shape[3]
    r = ksize // 2
    nblk = (h + block - 1) // block
    for t in range(t0, t1, tstep):
        b, l0, l1 = _task(t, nblk, block, h)
        i0, i1 = row_start[l0], row_start[l1]
        s, gs = weights[b], score_grads[b]
        gbuf = np.empty((CHUNK, l1 - l0 + 2 * r, src.shape[0]), q.dtype)
        pad = np.zeros(w + 2 * r, q.dtype)
        _similarity_block(q, k, b, l0, l1, geo, ksize, gbuf, pad, s, 0)
        _similarity_block(grad, v, b, l0, l1, geo, ksize, gbuf, pad, gs, 0)
        _weights_and_score_grads(s, gs, 0, i0, i1, rowidx, h, colin, code, valid, stat[b])
        _assemble_block(gs, 0, k, b, l0, l1, geo, ksize, gbuf[0], pad, gq)


@njit(**_JIT)
def similarity(t0, t1, tstep, q, k, row_start, rowidx, src, step, ksize, block, colin, valid, out):
    """``local_similarity``: ``out`` ``B x K*K x H' x W'``; ``-inf`` outside if ``valid``."""
    geo = (row_start, rowidx, src, step)
    h, w = k.shape[2], k.shape[3]
    r = ksize // 2
    nblk = (h + block - 1) // block
    for t in range(t0, t1, tstep):
        b, l0, l1 = _task(t, nblk, block, h)
        gbuf = np.empty((CHUNK, l1 - l0 + 2 * r, src.shape[0]), q.dtype)
        pad = np.zeros(w + 2 * r, q.dtype)
        _similarity_block(q, k, b, l0, l1, geo, ksize, gbuf, pad, out[b], 0)
        if valid:
            for i in range(row_start[l0], row_start[l1]):
                _mask_outside(out[b], i, i, rowidx, h, colin, -np.inf)


@njit(**_JIT)
def assemble(t0, t1, tstep, kern, v, row_start, rowidx, src, step, ksize, block, out):
    """``local_assemble``: ``kern`` ``B x K*K x H' x W'``, ``v`` -> ``out`` ``B x C x H' x W'``."""
    geo = (row_start, rowidx, src, step)
    h, w = v.shape[2], v.shape[3]
    r = ksize // 2
    nblk = (h + block - 1) // block
    for t in range(t0, t1, tstep):
        b, l0, l1 = _task(t, nblk, block, h)
        gbuf = np.empty((l1 - l0 + 2 * r, src.shape[0]), v.dtype)
        pad = np.zeros(w + 2 * r, v.dtype)
        _assemble_block(kern[b], 0, v, b, l0, l1, geo, ksize, gbuf, pad, out)


@njit(**_JIT)
def transpose(t0, t1, tstep, kern, a, row_start, rowidx, src, step, ksize, block, out):
    """Gradient of ``assemble`` w.r.t. its values: ``kern`` ``B x K*K x H' x W'`` and ``a``
    (``B x C x H' x W'``, the output gradient) -> ``out`` ``B x C x H x W``. With the score
    gradient as ``kern`` and ``q`` as ``a`` it is the similarity's gradient w.r.t. ``k``."""
    geo = (row_start, rowidx, src, step)
    h, w = out.shape[2], out.shape[3]
    r = ksize // 2
    nblk = (h + block - 1) // block
    # most output rows reaching one low-resolution row: K * max rows per projective row
    most = 0
    for l in range(h):
        most = max(most, row_start[l + 1] - row_start[l])
    for t in range(t0, t1, tstep):
        b, l0, l1 = _task(t, nblk, block, h)
        ybuf = np.empty((l1 - l0, src.shape[0]), a.dtype)
        pad = np.empty(w + 2 * r, a.dtype)
        pairs_i = np.empty((l1 - l0, ksize * most), np.int64)
        pairs_u = np.empty((l1 - l0, ksize * most), np.int64)
        _transpose_block(kern, a, b, l0, l1, geo, ksize, ybuf, pad, pairs_i, pairs_u, out)
