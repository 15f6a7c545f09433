"""The reference backend: unfold + einsum, written to be obviously right, never fast.

Memory is ``O(K^2 * C * H' * W')``; every other backend is tested against this one. Plain
differentiable PyTorch (not a ``sapa.ops.backends.Backend``: autograd differentiates it, twice
if asked). Half-precision inputs are computed in float32 and the result rounded once, as every
backend does (``sapa.ops._dtypes``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..._dtypes import compute_dtype
from ..._geometry import EPS, projective_index

NAME = "reference"
FAMILIES = ("window", "sampled")


def can_run(*tensors, automatic: bool = False) -> str | None:
    return None  # pure PyTorch: runs wherever PyTorch does


def _windows(x: torch.Tensor, kernel_size: int, out_size) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x C x K*K x H' x W'``: each output point's window of ``x``.

    Points outside the map are zero (``F.unfold``'s zero padding).
    """
    b, c, h, w = x.shape
    r = kernel_size // 2
    if c == 0:  # F.unfold refuses zero channels
        return x.new_zeros(b, 0, kernel_size * kernel_size, *out_size)
    cols = F.unfold(x, kernel_size, padding=r).view(b, c, kernel_size * kernel_size, h, w)
    rows_idx = projective_index(out_size[0], h, x.device)
    cols_idx = projective_index(out_size[1], w, x.device)
    return cols[..., rows_idx[:, None], cols_idx]  # not index_select: see nearest_upsample


def inside_mask(h: int, w: int, kernel_size: int, out_size, device) -> torch.Tensor:
    """``1 x K*K x H' x W'`` boolean: which window points lie inside the ``h x w`` map."""
    ones = torch.ones(1, 1, h, w, device=device)
    return _windows(ones, kernel_size, out_size)[:, 0] > 0.5


def _compute(*tensors):
    return [t.to(compute_dtype(t.dtype)) for t in tensors]


def local_similarity(q, k, kernel_size, border):
    qc, kc = _compute(q, k)
    scores = torch.einsum("bdhw,bdphw->bphw", qc, _windows(kc, kernel_size, q.shape[-2:]))
    if border == "valid":
        inside = inside_mask(k.shape[2], k.shape[3], kernel_size, q.shape[-2:], q.device)
        scores = scores.masked_fill(~inside, float("-inf"))
    return scores.to(q.dtype)


def local_assemble(kernels, v, kernel_size, border):
    # Outside points hold v = 0, so leaving them out of the sum ("valid") and counting them
    # with value zero ("zeros") give the same result.
    kc, vc = _compute(kernels, v)
    out = torch.einsum("bphw,bcphw->bchw", kc, _windows(vc, kernel_size, kernels.shape[-2:]))
    return out.to(v.dtype)


_H = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
}


def normalize(scores, normalizer, inside=None):
    """Turn ``B x K*K x H' x W'`` scores into kernels; ``inside`` masks out points (``valid``)."""
    if normalizer == "softmax":
        if inside is not None:
            scores = scores.masked_fill(~inside, float("-inf"))
        return torch.softmax(scores, dim=1)
    # Points left out are selected away (where), never multiplied by 0 (nan * 0 is nan), and
    # before h as well as after: the score of an outside point is q * 0, nan for an infinite
    # q, and h'(nan) would carry that nan into the gradient of q.
    if inside is not None:
        scores = torch.where(inside, scores, 0.0)
    if normalizer == "none":
        return scores
    h = _H[normalizer](scores)
    if inside is not None:
        h = torch.where(inside, h, 0.0)
    return h / (h.sum(dim=1, keepdim=True) + EPS)


def sapa_attention(q, k, v, kernel_size, normalizer, border):
    out_size = q.shape[-2:]
    qc, kc, vc = _compute(q, k, v)
    scores = torch.einsum("bdhw,bdphw->bphw", qc, _windows(kc, kernel_size, out_size))
    inside = None
    if border == "valid":
        inside = inside_mask(k.shape[2], k.shape[3], kernel_size, out_size, q.device)
    kernels = normalize(scores, normalizer, inside)
    out = torch.einsum("bphw,bcphw->bchw", kernels, _windows(vc, kernel_size, out_size))
    return out.to(v.dtype)
