"""The ``local_assemble`` primitive: reassemble values with given per-point kernels.

Shapes: ``kernels`` (``a``) ``B x K*K x HO x WO``, ``v`` ``B x C x H x W``, ``out`` / ``grad``
``B x C x HO x WO``. Outside points hold ``v = 0``, so the border plays no part.

- ``assemble_fwd``, grid (output-point blocks, C blocks, B): ``out = sum_p a_p * v_p``.
- ``assemble_bwd_kernels``, grid (output-point blocks, B): ``da_p = <grad, v_p>`` (0 outside).
- ``assemble_bwd_v``, grid (low-resolution blocks, C blocks, B): ``dv`` gathered over the
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
def assemble_fwd(
    a_ptr, v_ptr, out_ptr,
    sa_b, sa_c, sa_h, sa_w,
    sv_b, sv_c, sv_h, sv_w,
    so_b, so_c, so_h, so_w,
    C, H, W, HO, WO,
    K: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr,
):
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    i, j, pmask = block_points(tl.program_id(0), HO * WO, WO, BLOCK_P, IDX)
    li, lj = projective(i, j, H, W, HO, WO)
    offs_c, cmask = channel_block(pid_c, C, BLOCK_C, IDX)
    a_ptrs = a_ptr + pid_b * sa_b + i * sa_h + j * sa_w
    v_ptr += pid_b * sv_b
    acc = tl.full([BLOCK_P, BLOCK_C], 0.0, ACC)
    for p in range(K * K):
        ry, rx, inside = window_point(li, lj, p, H, W, K)
        a = tl.load(a_ptrs + p * sa_c, mask=pmask, other=0.0).to(ACC)
        acc += a[:, None] * load_channels(v_ptr + ry * sv_h + rx * sv_w, offs_c, sv_c,
                                          pmask & inside, cmask, ACC)
    store_channels(out_ptr + pid_b * so_b + i * so_h + j * so_w, offs_c, so_c, acc, pmask, cmask)


@triton.jit
def assemble_bwd_kernels(
    g_ptr, v_ptr, ga_ptr,
    sg_b, sg_c, sg_h, sg_w,
    sv_b, sv_c, sv_h, sv_w,
    sga_b, sga_c, sga_h, sga_w,
    C, H, W, HO, WO,
    K: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr,
):
    pid_b = tl.program_id(1).to(tl.int64)
    i, j, pmask = block_points(tl.program_id(0), HO * WO, WO, BLOCK_P, IDX)
    li, lj = projective(i, j, H, W, HO, WO)
    g_ptrs = g_ptr + pid_b * sg_b + i * sg_h + j * sg_w
    ga_ptrs = ga_ptr + pid_b * sga_b + i * sga_h + j * sga_w
    v_ptr += pid_b * sv_b
    for p in range(K * K):
        ry, rx, inside = window_point(li, lj, p, H, W, K)
        ga = channel_dot(g_ptrs, sg_c, pmask, v_ptr + ry * sv_h + rx * sv_w, sv_c, pmask & inside,
                         C, BLOCK_C, ACC, IDX)
        tl.store(ga_ptrs + p * sga_c, ga.to(ga_ptr.dtype.element_ty), mask=pmask)


@triton.jit
def assemble_bwd_v(
    g_ptr, a_ptr, gv_ptr,
    sg_b, sg_c, sg_h, sg_w,
    sa_b, sa_c, sa_h, sa_w,
    sgv_b, sgv_c, sgv_h, sgv_w,
    C, H, W, HO, WO, RH, RW,
    K: tl.constexpr,
    BLOCK_L: tl.constexpr, NC: tl.constexpr, BLOCK_C: tl.constexpr,
    ACC: tl.constexpr, IDX: tl.constexpr,
):
    """``dv[:, y, x] = sum a_p[l'] * grad_{l'}`` over the pairs ``(l', p)`` whose window point
    is ``(y, x)`` (see ``attention.attention_bwd_k``)."""
    pid_l = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    y, _, jo, w, lanes = gather_tile(pid_l, H, W, WO, RW, K, BLOCK_L, NC, IDX)
    offs_c, cmask = channel_block(pid_c, C, BLOCK_C, IDX)
    a_ptr += pid_b * sa_b
    g_ptr += pid_b * sg_b
    acc = tl.full([BLOCK_L * NC, BLOCK_C], 0.0, ACC)
    for t in range(K * RH):
        u = t // RH - K // 2
        io, row_ok = source_rows(y, u, H, HO, t % RH)
        ok = lanes & row_ok
        p = (u + K // 2) * K + (w + K // 2)
        a = tl.load(a_ptr + io * sa_h + jo * sa_w + p * sa_c, mask=ok, other=0.0).to(ACC)
        acc += a[:, None] * load_channels(g_ptr + io * sg_h + jo * sg_w, offs_c, sg_c, ok,
                                          cmask, ACC)
    store_gathered(acc, gv_ptr + pid_b * sgv_b, sgv_c, sgv_h, sgv_w, pid_l, offs_c, cmask, H, W,
                   BLOCK_L, NC, BLOCK_C, IDX)
