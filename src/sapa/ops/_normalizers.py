"""The kernel normalisers ``w = h(s) / sum h(s)``: their names, the integer codes the compiled
kernels use, and their streaming formulas for the backends that walk the window one point at a
time.

The forward keeps one statistic per output point (``stat``, ``B x H' x W'`` in the compute
dtype of ``sapa.ops._dtypes``):

- ``softmax``: the log-sum-exp of the scores, so ``w_p = exp(s_p - stat)``;
- ``relu`` / ``sigmoid`` / ``softplus``: the denominator ``sum_p h(s_p) + EPS``;
- ``none``: unused (``w_p = s_p``).

The backward needs ``delta = sum_p w_p * dL/dw_p``, which equals ``<dL/dout, out>`` per point
(the same trick as flash attention), so it too streams over the offsets.

Non-finite values propagate as in the reference (plain autograd): ``relu(nan) = nan``; where
autograd *selects* a gradient (relu's: zero where ``relu(s) <= 0``, so a nan score passes it;
the points a ``valid`` border leaves out) the formulas select with ``torch.where`` instead of
multiplying by a 0/1 mask, since ``nan * 0`` is ``nan``. A softmax over scores holding ``+inf``
(or only ``-inf``) gives nan weights everywhere, as ``torch.softmax`` does.

The reference backend does not use this module: autograd differentiates its own version.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._geometry import EPS

NAMES = ("softmax", "relu", "sigmoid", "softplus", "none")
# the integer codes of the compiled kernels (numba, Triton)
SOFTMAX, RELU, SIGMOID, SOFTPLUS, NONE = range(len(NAMES))
CODES = dict(zip(NAMES, range(len(NAMES))))


def h(scores, normalizer):
    if normalizer == "relu":
        return F.relu(scores)
    if normalizer == "sigmoid":
        return torch.sigmoid(scores)
    if normalizer == "softplus":
        return F.softplus(scores)
    raise ValueError(normalizer)


def _select(inside, x):
    return x if inside is None else torch.where(inside, x, 0.0)


def kernel(s, stat, normalizer, inside=None):
    """Kernel weight of one window point from its score ``s`` and the per-point ``stat``."""
    if normalizer == "softmax":
        w = torch.exp(s - stat)
    elif normalizer == "none":
        w = s
    else:
        w = h(s, normalizer) / stat
    return _select(inside, w)


def score_grad(s, w, grad_w, delta, stat, normalizer, inside=None):
    """``dL/ds_p`` from ``dL/dw_p`` for one window point."""
    if normalizer == "softmax":
        gs = w * (grad_w - delta)
    elif normalizer == "none":
        gs = grad_w
    elif normalizer == "relu":  # autograd's threshold_backward: 0 where relu(s) <= 0
        gs = torch.where(s <= 0, 0.0, (grad_w - delta) / stat)
    elif normalizer == "sigmoid":
        sg = torch.sigmoid(s)
        gs = (grad_w - delta) / stat * (sg * (1 - sg))
    else:  # softplus' = sigmoid
        gs = (grad_w - delta) / stat * torch.sigmoid(s)
    return _select(inside, gs)


def stat(scores, normalizer, inside=None):
    """The per-point statistic of ``B x K*K x H' x W'`` scores (see the module docstring)."""
    if normalizer == "softmax":
        if inside is not None:
            scores = scores.masked_fill(~inside, float("-inf"))
        # torch.logsumexp's formula, without its special case for an infinite maximum: a +inf
        # score (or only -inf ones) makes every weight nan, as in torch.softmax
        top = scores.amax(dim=1)
        return top + torch.log(torch.exp(scores - top[:, None]).sum(dim=1))
    if normalizer == "none":
        return scores.new_zeros(scores.shape[0], *scores.shape[2:])
    return _select(inside, h(scores, normalizer)).sum(dim=1) + EPS


def kernels_from_scores(scores, normalizer, border):
    """Kernels ``B x K*K x H' x W'`` from ``local_similarity`` scores (``-inf`` marks points
    outside the map when ``border="valid"``)."""
    inside = ~torch.isneginf(scores) if border == "valid" else None
    if inside is not None:
        scores = scores.masked_fill(~inside, 0)
    st = stat(scores, normalizer, inside)
    return kernel(scores, st[:, None], normalizer, inside)
