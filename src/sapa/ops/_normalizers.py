"""Kernel normalisation ``w = h(s) / sum h(s)`` and its hand-written backward.

Used by the backends that implement their own autograd; the reference lets autograd
differentiate its own, independent, version.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._geometry import EPS


def _h(scores, normalizer):
    if normalizer == "relu":
        return F.relu(scores)
    if normalizer == "sigmoid":
        return torch.sigmoid(scores)
    return F.softplus(scores)


def _dh(scores, normalizer):
    if normalizer == "relu":
        return (scores > 0).to(scores.dtype)
    if normalizer == "sigmoid":
        s = torch.sigmoid(scores)
        return s * (1 - s)
    return torch.sigmoid(scores)  # softplus' = sigmoid


def normalize(scores, normalizer, inside=None):
    """``B x K*K x H' x W'`` scores -> kernels; ``inside`` (broadcastable bool) drops points."""
    if normalizer == "softmax":
        if inside is not None:
            scores = scores.masked_fill(~inside, float("-inf"))
        return torch.softmax(scores, dim=1)
    if normalizer == "none":
        return scores if inside is None else scores * inside
    h = _h(scores, normalizer)
    if inside is not None:
        h = h * inside
    return h / (h.sum(dim=1, keepdim=True) + EPS)


def normalize_backward(grad_kernels, kernels, scores, normalizer, inside=None):
    """Gradient of the scores given the gradient of the kernels ``normalize`` returned."""
    if normalizer == "softmax":
        return kernels * (grad_kernels - (kernels * grad_kernels).sum(dim=1, keepdim=True))
    if normalizer == "none":
        return grad_kernels if inside is None else grad_kernels * inside
    h = _h(scores, normalizer)
    dh = _dh(scores, normalizer)
    if inside is not None:
        h = h * inside
        dh = dh * inside
    denom = h.sum(dim=1, keepdim=True) + EPS
    grad_h = (grad_kernels - (kernels * grad_kernels).sum(dim=1, keepdim=True)) / denom
    return grad_h * dh
