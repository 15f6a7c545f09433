"""The memory-lean backend of SAPA-D's sampled attention: one sampling point at a time.

It never holds the ``N x C x H' x W'`` sampled values. The forward samples the keys of one
point at a time to get the ``N`` scores per output point, keeps the per-point statistic of
``sapa.ops._normalizers`` (``B x G x H' x W'``), then samples the values one point at a time
into the output. The backward recomputes each point's sampled key and value, its score and
weight, and pulls the gradients back through that point's ``grid_sample`` alone. Half-precision
inputs are computed in float32.

``sampled_fwd`` and ``sampled_bwd`` are the sampled family of ``sapa.ops.backends.Backend``
(``torch.ops.sapa.sampled_attention*``).
"""
from __future__ import annotations

import torch

from ... import _normalizers as nz
from ..._dtypes import compute_dtype
from ..reference.sampled import grid_scale, sample, sampling_grid


def _by_group(t, groups):
    b, c, h, w = t.shape
    return t.to(compute_dtype(t.dtype)).reshape(b * groups, c // groups, h, w)


def sampled_similarity(q, k, offsets, groups, num_points):
    """Scores ``B x G x N x H' x W'``, one point at a time (plain differentiable PyTorch)."""
    b, _, hq, wq = q.shape
    grid = sampling_grid(offsets.to(compute_dtype(offsets.dtype)), groups, num_points, k.shape[-2:])
    qg, kg = _by_group(q, groups), _by_group(k, groups)
    scores = [(qg * sample(kg, grid[:, n])).sum(dim=1) for n in range(num_points)]
    return torch.stack(scores, dim=1).view(b, groups, num_points, hq, wq).to(q.dtype)


def sampled_fwd(q, k, v, offsets, groups, num_points, normalizer):
    """Returns ``(out, stat)``: ``B x C x H' x W'`` in the input dtype, ``B x G x H' x W'``."""
    b, c, _, _ = v.shape
    hq, wq = q.shape[-2:]
    grid = sampling_grid(offsets.to(compute_dtype(offsets.dtype)), groups, num_points, k.shape[-2:])
    qg, kg, vg = _by_group(q, groups), _by_group(k, groups), _by_group(v, groups)
    scores = torch.stack(
        [(qg * sample(kg, grid[:, n])).sum(dim=1) for n in range(num_points)], dim=1)
    stat = nz.stat(scores, normalizer)  # B*G x H' x W'
    out = vg.new_zeros(vg.shape[0], vg.shape[1], hq, wq)
    for n in range(num_points):
        w = nz.kernel(scores[:, n : n + 1], stat[:, None], normalizer)
        out.addcmul_(w, sample(vg, grid[:, n]))
    return out.reshape(b, c, hq, wq).to(v.dtype), stat.view(b, groups, hq, wq)


def _sample_vjp(x, grid, grad):
    """Gradients of ``sample(x, grid)`` w.r.t. ``x`` and ``grid`` for the cotangent ``grad``.

    Calls ``grid_sample``'s own backward: inside a custom op autograd does not record, and
    this needs no graph. Modes 0, 0: bilinear, zeros (as ``sample``).
    """
    return torch.ops.aten.grid_sampler_2d_backward(grad, x, grid, 0, 0, False, [True, True])


def sampled_bwd(grad_out, q, k, v, offsets, out, stat, groups, num_points, normalizer):
    """Returns ``(grad_q, grad_k, grad_v, grad_offsets)``; recomputes every weight from ``stat``."""
    b, c, h, w = v.shape
    d = q.shape[1] // groups
    hq, wq = q.shape[-2:]
    cd = compute_dtype(q.dtype)
    grid = sampling_grid(offsets.to(cd), groups, num_points, (h, w))
    qg, g, og = _by_group(q, groups), _by_group(grad_out, groups), _by_group(out, groups)
    # keys and values of a group are read at the same points: sample them together
    kv = torch.cat([_by_group(k, groups), _by_group(v, groups)], dim=1)
    st = stat.reshape(b * groups, 1, hq, wq).to(cd)
    delta = (g * og).sum(dim=1, keepdim=True)
    gq = torch.zeros_like(qg)
    gk = torch.zeros(kv.shape[0], d, h, w, dtype=kv.dtype, device=kv.device)
    gv = torch.zeros(kv.shape[0], kv.shape[1] - d, h, w, dtype=kv.dtype, device=kv.device)
    ggrid = torch.empty_like(grid)
    for n in range(num_points):
        kvs = sample(kv, grid[:, n])
        ks, vs = kvs[:, :d], kvs[:, d:]
        s = (qg * ks).sum(dim=1, keepdim=True)
        wn = nz.kernel(s, st, normalizer)
        gw = (g * vs).sum(dim=1, keepdim=True)
        gs = nz.score_grad(s, wn, gw, delta, st, normalizer)
        gq.addcmul_(gs, ks)
        gkv_n, ggrid[:, n] = _sample_vjp(kv, grid[:, n], torch.cat([gs * qg, wn * g], dim=1))
        gk += gkv_n[:, :d]
        gv += gkv_n[:, d:]
    goff = ggrid * grid_scale((h, w), ggrid)  # B*G x N x H' x W' x 2
    goff = goff.view(b, groups, num_points, hq, wq, 2).permute(0, 1, 2, 5, 3, 4)
    return (
        gq.reshape(q.shape).to(q.dtype),
        gk.reshape(k.shape).to(k.dtype),
        gv.reshape(v.shape).to(v.dtype),
        goff.reshape(offsets.shape).to(offsets.dtype),
    )
