"""Device helpers shared by the kernels: tiles, the gathered geometry, channel dot products,
normalizers.

Conventions of every kernel in this package:

- a tensor comes as a pointer plus its four strides ``(b, c, h, w)``, so NCHW and
  channels_last inputs (and expanded gradients with zero strides) are read in place;
- spatial points are flattened row-major (``i * width + j``); lanes past the end are clamped
  onto point 0 (so they compute finite values) and masked at the stores;
- offsets within one batch sample have dtype ``IDX``: int32, or int64 when a tensor is too
  large for it (the launcher decides); the batch offset is always int64;
- ``ACC`` is the accumulation dtype: float32 for float16 / bfloat16 / float32 inputs, float64
  for float64 inputs;
- integer division only ever sees non-negative operands (Triton's ``//`` truncates on the GPU
  while the interpreter floors: they agree there).

Query-side kernels (one lane per output point) walk the ``K*K`` window in a loop. Gathered
kernels (``dk``, ``dv``: one result per low-resolution point) give each point ``NC`` lanes, one
per *column* pair ``(window column w, source column b)``, and loop over the row pairs: see
``gather_tile`` and ``source_rows``. Their accumulators are reduced over the ``NC`` lanes once,
at the end (``reduce_pairs``), in a fixed order: no atomics anywhere.
"""
import triton
import triton.language as tl

from sapa.ops import _normalizers as nz

# normalizer codes (``NORM`` constexpr), as ``sapa.ops._normalizers.CODES``
SOFTMAX = tl.constexpr(nz.SOFTMAX)
RELU = tl.constexpr(nz.RELU)
SIGMOID = tl.constexpr(nz.SIGMOID)
SOFTPLUS = tl.constexpr(nz.SOFTPLUS)
NONE = tl.constexpr(nz.NONE)
# running-max start of the online softmax: finite, so exp(m_old - m_new) is never exp(-inf + inf)
NEG_BIG = tl.constexpr(-1e30)

# The kernels call Triton builtins (tl.full, tl.reduce, ...), never the @triton.jit functions of
# triton.language.standard (tl.zeros, tl.sum, ...): those are compiled or interpreted according
# to TRITON_INTERPRET when triton itself was imported, and an interpreted kernel cannot call a
# compiled function. Sums reduce with tl.sum's own combine function, which the interpreter
# recognises (and replaces by numpy) and the compiler lowers exactly as tl.sum.


@triton.jit
def block_points(pid, n, width, BLOCK: tl.constexpr, IDX: tl.constexpr):
    """Rows, columns of the ``BLOCK`` flattened points of block ``pid`` of an ``n``-point map,
    and the lanes that hold a real point."""
    offs = pid.to(IDX) * BLOCK + tl.arange(0, BLOCK).to(IDX)
    mask = offs < n
    offs = tl.where(mask, offs, 0)
    return offs // width, offs % width, mask


@triton.jit
def projective(i, j, H, W, HO, WO):
    """Low-resolution point ``(floor(i * H / HO), floor(j * W / WO))`` of output point
    ``(i, j)``: the centre of its window."""
    return i * H // HO, j * W // WO


@triton.jit
def window_point(li, lj, p, H, W, K: tl.constexpr):
    """Row, column of window point ``p`` (row-major in the ``K x K`` window) around
    ``(li, lj)``, and whether it lies inside the ``H x W`` map."""
    ry = li + (p // K - K // 2)
    rx = lj + (p % K - K // 2)
    return ry, rx, (ry >= 0) & (ry < H) & (rx >= 0) & (rx < W)


@triton.jit
def channel_block(pid, N, BLOCK: tl.constexpr, IDX: tl.constexpr):
    """Channels ``pid * BLOCK ...`` of block ``pid``, and which of them are ``< N``."""
    offs = (pid * BLOCK + tl.arange(0, BLOCK)).to(IDX)
    return offs, offs < N


@triton.jit
def load_channels(ptrs, offs, stride, mask, n_mask, ACC: tl.constexpr):
    """``[lanes, channels]`` tile ``ptrs[lane] + offs[n] * stride`` as ``ACC`` (0 where a lane
    or a channel is masked)."""
    return tl.load(ptrs[:, None] + offs[None, :] * stride,
                   mask=mask[:, None] & n_mask[None, :], other=0.0).to(ACC)


@triton.jit
def store_channels(ptrs, offs, stride, value, mask, n_mask):
    """Store the ``[lanes, channels]`` tile ``value`` at ``ptrs[lane] + offs[n] * stride`` in
    the pointers' dtype."""
    tl.store(ptrs[:, None] + offs[None, :] * stride, value.to(ptrs.dtype.element_ty),
             mask=mask[:, None] & n_mask[None, :])


@triton.jit
def source_rows(y, u, H, HO, a):
    """The ``a``-th output row whose window holds low-resolution row ``y`` at offset ``u``,
    and whether it exists.

    Output row ``i'`` has projective row ``floor(i' * H / HO)``; those with projective row
    ``ly = y - u`` are ``ceil(ly * HO / H) <= i' < ceil((ly + 1) * HO / H)``: at most
    ``cdiv(HO, H)`` of them, so ``a`` runs over ``range(cdiv(HO, H))`` and the mask drops the
    rest. Used for columns too.
    """
    ly = y - u
    ok = (ly >= 0) & (ly < H)
    ly = tl.minimum(tl.maximum(ly, 0), H - 1)
    first = (ly * HO + H - 1) // H
    end = ((ly + 1) * HO + H - 1) // H
    i = first + a
    return tl.where(ok & (i < end), i, 0), ok & (i < end)


@triton.jit
def gather_tile(pid, H, W, WO, RW, K: tl.constexpr, BLOCK_L: tl.constexpr, NC: tl.constexpr,
                IDX: tl.constexpr):
    """Lanes of a gathered kernel: ``BLOCK_L`` low-resolution points x ``NC`` column pairs.

    Lane ``(l, c)`` with ``c = (w + r) * RW + b`` stands for the ``b``-th output column whose
    window holds column ``x`` at offset ``w`` (``RW = cdiv(WO, W)``, ``NC >= K * RW``).
    Returns the point's row ``y`` and column ``x``, the output column, the window column
    offset ``w``, and the lanes that are real (point inside the map, pair that exists).
    """
    r = tl.arange(0, BLOCK_L * NC).to(IDX)
    pt = pid.to(IDX) * BLOCK_L + r // NC
    c = r % NC
    mask = (pt < H * W) & (c < K * RW)
    pt = tl.where(mask, pt, 0)
    c = tl.where(mask, c, 0)
    w = c // RW - K // 2
    jo, col_ok = source_rows(pt % W, w, W, WO, c % RW)
    return pt // W, pt % W, jo, w, mask & col_ok


@triton.jit
def reduce_pairs(acc, BLOCK_L: tl.constexpr, NC: tl.constexpr, BLOCK_N: tl.constexpr):
    """``[BLOCK_L * NC, BLOCK_N]`` per-lane sums -> ``[BLOCK_L, BLOCK_N]`` per-point sums."""
    return tl.reduce(tl.reshape(acc, (BLOCK_L, NC, BLOCK_N)), 1, tl.standard._sum_combine)


@triton.jit
def store_gathered(acc, ptr, s_c, s_h, s_w, pid_l, offs, n_mask, H, W,
                   BLOCK_L: tl.constexpr, NC: tl.constexpr, BLOCK_N: tl.constexpr,
                   IDX: tl.constexpr):
    """Reduce a gathered kernel's ``[BLOCK_L * NC, BLOCK_N]`` lanes per point and store them at
    the block's low-resolution points (``ptr``: the batch sample's channel 0)."""
    total = reduce_pairs(acc, BLOCK_L, NC, BLOCK_N)
    y, x, lmask = block_points(pid_l, H * W, W, BLOCK_L, IDX)
    store_channels(ptr + y * s_h + x * s_w, offs, s_c, total, lmask, n_mask)


@triton.jit
def channel_dot(a_ptrs, a_sc, a_mask, b_ptrs, b_sc, b_mask, N,
                BLOCK_N: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr):
    """``sum_n a[lane, n] * b[lane, n]`` over ``N`` channels, in chunks of ``BLOCK_N``.

    ``a_ptrs`` / ``b_ptrs``: per-lane pointers to channel 0; ``*_sc``: channel strides;
    ``*_mask``: lanes to read (the others count as zero).
    """
    acc = tl.full(a_mask.shape, 0.0, ACC)
    for n0 in range(0, N, BLOCK_N):
        offs_n = (n0 + tl.arange(0, BLOCK_N)).to(IDX)
        n_mask = offs_n < N
        a = load_channels(a_ptrs, offs_n, a_sc, a_mask, n_mask, ACC)
        b = load_channels(b_ptrs, offs_n, b_sc, b_mask, n_mask, ACC)
        acc += tl.reduce(a * b, 1, tl.standard._sum_combine)
    return acc


@triton.jit
def sigmoid(s):
    return 1.0 / (1.0 + tl.exp(-s))


@triton.jit
def h_of(s, NORM: tl.constexpr):
    """``h(s)`` of the relu / sigmoid / softplus normalizers (nan stays nan, as in torch)."""
    if NORM == RELU:
        return tl.where(s <= 0.0, 0.0, s)
    elif NORM == SIGMOID:
        return sigmoid(s)
    else:
        # softplus = max(s, 0) + log1p(exp(-|s|)); log1p(z) = log(1 + z) * z / ((1 + z) - 1)
        # keeps the digits that log(1 + z) loses when 1 + z rounds (z tiny)
        z = tl.exp(-tl.abs(s))
        one_z = 1.0 + z
        den = one_z - 1.0
        log1p_z = tl.where(den == 0.0, z, tl.log(one_z) * (z / tl.where(den == 0.0, 1.0, den)))
        return tl.maximum(s, 0.0) + log1p_z


@triton.jit
def kernel_weight(s, stat, NORM: tl.constexpr):
    """Kernel weight ``w_p`` of score ``s`` from the forward's per-point statistic
    (softmax: ``exp(s - logsumexp)``; relu / sigmoid / softplus: ``h(s) / (sum h + eps)``;
    none: ``s``)."""
    if NORM == SOFTMAX:
        return tl.exp(s - stat)
    elif NORM == NONE:
        return s
    else:
        return h_of(s, NORM) / stat


@triton.jit
def score_grad(s, w, grad_w, delta, stat, NORM: tl.constexpr):
    """``dL/ds_p`` from ``dL/dw_p``; ``delta = sum_p w_p dL/dw_p = <dL/dout, out>``. relu
    *selects*, as autograd's ``threshold_backward``: 0 where ``relu(s) <= 0`` (a nan score
    passes the gradient), rather than multiplying by 0 (``nan * 0`` would be ``nan``)."""
    if NORM == SOFTMAX:
        return w * (grad_w - delta)
    elif NORM == NONE:
        return grad_w
    elif NORM == RELU:
        return tl.where(s <= 0.0, 0.0, (grad_w - delta) / stat)
    elif NORM == SIGMOID:
        sg = sigmoid(s)
        return (grad_w - delta) / stat * (sg * (1.0 - sg))
    else:  # softplus' = sigmoid
        return (grad_w - delta) / stat * sigmoid(s)
