"""The memory-lean backend: pure PyTorch, one window offset at a time.

It never holds a ``K*K x C x H' x W'`` tensor: the forward loops over the ``K*K`` offsets,
gathering one ``C x H' x W'`` slice of the window at a time, and autograd is written by hand so
that nothing per offset is saved. What it keeps for the backward is the inputs plus the
``B x K*K x H' x W'`` scores and kernels. Half-precision inputs are computed in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _normalizers
from ._geometry import projective_index

NAME = "lean"


def can_run(*tensors) -> str | None:
    return None  # pure PyTorch: runs wherever PyTorch does


class _Windows:
    """Padded-map indices of window point ``(iu, iw)`` for every output row / column."""

    def __init__(self, h, w, out_size, kernel_size, device):
        self.k = kernel_size
        r = kernel_size // 2
        self.r = r
        self.h, self.w = h, w
        self.out_size = tuple(out_size)
        rows = projective_index(out_size[0], h, device) + r
        cols = projective_index(out_size[1], w, device) + r
        self.rows = [rows + u for u in range(-r, r + 1)]
        self.cols = [cols + u for u in range(-r, r + 1)]

    def inside(self, device):
        """``1 x K*K x H' x W'`` bool: window points that fall inside the unpadded map."""
        r = self.r
        rin = torch.stack([(i >= r) & (i < self.h + r) for i in self.rows])  # K x H'
        cin = torch.stack([(i >= r) & (i < self.w + r) for i in self.cols])  # K x W'
        m = rin[:, None, :, None] & cin[None, :, None, :]  # K x K x H' x W'
        return m.reshape(1, self.k * self.k, *self.out_size).to(device)

    def pad(self, x):
        r = self.r
        return F.pad(x, (r, r, r, r)) if r else x

    def unpad(self, x):
        r = self.r
        return x[:, :, r : r + self.h, r : r + self.w] if r else x

    def gather(self, xpad):
        """Yield ``(p, slice)`` with ``slice[b, c, i', j'] = x[b, c, l(i') + u, l(j') + w]``."""
        p = 0
        for rows in self.rows:
            xr = xpad.index_select(2, rows)
            for cols in self.cols:
                yield p, xr.index_select(3, cols)
                p += 1

    def scatter(self, slices, shape, dtype, device):
        """Adjoint of ``gather``: sum ``slices(p)`` (each ``B x C x H' x W'``) into the padded map."""
        b, c = shape
        out = torch.zeros(b, c, self.h + 2 * self.r, self.w + 2 * self.r, dtype=dtype, device=device)
        p = 0
        for rows in self.rows:
            acc = torch.zeros(b, c, self.out_size[0], out.shape[3], dtype=dtype, device=device)
            for cols in self.cols:
                acc.index_add_(3, cols, slices(p))
                p += 1
            out.index_add_(2, rows, acc)
        return self.unpad(out)


def _compute_dtype(t):
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _scores(q, kpad, win):
    b, _, hq, wq = q.shape
    scores = q.new_empty(b, win.k * win.k, hq, wq)
    for p, kp in win.gather(kpad):
        scores[:, p] = (q * kp).sum(dim=1)
    return scores


def _assemble(kernels, vpad, win, channels):
    b, _, hq, wq = kernels.shape
    out = kernels.new_zeros(b, channels, hq, wq)
    for p, vp in win.gather(vpad):
        out.addcmul_(kernels[:, p : p + 1], vp)
    return out


def _grad_kernels(grad_out, vpad, win):
    b, _, hq, wq = grad_out.shape
    gk = grad_out.new_empty(b, win.k * win.k, hq, wq)
    for p, vp in win.gather(vpad):
        gk[:, p] = (grad_out * vp).sum(dim=1)
    return gk


def _grad_q(grad_scores, kpad, win, d):
    b, _, hq, wq = grad_scores.shape
    gq = grad_scores.new_zeros(b, d, hq, wq)
    for p, kp in win.gather(kpad):
        gq.addcmul_(grad_scores[:, p : p + 1], kp)
    return gq


def _grad_low(weights, high, win):
    """``sum_p scatter_p(weights[:, p] * high)``: the gradient reaching the low-res map."""
    b, c = high.shape[:2]
    return win.scatter(lambda p: weights[:, p : p + 1] * high, (b, c), high.dtype, high.device)


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kernel_size, normalizer, border):
        out_dtype = v.dtype
        cd = _compute_dtype(q)
        q, k, v = q.to(cd), k.to(cd), v.to(cd)
        win = _Windows(k.shape[2], k.shape[3], q.shape[-2:], kernel_size, q.device)
        inside = win.inside(q.device) if border == "valid" else None
        scores = _scores(q, win.pad(k), win)
        kernels = _normalizers.normalize(scores, normalizer, inside)
        out = _assemble(kernels, win.pad(v), win, v.shape[1])
        ctx.save_for_backward(q, k, v, scores, kernels)
        ctx.win, ctx.normalizer, ctx.inside = win, normalizer, inside
        return out.to(out_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, scores, kernels = ctx.saved_tensors
        win = ctx.win
        g = grad_out.to(q.dtype)
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        gq = gk = gv = None
        if need_v:
            gv = _grad_low(kernels, g, win).to(grad_out.dtype)
        if need_q or need_k:
            gkern = _grad_kernels(g, win.pad(v), win)
            gs = _normalizers.normalize_backward(gkern, kernels, scores, ctx.normalizer, ctx.inside)
            if need_q:
                gq = _grad_q(gs, win.pad(k), win, q.shape[1]).to(grad_out.dtype)
            if need_k:
                gk = _grad_low(gs, q, win).to(grad_out.dtype)
        return gq, gk, gv, None, None, None


class _Similarity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, kernel_size, border):
        out_dtype = q.dtype
        cd = _compute_dtype(q)
        q, k = q.to(cd), k.to(cd)
        win = _Windows(k.shape[2], k.shape[3], q.shape[-2:], kernel_size, q.device)
        scores = _scores(q, win.pad(k), win)
        inside = None
        if border == "valid":
            inside = win.inside(q.device)
            scores = scores.masked_fill(~inside, float("-inf"))
        ctx.save_for_backward(q, k)
        ctx.win, ctx.inside = win, inside
        return scores.to(out_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_scores):
        q, k = ctx.saved_tensors
        win = ctx.win
        gs = grad_scores.to(q.dtype)
        if ctx.inside is not None:
            gs = gs * ctx.inside
        gq = gk = None
        if ctx.needs_input_grad[0]:
            gq = _grad_q(gs, win.pad(k), win, q.shape[1]).to(grad_scores.dtype)
        if ctx.needs_input_grad[1]:
            gk = _grad_low(gs, q, win).to(grad_scores.dtype)
        return gq, gk, None, None


class _Assemble(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels, v, kernel_size, border):
        out_dtype = v.dtype
        cd = _compute_dtype(v)
        kernels, v = kernels.to(cd), v.to(cd)
        win = _Windows(v.shape[2], v.shape[3], kernels.shape[-2:], kernel_size, v.device)
        out = _assemble(kernels, win.pad(v), win, v.shape[1])
        ctx.save_for_backward(kernels, v)
        ctx.win = win
        return out.to(out_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        kernels, v = ctx.saved_tensors
        win = ctx.win
        g = grad_out.to(v.dtype)
        gkern = gv = None
        if ctx.needs_input_grad[0]:
            gkern = _grad_kernels(g, win.pad(v), win).to(grad_out.dtype)
        if ctx.needs_input_grad[1]:
            gv = _grad_low(kernels, g, win).to(grad_out.dtype)
        return gkern, gv, None, None


def sapa_attention(q, k, v, kernel_size, normalizer, border):
    return _Attention.apply(q, k, v, kernel_size, normalizer, border)


def local_similarity(q, k, kernel_size, border):
    return _Similarity.apply(q, k, kernel_size, border)


def local_assemble(kernels, v, kernel_size, border):
    return _Assemble.apply(kernels, v, kernel_size, border)
