"""Kernel normalisation ``w = h(s) / sum h(s)`` per window point, for backends that stream
over the window one offset at a time.

The forward keeps one statistic per output point (``stat``, ``B x H' x W'`` float32):

- ``softmax``: the log-sum-exp of the scores, so ``w_p = exp(s_p - stat)``;
- ``relu`` / ``sigmoid`` / ``softplus``: the denominator ``sum_p h(s_p) + EPS``;
- ``none``: unused (``w_p = s_p``).

The backward needs ``delta = sum_p w_p * dL/dw_p``, which equals ``<dL/dout, out>`` per point
(the same trick as flash attention), so it too streams over the offsets.
The reference backend does not use this module: autograd differentiates its own version.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._geometry import EPS


def h(scores, normalizer):
    if normalizer == "relu":
        return F.relu(scores)
    if normalizer == "sigmoid":
        return torch.sigmoid(scores)
    if normalizer == "softplus":
        return F.softplus(scores)
    raise ValueError(normalizer)


def dh(scores, normalizer):
    if normalizer == "relu":
        return (scores > 0).to(scores.dtype)
    if normalizer == "sigmoid":
        s = torch.sigmoid(scores)
        return s * (1 - s)
    return torch.sigmoid(scores)  # softplus' = sigmoid


def kernel(s, stat, normalizer, inside=None):
    """Kernel weight of one window point from its score ``s`` and the per-point ``stat``."""
    if normalizer == "softmax":
        w = torch.exp(s - stat)
    elif normalizer == "none":
        w = s
    else:
        w = h(s, normalizer) / stat
    return w if inside is None else w * inside


def score_grad(s, w, grad_w, delta, stat, normalizer, inside=None):
    """``dL/ds_p`` from ``dL/dw_p`` for one window point."""
    if normalizer == "softmax":
        gs = w * (grad_w - delta)
    elif normalizer == "none":
        gs = grad_w
    else:
        gs = (grad_w - delta) / stat * dh(s, normalizer)
    return gs if inside is None else gs * inside


def stat(scores, normalizer, inside=None):
    """The per-point statistic of ``B x K*K x H' x W'`` scores (see the module docstring)."""
    if normalizer == "softmax":
        if inside is not None:
            scores = scores.masked_fill(~inside, float("-inf"))
        return torch.logsumexp(scores, dim=1)
    if normalizer == "none":
        return scores.new_zeros(scores.shape[0], *scores.shape[2:])
    hv = h(scores, normalizer)
    if inside is not None:
        hv = hv * inside
    return hv.sum(dim=1) + EPS


def kernels_from_scores(scores, normalizer, border):
    """Kernels ``B x K*K x H' x W'`` from ``local_similarity`` scores (``-inf`` marks points
    outside the map when ``border="valid"``)."""
    inside = torch.isfinite(scores) if border == "valid" else None
    if inside is not None:
        scores = scores.masked_fill(~inside, 0)
    st = stat(scores, normalizer, inside)
    return kernel(scores, st[:, None], normalizer, inside)
