"""Numba kernels of the ``cpu`` backend, on NCHW numpy views of the tensors (no layout change).

Importing this module needs numba; ``sapa.ops.backends.numba`` imports it (through
``launch.py``) when the backend first runs.

Tasks. Work is split into tasks of one batch element and a block of consecutive
low-resolution rows ``[l0, l1)``. A task owns the output rows whose projective row lies in its
block (``row_start[l0] <= i' < row_start[l1]``) or, in the transposed pass, the
low-resolution rows of the block: no two threads ever write the same memory, so nothing needs
atomics and every result is deterministic whatever the number of threads.

Columns. For one channel and one low-resolution row a task first *gathers* a row ``G`` of
length ``len(src)``: ``G[t] = xpad[src[t]]``, ``xpad`` the row with ``r`` zeros on both sides.
``src`` is chosen so that window column ``w`` (``0 <= w < K``) of every output column ``j'`` is
``G[w * step + j']``: each window offset is a contiguous slice, so every inner loop runs over
``j'`` on contiguous memory and vectorises (see ``launch.geometry``). The transposed operation
accumulates into such a row and scatters it back through ``src``.

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

from ..._normalizers import NONE, RELU, SIGMOID, SOFTMAX  # the normalizers' integer codes

CHUNK = 4  # products per inner-loop pass

_JIT = dict(cache=True, fastmath=False, nogil=True)


# ---- inner loops -----------------------------------------------------------------------------
# Arrays are passed flat, with unsigned offsets: unsigned indices skip numba's negative-index
# wrap-around, and no slice objects are built per call (their set-up costs as much as the
# eight-element loop over W' = 128 itself). ``o[oo + j] (+)= sum_m x[xm + j] * y[ym + j]``.

@njit(inline="always", **_JIT)
def _madd4(o, oo, x, x0, x1, x2, x3, y, y0, y1, y2, y3, n):
    for j in range(n):
        o[oo + j] += ((x[x0 + j] * y[y0 + j] + x[x1 + j] * y[y1 + j])
                      + (x[x2 + j] * y[y2 + j] + x[x3 + j] * y[y3 + j]))


@njit(inline="always", **_JIT)
def _dot5(o, oo, x, x0, x1, x2, x3, x4, y, y0, y1, y2, y3, y4, n):
    for j in range(n):
        o[oo + j] = (((x[x0 + j] * y[y0 + j] + x[x1 + j] * y[y1 + j])
                      + (x[x2 + j] * y[y2 + j] + x[x3 + j] * y[y3 + j]))
                     + x[x4 + j] * y[y4 + j])


@njit(inline="always", **_JIT)
def _madd3(o, oo, x, x0, x1, x2, y, y0, y1, y2, n):
    for j in range(n):
        o[oo + j] += (x[x0 + j] * y[y0 + j] + x[x1 + j] * y[y1 + j]) + x[x2 + j] * y[y2 + j]


@njit(inline="always", **_JIT)
def _madd2(o, oo, x, x0, x1, y, y0, y1, n):
    for j in range(n):
        o[oo + j] += x[x0 + j] * y[y0 + j] + x[x1 + j] * y[y1 + j]


@njit(inline="always", **_JIT)
def _madd1(o, oo, x, x0, y, y0, n):
    for j in range(n):
        o[oo + j] += x[x0 + j] * y[y0 + j]


@njit(inline="always", **_JIT)
def _u(v):
    return np.uint64(v)


@njit(**_JIT)
def _window_tables(ksize, step, glen):
    """Window point ``p`` -> offset of its window column in a flat gathered buffer with rows of
    ``glen``: ``(p // K) * glen + (p % K) * step`` (unsigned; computed once, since an integer
    division in the inner loops would cost as much as the arithmetic)."""
    kk = ksize * ksize
    offs = np.empty(kk, np.uint64)
    for p in range(kk):
        offs[p] = (p // ksize) * glen + (p % ksize) * step
    return offs


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
    ``B x C x H x W``, ``gbuf``: ``CHUNK x (l1 - l0 + 2r) x len(src)``, ``out``: ``K*K x n x W'``
    (all C-contiguous)."""
    row_start, rowidx, src, step = geo
    r = ksize // 2
    kk = ksize * ksize
    wo = a.shape[3]
    glen = gbuf.shape[2]
    i0, i1 = row_start[l0], row_start[l1]
    offs = _window_tables(ksize, step, glen)
    out[:, i0 - ioff:i1 - ioff] = 0
    of, af, gf = out.reshape(-1), a[b].reshape(-1), gbuf.reshape(-1)
    n, plane, pstride = _u(wo), _u(a.shape[2] * wo), _u(out.shape[1] * wo)
    gstride = _u(gbuf.shape[1] * glen)  # between the gathered channels
    nc = a.shape[1]
    for c in range(0, nc, CHUNK):
        m = min(CHUNK, nc - c)
        for t in range(m):
            _gather_rows(x[b, c + t], l0 - r, src, r, pad, gbuf[t])
        for i in range(i0, i1):
            a0 = _u(c) * plane + _u(i) * n
            g0 = _u((rowidx[i] - l0) * glen)
            for p in range(kk):
                oo = _u(p) * pstride + _u(i - ioff) * n
                gp = g0 + offs[p]
                if m == CHUNK:
                    _madd4(of, oo, af, a0, a0 + plane, a0 + _u(2) * plane, a0 + _u(3) * plane,
                           gf, gp, gp + gstride, gp + _u(2) * gstride, gp + _u(3) * gstride, n)
                else:
                    for t in range(m):
                        _madd1(of, oo, af, a0 + _u(t) * plane, gf, gp + _u(t) * gstride, n)


@njit(**_JIT)
def _assemble_block(kern, ioff, x, b, l0, l1, geo, ksize, gbuf, pad, out):
    """``out[b, c, i', j'] = sum_p kern[p, i' - ioff, j'] * x[b, c, l(i') + u, l(j') + w]``
    for the task's output rows. ``kern``: ``K*K x n x W'``, ``gbuf``:
    ``(l1 - l0 + 2r) x len(src)`` (C-contiguous)."""
    row_start, rowidx, src, step = geo
    r = ksize // 2
    kk = ksize * ksize
    wo = out.shape[3]
    glen = gbuf.shape[1]
    i0, i1 = row_start[l0], row_start[l1]
    offs = _window_tables(ksize, step, glen)
    kf, gf = kern.reshape(-1), gbuf.reshape(-1)
    n, pstride = _u(wo), _u(kern.shape[1] * wo)
    for c in range(x.shape[1]):
        _gather_rows(x[b, c], l0 - r, src, r, pad, gbuf)
        of = out[b, c].reshape(-1)
        for i in range(i0, i1):
            oo = _u(i) * n
            k0 = _u(i - ioff) * n
            g0 = _u((rowidx[i] - l0) * glen)
            if kk == 1:
                of[oo:oo + n] = 0
                _madd1(of, oo, kf, k0, gf, g0, n)
                continue
            # K*K = 1 (mod 4) for odd K: one pass of five products, then passes of four
            _dot5(of, oo, kf, k0, k0 + pstride, k0 + _u(2) * pstride, k0 + _u(3) * pstride,
                  k0 + _u(4) * pstride, gf, g0 + offs[0], g0 + offs[1], g0 + offs[2],
                  g0 + offs[3], g0 + offs[4], n)
            for p in range(5, kk, CHUNK):
                kp = k0 + _u(p) * pstride
                _madd4(of, oo, kf, kp, kp + pstride, kp + _u(2) * pstride, kp + _u(3) * pstride,
                       gf, g0 + offs[p], g0 + offs[p + 1], g0 + offs[p + 2], g0 + offs[p + 3], n)


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
    glen = ybuf.shape[1]
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
    kf, yf = kern[b].reshape(-1), ybuf.reshape(-1)
    n, pstride = _u(wo), _u(kern.shape[2] * wo)
    for c in range(a.shape[1]):
        af = a[b, c].reshape(-1)
        ybuf[:] = 0
        for row in range(l0, l1):
            npr = npairs[row - l0]
            pi, pu = pairs_i[row - l0], pairs_u[row - l0]
            for w in range(ksize):
                yo = _u((row - l0) * glen + w * step)
                m = 0
                while m < npr:
                    left = min(npr - m, CHUNK)
                    # kern[b, u * K + w, i'] and a[b, c, i'] of pairs m .. m + left - 1
                    k0 = _u(pu[m] * ksize + w) * pstride + _u(pi[m]) * n
                    a0 = _u(pi[m]) * n
                    if left == 1:
                        _madd1(yf, yo, kf, k0, af, a0, n)
                        break
                    k1 = _u(pu[m + 1] * ksize + w) * pstride + _u(pi[m + 1]) * n
                    a1 = _u(pi[m + 1]) * n
                    if left == 2:
                        _madd2(yf, yo, kf, k0, k1, af, a0, a1, n)
                        break
                    k2 = _u(pu[m + 2] * ksize + w) * pstride + _u(pi[m + 2]) * n
                    a2 = _u(pi[m + 2]) * n
                    if left == 3:
                        _madd3(yf, yo, kf, k0, k1, k2, af, a0, a1, a2, n)
                        break
                    k3 = _u(pu[m + 3] * ksize + w) * pstride + _u(pi[m + 3]) * n
                    a3 = _u(pi[m + 3]) * n
                    _madd4(yf, yo, kf, k0, k1, k2, k3, af, a0, a1, a2, a3, n)
                    m += CHUNK
            _scatter_row(ybuf[row - l0], src, r, pad, out[b, c, row])


# ---- normalisation ---------------------------------------------------------------------------

@njit(**_JIT)
def _h(s, code):
    if code == RELU:
        return 0.0 if s <= 0.0 else s  # keeps nan, as torch.relu does
    if code == SIGMOID:
        return 1.0 / (1.0 + math.exp(-s))
    # softplus as torch.nn.functional.softplus (beta 1, threshold 20)
    return s if s > 20.0 else math.log1p(math.exp(s))


@njit(**_JIT)
def _score_grad(s, gw, delta, st, code):
    """``dL/ds`` from ``dL/dw = gw`` for the relu / sigmoid / softplus normalizers. relu
    *selects*, as autograd's ``threshold_backward``: 0 where ``relu(s) <= 0`` (so a nan score
    passes the gradient), rather than multiplying by 0 (``nan * 0`` would be ``nan``)."""
    if code == RELU:
        return 0.0 if s <= 0.0 else (gw - delta) / st
    sg = 1.0 / (1.0 + math.exp(-s))
    if code == SIGMOID:
        return (gw - delta) / st * (sg * (1.0 - sg))
    return (gw - delta) / st * sg  # softplus' = sigmoid


@njit(**_JIT)
def _exp_diff(x, y, out, tmp, bits):
    """``out[j] = exp(x[j] - y[j])`` (``out`` may be ``x``). ``float64``: ``math.exp``.
    ``float32``: Cephes' ``expf`` (range reduction by ``ln 2``, a degree-7 polynomial,
    ``2^k`` built from its bits; within 1 ulp here, like ``math.exp``) in loops that
    vectorise, since calls to ``math.exp`` do not and took a tenth of the forward. Gives 0
    below ``-87.3`` (``exp`` is then below the smallest normal float32) and keeps NaN."""
    n = out.shape[0]
    if out.itemsize != 4:
        for j in range(n):
            out[j] = math.exp(x[j] - y[j])
        return
    lo, hi = np.float32(-87.33654), np.float32(88.72283)
    for j in range(n):
        tmp[j] = x[j] - y[j]
    for j in range(n):
        t = tmp[j]
        v = min(max(t, lo), hi)
        k = np.floor(v * np.float32(1.44269504088896341) + np.float32(0.5))
        r = (v - k * np.float32(0.693359375)) - k * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        out[j] = (p * r * r + r) + np.float32(1.0)
        bits[j] = (np.int32(k) + np.int32(127)) << np.int32(23) if t >= lo else np.int32(0)
    scale = bits.view(np.float32)
    for j in range(n):
        out[j] = out[j] * scale[j] if tmp[j] == tmp[j] else tmp[j]


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
    kk, wo = s.shape[0], s.shape[2]
    m, tmp, bits = np.empty(wo, s.dtype), np.empty(wo, s.dtype), np.empty(wo, np.int32)
    for i in range(i0, i1):
        ik = i - ioff
        st = stat[i]
        if code == SOFTMAX:
            if valid:
                _mask_outside(s, i, ik, rowidx, h, colin, -np.inf)
            m[:] = s[0, ik]
            for p in range(1, kk):
                sp = s[p, ik]
                for j in range(wo):
                    m[j] = max(m[j], sp[j])
            st[:] = 0
            for p in range(kk):
                sp = s[p, ik]
                _exp_diff(sp, m, sp, tmp, bits)
                for j in range(wo):
                    st[j] += sp[j]
            for j in range(wo):
                tmp[j] = 1.0 / st[j]
            for p in range(kk):
                sp = s[p, ik]
                for j in range(wo):
                    sp[j] *= tmp[j]
            for j in range(wo):
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
    tmp, bits = np.empty(wo, s.dtype), np.empty(wo, np.int32)
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
                _exp_diff(sp, st, sp, tmp, bits)
                for j in range(wo):
                    delta[j] += sp[j] * gp[j]
            for p in range(kk):
                sp, gp = s[p, ik], gw[p, ik]
                for j in range(wo):
                    gp[j] = sp[j] * (gp[j] - delta[j])
            continue
        if valid:  # outside scores count as 0 (one is nan when q is infinite: nan * 0)
            _mask_outside(s, i, ik, rowidx, h, colin, 0.0)
        for p in range(kk):  # gw is 0 outside the map, so w there does not matter
            sp, gp = s[p, ik], gw[p, ik]
            for j in range(wo):
                delta[j] += _h(sp[j], code) / st[j] * gp[j]
        for p in range(kk):
            sp, gp = s[p, ik], gw[p, ik]
            for j in range(wo):
                gp[j] = _score_grad(sp[j], gp[j], delta[j], st[j], code)
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
