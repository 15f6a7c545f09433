"""The reference backend of SAPA-D's sampled attention: ``grid_sample`` at all points at once.

Written to be obviously right, never fast: it holds the sampled keys and values of every point,
``N x (d + C) x H' x W'`` per image. Every other backend is tested against this one, and this
one against a plain bilinear loop that follows the authors' CUDA kernels.

Geometry (the convention of the authors' SAPA-D code, github.com/tiny-smart/sapa): point ``n``
of group ``g`` of output point ``(i', j')`` lies at

    x = floor(j' * W / W') + offsets[:, 2 * (g * N + n)]        (column, low-res pixels)
    y = floor(i' * H / H') + offsets[:, 2 * (g * N + n) + 1]    (row)

and is read by bilinear interpolation, with zeros outside the map, exactly as
``F.grid_sample(mode="bilinear", padding_mode="zeros")`` reads it. Half-precision inputs are
computed in float32 (locations included) and the result rounded once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..._geometry import projective_index
from . import _compute, normalize


def sampling_locations(offsets, groups, num_points, in_size):
    """Absolute sampling locations ``B x G x N x 2 x H' x W'`` (``x`` then ``y``, low-res pixels)."""
    b, _, hq, wq = offsets.shape
    off = offsets.reshape(b, groups, num_points, 2, hq, wq)
    rows = projective_index(hq, in_size[0], offsets.device).to(offsets.dtype)
    cols = projective_index(wq, in_size[1], offsets.device).to(offsets.dtype)
    base = torch.stack(torch.broadcast_tensors(cols[None, :], rows[:, None]))  # 2 x H' x W'
    return off + base


def sampling_grid(offsets, groups, num_points, in_size):
    """``grid_sample`` grid ``B*G x N x H' x W' x 2`` for the points of ``offsets``.

    Pixel ``x`` maps to ``(2x + 1) / W - 1`` (``align_corners=False``), whose inverse inside
    ``grid_sample`` is exact and, unlike ``align_corners=True``, defined for ``W = 1``.
    """
    loc = sampling_locations(offsets, groups, num_points, in_size)
    b, _, _, _, hq, wq = loc.shape
    # x and y divided by their sizes as numbers, not by a tensor made of them: that would
    # fix the sizes of a program made by torch.export (ONNX) to those it was traced with
    grid = torch.stack([(2 * loc[:, :, :, 0] + 1) / in_size[1] - 1,
                        (2 * loc[:, :, :, 1] + 1) / in_size[0] - 1], dim=-1)
    return grid.reshape(b * groups, num_points, hq, wq, 2)


def grid_scale(in_size, like):
    """``d grid / d offset`` for ``x`` and ``y``: ``(2 / W, 2 / H)``, shaped to a grid's last dim."""
    return like.new_tensor([2.0 / in_size[1], 2.0 / in_size[0]])


def sample(x, grid):
    """Bilinear read of ``x`` (``B*G x c x H x W``) at ``grid`` (``B*G x ... x 2``), zeros outside."""
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _by_group(t, groups):
    b, c, h, w = t.shape
    return t.reshape(b * groups, c // groups, h, w)


def sampled_similarity(q, k, offsets, groups, num_points):
    """Scores ``B x G x N x H' x W'``: ``<q_g(l'), k_g(p_n)>`` for every sampled point."""
    b, _, hq, wq = q.shape
    qc, kc, oc = _compute(q, k, offsets)
    grid = sampling_grid(oc, groups, num_points, k.shape[-2:])
    ks = sample(_by_group(kc, groups), grid.flatten(2, 3))  # B*G x d x N x H'W'
    qg = _by_group(qc, groups).flatten(2)  # B*G x d x H'W'
    scores = torch.einsum("bdp,bdnp->bnp", qg, ks)
    return scores.view(b, groups, num_points, hq, wq).to(q.dtype)


def sampled_attention(q, k, v, offsets, groups, num_points, normalizer):
    b, c, _, _ = v.shape
    hq, wq = q.shape[-2:]
    qc, kc, vc, oc = _compute(q, k, v, offsets)
    grid = sampling_grid(oc, groups, num_points, k.shape[-2:]).flatten(2, 3)
    ks = sample(_by_group(kc, groups), grid)  # B*G x d x N x H'W'
    vs = sample(_by_group(vc, groups), grid)  # B*G x C/G x N x H'W'
    scores = torch.einsum("bdp,bdnp->bnp", _by_group(qc, groups).flatten(2), ks)
    kernels = normalize(scores, normalizer)  # over the N points of each group
    out = torch.einsum("bnp,bcnp->bcp", kernels, vs)
    return out.reshape(b, c, hq, wq).to(v.dtype)
