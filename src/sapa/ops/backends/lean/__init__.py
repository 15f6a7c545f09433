"""The memory-lean backend: pure PyTorch, one window offset (or sampling point) at a time.

It never holds a ``K*K x C x H' x W'`` tensor. The forward gathers one ``C x H' x W'`` slice
of the window per offset; it keeps for the backward only the per-point statistic of
``sapa.ops._normalizers``, and the backward recomputes each offset's score and kernel weight
in a single loop. Half-precision inputs are computed in float32. It runs wherever PyTorch
does: the automatic choice falls back to it.

It implements both families of ``sapa.ops.backends.Backend``; the sampled one (SAPA-D) is in
``sampled.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import _normalizers as nz
from ..._dtypes import compute_dtype
from ..._geometry import projective_index
from .sampled import sampled_bwd, sampled_fwd  # noqa: F401  (the protocol's sampled family)

NAME = "lean"
FAMILIES = ("window", "sampled")


def can_run(*tensors, automatic: bool = False) -> str | None:
    return None  # pure PyTorch: runs wherever PyTorch does


class _Window:
    """Where window point ``(iu, iw)`` of every output row / column lies in the padded map."""

    def __init__(self, h, w, out_size, kernel_size, device):
        r = kernel_size // 2
        self.r, self.k, self.h, self.w = r, kernel_size, h, w
        self.out_size = tuple(out_size)
        rows = projective_index(out_size[0], h, device) + r
        cols = projective_index(out_size[1], w, device) + r
        self.rows = [rows + u for u in range(-r, r + 1)]
        self.cols = [cols + u for u in range(-r, r + 1)]
        self.rows_in = [((i >= r) & (i < h + r))[:, None] for i in self.rows]  # H' x 1
        self.cols_in = [((i >= r) & (i < w + r))[None, :] for i in self.cols]  # 1 x W'

    def inside(self, iu, iw):
        """``H' x W'`` bool: is window point ``(iu, iw)`` inside the unpadded map?"""
        return self.rows_in[iu] & self.cols_in[iw]

    def inside_all(self):
        """``1 x K*K x H' x W'`` bool."""
        m = [self.inside(iu, iw) for iu in range(self.k) for iw in range(self.k)]
        return torch.stack(m)[None]

    def pad(self, x):
        r = self.r
        return F.pad(x, (r, r, r, r)) if r else x

    def unpad(self, x):
        r = self.r
        return x[:, :, r : r + self.h, r : r + self.w] if r else x

    def padded_zeros(self, like, channels):
        return like.new_zeros(like.shape[0], channels, self.h + 2 * self.r, self.w + 2 * self.r)

    def row_zeros(self, like, channels):
        return like.new_zeros(like.shape[0], channels, self.out_size[0], self.w + 2 * self.r)


def _scores(q, k, win):
    """``B x K*K x H' x W'`` raw scores (border "zeros": outside points score 0)."""
    kpad = win.pad(k)
    out = []
    for rows in win.rows:
        kr = kpad.index_select(2, rows)
        for cols in win.cols:
            out.append((q * kr.index_select(3, cols)).sum(dim=1))
    return torch.stack(out, dim=1)


def _assemble(kernels, v, win):
    vpad = win.pad(v)
    out = kernels.new_zeros(kernels.shape[0], v.shape[1], *win.out_size)
    p = 0
    for rows in win.rows:
        vr = vpad.index_select(2, rows)
        for cols in win.cols:
            out.addcmul_(kernels[:, p : p + 1], vr.index_select(3, cols))
            p += 1
    return out


def _assemble_bwd(grad, kernels, v, win):
    """Gradients of ``_assemble`` w.r.t. the kernels and the values."""
    vpad = win.pad(v)
    gkern = torch.empty_like(kernels)
    gv = win.padded_zeros(v, v.shape[1])
    p = 0
    for rows in win.rows:
        vr = vpad.index_select(2, rows)
        acc = win.row_zeros(v, v.shape[1])
        for cols in win.cols:
            gkern[:, p] = (grad * vr.index_select(3, cols)).sum(dim=1)
            acc.index_add_(3, cols, kernels[:, p : p + 1] * grad)
            p += 1
        gv.index_add_(2, rows, acc)
    return gkern, win.unpad(gv)


def _similarity_bwd(grad, q, k, win):
    kpad = win.pad(k)
    gq = torch.zeros_like(q)
    gk = win.padded_zeros(k, k.shape[1])
    p = 0
    for rows in win.rows:
        kr = kpad.index_select(2, rows)
        acc = win.row_zeros(k, k.shape[1])
        for cols in win.cols:
            gs = grad[:, p : p + 1]
            gq.addcmul_(gs, kr.index_select(3, cols))
            acc.index_add_(3, cols, gs * q)
            p += 1
        gk.index_add_(2, rows, acc)
    return gq, win.unpad(gk)


def _to(dtype, *ts):
    return [t.to(dtype) for t in ts]


def attention_fwd(q, k, v, kernel_size, normalizer, border):
    """Returns ``(out, stat)``: ``B x C x H' x W'`` in the input dtype, ``B x H' x W'``."""
    cd = compute_dtype(q.dtype)
    qc, kc, vc = _to(cd, q, k, v)
    win = _Window(k.shape[2], k.shape[3], q.shape[-2:], kernel_size, q.device)
    inside = win.inside_all() if border == "valid" else None
    scores = _scores(qc, kc, win)
    stat = nz.stat(scores, normalizer, inside)
    kernels = torch.stack(
        [nz.kernel(scores[:, p], stat, normalizer, None if inside is None else inside[:, p])
         for p in range(scores.shape[1])], dim=1)
    return _assemble(kernels, vc, win).to(v.dtype), stat


def attention_bwd(grad_out, q, k, v, out, stat, kernel_size, normalizer, border):
    """Returns ``(grad_q, grad_k, grad_v)``; recomputes every kernel weight from ``stat``."""
    cd = compute_dtype(q.dtype)
    g, qc, kc, vc, oc = _to(cd, grad_out, q, k, v, out)
    win = _Window(k.shape[2], k.shape[3], q.shape[-2:], kernel_size, q.device)
    stat = stat[:, None].to(cd)
    delta = (g * oc).sum(dim=1, keepdim=True)
    kpad, vpad = win.pad(kc), win.pad(vc)
    gq = torch.zeros_like(qc)
    gk = win.padded_zeros(kc, kc.shape[1])
    gv = win.padded_zeros(vc, vc.shape[1])
    for iu, rows in enumerate(win.rows):
        kr, vr = kpad.index_select(2, rows), vpad.index_select(2, rows)
        acc_k, acc_v = win.row_zeros(kc, kc.shape[1]), win.row_zeros(vc, vc.shape[1])
        for iw, cols in enumerate(win.cols):
            kp, vp = kr.index_select(3, cols), vr.index_select(3, cols)
            inside = win.inside(iu, iw) if border == "valid" else None
            s = (qc * kp).sum(dim=1, keepdim=True)
            w = nz.kernel(s, stat, normalizer, inside)
            gw = (g * vp).sum(dim=1, keepdim=True)
            gs = nz.score_grad(s, w, gw, delta, stat, normalizer, inside)
            gq.addcmul_(gs, kp)
            acc_k.index_add_(3, cols, gs * qc)
            acc_v.index_add_(3, cols, w * g)
        gk.index_add_(2, rows, acc_k)
        gv.index_add_(2, rows, acc_v)
    return gq.to(q.dtype), win.unpad(gk).to(k.dtype), win.unpad(gv).to(v.dtype)


def similarity_fwd(q, k, kernel_size, border):
    cd = compute_dtype(q.dtype)
    qc, kc = _to(cd, q, k)
    win = _Window(k.shape[2], k.shape[3], q.shape[-2:], kernel_size, q.device)
    scores = _scores(qc, kc, win)
    if border == "valid":
        scores = scores.masked_fill(~win.inside_all(), float("-inf"))
    return scores.to(q.dtype)


def similarity_bwd(grad, q, k, kernel_size, border):
    cd = compute_dtype(q.dtype)
    gc, qc, kc = _to(cd, grad, q, k)
    win = _Window(k.shape[2], k.shape[3], q.shape[-2:], kernel_size, q.device)
    if border == "valid":  # the -inf scores outside the map are constants
        gc = torch.where(win.inside_all(), gc, 0.0)
    gq, gk = _similarity_bwd(gc, qc, kc, win)
    return gq.to(q.dtype), gk.to(k.dtype)


def assemble_fwd(kernels, v, kernel_size, border):
    cd = compute_dtype(v.dtype)
    kc, vc = _to(cd, kernels, v)
    win = _Window(v.shape[2], v.shape[3], kernels.shape[-2:], kernel_size, v.device)
    return _assemble(kc, vc, win).to(v.dtype)


def assemble_bwd(grad, kernels, v, kernel_size, border):
    cd = compute_dtype(v.dtype)
    gc, kc, vc = _to(cd, grad, kernels, v)
    win = _Window(v.shape[2], v.shape[3], kernels.shape[-2:], kernel_size, v.device)
    gkern, gv = _assemble_bwd(gc, kc, vc, win)
    return gkern.to(kernels.dtype), gv.to(v.dtype)
