"""Fused SAPA attention: the forward, and the four kernels of the backward.

Shapes: ``q`` ``B x D x HO x WO``, ``k`` ``B x D x H x W``, ``v`` ``B x C x H x W``,
``out`` / ``grad`` ``B x C x HO x WO``, ``stat`` / ``delta`` ``B x HO x WO`` (contiguous).

- ``attention_fwd``, grid (output-point blocks, C blocks, B): walks the K*K window once per
  output point: score (a D-channel dot product), online softmax or running sum of ``h``, and
  the weighted sum of the values, all in registers. Only the per-point statistic
  (log-sum-exp, or ``sum h + eps``) is written, by the programs of C block 0.
- ``attention_delta``, grid (output-point blocks, B): ``delta = <grad, out>`` per point.
- ``attention_bwd_q``, grid (output-point blocks, D blocks, B): recompute each window point's
  score and kernel weight, ``dL/dw_p = <grad, v_p>``, ``dL/ds_p``; ``dq += dL/ds_p * k_p``.
- ``attention_bwd_k`` / ``attention_bwd_v``, grid (low-resolution blocks, D / C blocks, B):
  gather over the output points whose windows hold each low-resolution point
  (``_common.gather_tile``): ``dk += dL/ds * q``, ``dv += w * grad``.
"""
import triton
import triton.language as tl

from ._common import (
    NEG_BIG,
    NONE,
    SOFTMAX,
    block_points,
    channel_block,
    channel_dot,
    gather_tile,
    h_of,
    kernel_weight,
    load_channels,
    projective,
    score_grad,
    source_rows,
    store_channels,
    store_gathered,
    window_point,
)


@triton.jit
def attention_fwd(
    q_ptr, k_ptr, v_ptr, out_ptr, stat_ptr,
    sq_b, sq_c, sq_h, sq_w,
    sk_b, sk_c, sk_h, sk_w,
    sv_b, sv_c, sv_h, sv_w,
    so_b, so_c, so_h, so_w,
    D, C, H, W, HO, WO,
    K: tl.constexpr, NORM: tl.constexpr, VALID: tl.constexpr, EPS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
    ACC: tl.constexpr, IDX: tl.constexpr,
):
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    i, j, pmask = block_points(tl.program_id(0), HO * WO, WO, BLOCK_P, IDX)
    li, lj = projective(i, j, H, W, HO, WO)
    offs_c, cmask = channel_block(pid_c, C, BLOCK_C, IDX)
    q_ptrs = q_ptr + pid_b * sq_b + i * sq_h + j * sq_w
    k_ptr += pid_b * sk_b
    v_ptr += pid_b * sv_b

    m = tl.full([BLOCK_P], NEG_BIG, dtype=ACC)  # running max (softmax)
    l = tl.full([BLOCK_P], 0.0, ACC)  # running sum of h, or of exp(s - m)
    acc = tl.full([BLOCK_P, BLOCK_C], 0.0, ACC)
    for p in range(K * K):
        ry, rx, inside = window_point(li, lj, p, H, W, K)
        # outside points read k = v = 0: score 0 ("zeros" counts it, "valid" does not)
        s = channel_dot(q_ptrs, sq_c, pmask, k_ptr + ry * sk_h + rx * sk_w, sk_c, inside,
                        D, BLOCK_D, ACC, IDX)
        vp = load_channels(v_ptr + ry * sv_h + rx * sv_w, offs_c, sv_c, inside, cmask, ACC)
        if NORM == SOFTMAX:
            if VALID:
                s = tl.where(inside, s, NEG_BIG)
                m_new = tl.maximum(m, s)
                # exp(s - m_new) <= 1; it is 1 at uncounted points while nothing is counted
                e = tl.where(inside, tl.exp(s - m_new), 0.0)
            else:
                m_new = tl.maximum(m, s)
                e = tl.exp(s - m_new)
            alpha = tl.exp(m - m_new)
            l = l * alpha + e
            acc = acc * alpha[:, None] + e[:, None] * vp
            m = m_new
        elif NORM == NONE:
            if VALID:  # v = 0 outside, but s may be nan there (q * 0): select, as the reference
                s = tl.where(inside, s, 0.0)
            acc += s[:, None] * vp
        else:
            hs = h_of(s, NORM)
            if VALID:
                hs = tl.where(inside, hs, 0.0)
            l += hs
            acc += hs[:, None] * vp

    if NORM == SOFTMAX:
        out = acc / l[:, None]
        stat = m + tl.log(l)
    elif NORM == NONE:
        out = acc
        stat = tl.full([BLOCK_P], 0.0, ACC)
    else:
        stat = l + EPS
        out = acc / stat[:, None]

    store_channels(out_ptr + pid_b * so_b + i * so_h + j * so_w, offs_c, so_c, out, pmask, cmask)
    if pid_c == 0:  # stat (contiguous B x HO x WO) is the same in every C block
        tl.store(stat_ptr + pid_b * HO * WO + i * WO + j, stat.to(stat_ptr.dtype.element_ty),
                 mask=pmask)


@triton.jit
def attention_delta(
    g_ptr, o_ptr, delta_ptr,
    sg_b, sg_c, sg_h, sg_w,
    so_b, so_c, so_h, so_w,
    C, HO, WO,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr,
):
    """``delta[b, i, j] = sum_c grad[b, c, i, j] * out[b, c, i, j]``."""
    pid_b = tl.program_id(1).to(tl.int64)
    i, j, pmask = block_points(tl.program_id(0), HO * WO, WO, BLOCK_P, IDX)
    delta = channel_dot(g_ptr + pid_b * sg_b + i * sg_h + j * sg_w, sg_c, pmask,
                        o_ptr + pid_b * so_b + i * so_h + j * so_w, so_c, pmask,
                        C, BLOCK_C, ACC, IDX)
    tl.store(delta_ptr + pid_b * HO * WO + i * WO + j, delta.to(delta_ptr.dtype.element_ty),
             mask=pmask)


@triton.jit
def attention_bwd_q(
    g_ptr, q_ptr, k_ptr, v_ptr, stat_ptr, delta_ptr, gq_ptr,
    sg_b, sg_c, sg_h, sg_w,
    sq_b, sq_c, sq_h, sq_w,
    sk_b, sk_c, sk_h, sk_w,
    sv_b, sv_c, sv_h, sv_w,
    sgq_b, sgq_c, sgq_h, sgq_w,
    D, C, H, W, HO, WO,
    K: tl.constexpr, NORM: tl.constexpr, VALID: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
    ACC: tl.constexpr, IDX: tl.constexpr,
):
    """``dq[:, l'] = sum_p dL/ds_p * k_{l+p}`` for the D block ``program_id(1)``. A point
    outside the map holds ``k = 0``; ``VALID`` drops its ``dL/ds_p`` as well, which is not
    finite when ``q`` is not (its score ``q * 0`` is nan), as the reference does."""
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    i, j, pmask = block_points(tl.program_id(0), HO * WO, WO, BLOCK_P, IDX)
    li, lj = projective(i, j, H, W, HO, WO)
    offs_d, dmask = channel_block(pid_d, D, BLOCK_D, IDX)

    pt = pid_b * HO * WO + i * WO + j
    stat = tl.load(stat_ptr + pt, mask=pmask, other=1.0).to(ACC)
    delta = tl.load(delta_ptr + pt, mask=pmask, other=0.0).to(ACC)
    q_ptrs = q_ptr + pid_b * sq_b + i * sq_h + j * sq_w
    g_ptrs = g_ptr + pid_b * sg_b + i * sg_h + j * sg_w
    k_ptr += pid_b * sk_b
    v_ptr += pid_b * sv_b

    gq = tl.full([BLOCK_P, BLOCK_D], 0.0, ACC)
    for p in range(K * K):
        ry, rx, inside = window_point(li, lj, p, H, W, K)
        k_ptrs = k_ptr + ry * sk_h + rx * sk_w
        s = channel_dot(q_ptrs, sq_c, pmask, k_ptrs, sk_c, inside, D, BLOCK_D, ACC, IDX)
        w = kernel_weight(s, stat, NORM)
        gw = channel_dot(g_ptrs, sg_c, pmask, v_ptr + ry * sv_h + rx * sv_w, sv_c, inside,
                         C, BLOCK_C, ACC, IDX)
        gs = score_grad(s, w, gw, delta, stat, NORM)
        if VALID:
            gs = tl.where(inside, gs, 0.0)
        gq += gs[:, None] * load_channels(k_ptrs, offs_d, sk_c, inside, dmask, ACC)

    store_channels(gq_ptr + pid_b * sgq_b + i * sgq_h + j * sgq_w, offs_d, sgq_c, gq, pmask,
                   dmask)


@triton.jit
def attention_bwd_k(
    g_ptr, q_ptr, k_ptr, v_ptr, stat_ptr, delta_ptr, gk_ptr,
    sg_b, sg_c, sg_h, sg_w,
    sq_b, sq_c, sq_h, sq_w,
    sk_b, sk_c, sk_h, sk_w,
    sv_b, sv_c, sv_h, sv_w,
    sgk_b, sgk_c, sgk_h, sgk_w,
    D, C, H, W, HO, WO, RH, RW,
    K: tl.constexpr, NORM: tl.constexpr,
    BLOCK_L: tl.constexpr, NC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
    ACC: tl.constexpr, IDX: tl.constexpr,
):
    """``dk[:, y, x] = sum dL/ds * q_{l'}`` over the (output point, window offset) pairs whose
    window point is ``(y, x)``, for the D block ``program_id(1)``. ``RH = cdiv(HO, H)``,
    ``RW = cdiv(WO, W)``, ``NC >= K * RW``: see ``_common.gather_tile``. The border does not
    matter: ``(y, x)`` is inside, outside points enter only through ``stat`` and ``delta``."""
    pid_l = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    y, x, jo, _, lanes = gather_tile(pid_l, H, W, WO, RW, K, BLOCK_L, NC, IDX)
    offs_d, dmask = channel_block(pid_d, D, BLOCK_D, IDX)
    k_ptrs = k_ptr + pid_b * sk_b + y * sk_h + x * sk_w
    v_ptrs = v_ptr + pid_b * sv_b + y * sv_h + x * sv_w
    q_ptr += pid_b * sq_b
    g_ptr += pid_b * sg_b
    stat_ptr += pid_b * HO * WO
    delta_ptr += pid_b * HO * WO

    acc = tl.full([BLOCK_L * NC, BLOCK_D], 0.0, ACC)
    for t in range(K * RH):  # row pairs (window row u, a-th output row)
        io, row_ok = source_rows(y, t // RH - K // 2, H, HO, t % RH)
        ok = lanes & row_ok
        stat = tl.load(stat_ptr + io * WO + jo, mask=ok, other=1.0).to(ACC)
        delta = tl.load(delta_ptr + io * WO + jo, mask=ok, other=0.0).to(ACC)
        q_ptrs = q_ptr + io * sq_h + jo * sq_w
        s = channel_dot(q_ptrs, sq_c, ok, k_ptrs, sk_c, ok, D, BLOCK_D, ACC, IDX)
        w = kernel_weight(s, stat, NORM)
        gw = channel_dot(g_ptr + io * sg_h + jo * sg_w, sg_c, ok, v_ptrs, sv_c, ok,
                         C, BLOCK_C, ACC, IDX)
        gs = score_grad(s, w, gw, delta, stat, NORM)  # finite on masked lanes; q reads 0 there
        acc += gs[:, None] * load_channels(q_ptrs, offs_d, sq_c, ok, dmask, ACC)

    store_gathered(acc, gk_ptr + pid_b * sgk_b, sgk_c, sgk_h, sgk_w, pid_l, offs_d, dmask, H, W,
                   BLOCK_L, NC, BLOCK_D, IDX)


@triton.jit
def attention_bwd_v(
    g_ptr, q_ptr, k_ptr, stat_ptr, gv_ptr,
    sg_b, sg_c, sg_h, sg_w,
    sq_b, sq_c, sq_h, sq_w,
    sk_b, sk_c, sk_h, sk_w,
    sgv_b, sgv_c, sgv_h, sgv_w,
    D, C, H, W, HO, WO, RH, RW,
    K: tl.constexpr, NORM: tl.constexpr,
    BLOCK_L: tl.constexpr, NC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
    ACC: tl.constexpr, IDX: tl.constexpr,
):
    """``dv[:, y, x] = sum w * grad_{l'}`` over the same pairs as ``attention_bwd_k``, for the
    C block ``program_id(1)``."""
    pid_l = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    y, x, jo, _, lanes = gather_tile(pid_l, H, W, WO, RW, K, BLOCK_L, NC, IDX)
    offs_c, cmask = channel_block(pid_c, C, BLOCK_C, IDX)
    k_ptrs = k_ptr + pid_b * sk_b + y * sk_h + x * sk_w
    q_ptr += pid_b * sq_b
    g_ptr += pid_b * sg_b
    stat_ptr += pid_b * HO * WO

    acc = tl.full([BLOCK_L * NC, BLOCK_C], 0.0, ACC)
    for t in range(K * RH):
        io, row_ok = source_rows(y, t // RH - K // 2, H, HO, t % RH)
        ok = lanes & row_ok
        stat = tl.load(stat_ptr + io * WO + jo, mask=ok, other=1.0).to(ACC)
        s = channel_dot(q_ptr + io * sq_h + jo * sq_w, sq_c, ok, k_ptrs, sk_c, ok,
                        D, BLOCK_D, ACC, IDX)
        w = kernel_weight(s, stat, NORM)  # finite on masked lanes; grad reads 0 there
        acc += w[:, None] * load_channels(g_ptr + io * sg_h + jo * sg_w, offs_c, sg_c, ok,
                                          cmask, ACC)

    store_gathered(acc, gv_ptr + pid_b * sgv_b, sgv_c, sgv_h, sgv_w, pid_l, offs_c, cmask, H, W,
                   BLOCK_L, NC, BLOCK_C, IDX)
