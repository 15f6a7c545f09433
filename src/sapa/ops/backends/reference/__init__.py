"""The reference backend: unfold + einsum, written to be obviously right, never fast.

Memory is ``O(K^2 * C * H' * W')``; every other backend is tested against this one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..._geometry import EPS, projective_index

NAME = "reference"


def can_run(*tensors, automatic: bool = False) -> str | None:
    return None  # pure PyTorch: runs wherever PyTorch does


def _windows(x: torch.Tensor, kernel_size: int, out_size) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x C x K*K x H' x W'``: each output point's window of ``x``.

    Points outside the map are zero (``F.unfold``'s zero padding).
    """
    b, c, h, w = x.shape
    r = kernel_size // 2
    cols = F.unfold(x, kernel_size, padding=r).view(b, c, kernel_size * kernel_size, h, w)
    rows_idx = projective_index(out_size[0], h, x.device)
    cols_idx = projective_index(out_size[1], w, x.device)
    return cols[..., rows_idx[:, None], cols_idx]  # not index_select: see nearest_upsample


def inside_mask(h: int, w: int, kernel_size: int, out_size, device) -> torch.Tensor:
    """``1 x K*K x H' x W'`` boolean: which window points lie inside the ``h x w`` map."""
    ones = torch.ones(1, 1, h, w, device=device)
    return _windows(ones, kernel_size, out_size)[:, 0] > 0.5


def local_similarity(q, k, kernel_size, border):
    scores = torch.einsum("bdhw,bdphw->bphw", q, _windows(k, kernel_size, q.shape[-2:]))
    if border == "valid":
        inside = inside_mask(k.shape[2], k.shape[3], kernel_size, q.shape[-2:], q.device)
        scores = scores.masked_fill(~inside, float("-inf"))
    return scores


def local_assemble(kernels, v, kernel_size, border):
    # Outside points hold v = 0, so leaving them out of the sum ("valid") and counting them
    # with value zero ("zeros") give the same result.
    return torch.einsum("bphw,bcphw->bchw", kernels, _windows(v, kernel_size, kernels.shape[-2:]))


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
    if normalizer == "none":
        return scores if inside is None else scores * inside
    h = _H[normalizer](scores)
    if inside is not None:
        h = h * inside
    return h / (h.sum(dim=1, keepdim=True) + EPS)


def sapa_attention(q, k, v, kernel_size, normalizer, border):
    out_size = q.shape[-2:]
    scores = torch.einsum("bdhw,bdphw->bphw", q, _windows(k, kernel_size, out_size))
    inside = None
    if border == "valid":
        inside = inside_mask(k.shape[2], k.shape[3], kernel_size, out_size, q.device)
    kernels = normalize(scores, normalizer, inside)
    return torch.einsum("bphw,bcphw->bchw", kernels, _windows(v, kernel_size, out_size))
