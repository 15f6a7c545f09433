"""The ``local_similarity`` primitive: scores of every output point against its window.

Shapes: ``q`` ``B x D x HO x WO``, ``k`` ``B x D x H x W``, scores / their gradient
``ds`` ``B x K*K x HO x WO`` (index ``p = (u + r) * K + (w + r)``).

- ``similarity_fwd``, grid (output-point blocks, B): ``s_p = <q, k_p>`` for every ``p``;
  ``VALID`` writes ``-inf`` at window points outside the map (``"zeros"``: 0, since ``k = 0``).
- ``similarity_bwd_q``, grid (output-point blocks, D blocks, B): ``dq = sum_p ds_p * k_p``.
  Under ``"zeros"`` an outside point counts with ``k = 0`` (so a nan or inf ``ds_p`` there
  gives nan, as in the reference); under ``"valid"`` its ``ds_p`` is not read (its score is a
  constant ``-inf``).
- ``similarity_bwd_k``, grid (low-resolution blocks, D blocks, B): ``dk`` gathered over the
  output points whose windows hold each point (``_common.gather_tile``).
"""
import triton
import triton.language as tl

from ._common import (
    block_points,
    channel_block,
    channel_dot,
    gather_tile,
    load_channels,
    projective,
    source_rows,
    store_channels,
    store_gathered,
    window_point,
)


@triton.jit
def similarity_fwd(
    q_ptr, k_ptr, s_ptr,
    sq_b, sq_c, sq_h, sq_w,
    sk_b, sk_c, sk_h, sk_w,
    ss_b, ss_c, ss_h, ss_w,
    D, H, W, HO, WO,
    K: tl.constexpr, VALID: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr,
):
    pid_b = tl.program_id(1).to(tl.int64)
    i, j, pmask = block_points(tl.program_id(0), HO * WO, WO, BLOCK_P, IDX)
    li, lj = projective(i, j, H, W, HO, WO)
    q_ptrs = q_ptr + pid_b * sq_b + i * sq_h + j * sq_w
    s_ptrs = s_ptr + pid_b * ss_b + i * ss_h + j * ss_w
    k_ptr += pid_b * sk_b
    for p in range(K * K):
        ry, rx, inside = window_point(li, lj, p, H, W, K)
        s = channel_dot(q_ptrs, sq_c, pmask, k_ptr + ry * sk_h + rx * sk_w, sk_c, inside,
                        D, BLOCK_D, ACC, IDX)
        if VALID:
            s = tl.where(inside, s, float("-inf"))
        tl.store(s_ptrs + p * ss_c, s.to(s_ptr.dtype.element_ty), mask=pmask)


@triton.jit
def similarity_bwd_q(
    g_ptr, k_ptr, gq_ptr,
    sg_b, sg_c, sg_h, sg_w,
    sk_b, sk_c, sk_h, sk_w,
    sgq_b, sgq_c, sgq_h, sgq_w,
    D, H, W, HO, WO,
    K: tl.constexpr, VALID: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr,
):
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    i, j, pmask = block_points(tl.program_id(0), HO * WO, WO, BLOCK_P, IDX)
    li, lj = projective(i, j, H, W, HO, WO)
    offs_d, dmask = channel_block(pid_d, D, BLOCK_D, IDX)
    g_ptrs = g_ptr + pid_b * sg_b + i * sg_h + j * sg_w
    k_ptr += pid_b * sk_b
    gq = tl.full([BLOCK_P, BLOCK_D], 0.0, ACC)
    for p in range(K * K):
        ry, rx, inside = window_point(li, lj, p, H, W, K)
        ok = pmask & inside
        if VALID:
            ds = tl.load(g_ptrs + p * sg_c, mask=ok, other=0.0).to(ACC)
        else:
            ds = tl.load(g_ptrs + p * sg_c, mask=pmask, other=0.0).to(ACC)
        gq += ds[:, None] * load_channels(k_ptr + ry * sk_h + rx * sk_w, offs_d, sk_c, ok,
                                          dmask, ACC)
    store_channels(gq_ptr + pid_b * sgq_b + i * sgq_h + j * sgq_w, offs_d, sgq_c, gq, pmask,
                   dmask)


@triton.jit
def similarity_bwd_k(
    g_ptr, q_ptr, gk_ptr,
    sg_b, sg_c, sg_h, sg_w,
    sq_b, sq_c, sq_h, sq_w,
    sgk_b, sgk_c, sgk_h, sgk_w,
    D, H, W, HO, WO, RH, RW,
    K: tl.constexpr,
    BLOCK_L: tl.constexpr, NC: tl.constexpr, BLOCK_D: tl.constexpr,
    ACC: tl.constexpr, IDX: tl.constexpr,
):
    """``dk[:, y, x] = sum ds_p[l'] * q_{l'}`` over the pairs ``(l', p)`` whose window point is
    ``(y, x)`` (see ``attention.attention_bwd_k``)."""
    pid_l = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    y, _, jo, w, lanes = gather_tile(pid_l, H, W, WO, RW, K, BLOCK_L, NC, IDX)
    offs_d, dmask = channel_block(pid_d, D, BLOCK_D, IDX)
    q_ptr += pid_b * sq_b
    g_ptr += pid_b * sg_b
    acc = tl.full([BLOCK_L * NC, BLOCK_D], 0.0, ACC)
    for t in range(K * RH):
        u = t // RH - K // 2
        io, row_ok = source_rows(y, u, H, HO, t % RH)
        ok = lanes & row_ok
        p = (u + K // 2) * K + (w + K // 2)
        ds = tl.load(g_ptr + io * sg_h + jo * sg_w + p * sg_c, mask=ok, other=0.0).to(ACC)
        acc += ds[:, None] * load_channels(q_ptr + io * sq_h + jo * sq_w, offs_d, sq_c, ok,
                                           dmask, ACC)
    store_gathered(acc, gk_ptr + pid_b * sgk_b, sgk_c, sgk_h, sgk_w, pid_l, offs_d, dmask, H, W,
                   BLOCK_L, NC, BLOCK_D, IDX)
