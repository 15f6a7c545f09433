"""The ops as an ONNX exporter traces them: plain PyTorch, forward only.

The custom ops ``torch.ops.sapa.*`` have no ONNX translation. While ``torch.onnx.export`` traces
a model (either exporter; ``dispatch.exporting_onnx()``), the public ops of ``functional`` and
``sampled`` call these functions instead, whatever ``backend`` they were given, so the exported
graph holds only standard ONNX operators (``Pad``, ``Transpose``, ``Gather``, ``Mul``,
``ReduceSum``, ``Softmax``, ``GridSample``, ...), with the batch and the spatial sizes left
symbolic: ``torch.onnx.export(model, args, dynamo=True)`` works on a model with sapa upsamplers
as it is, and ONNX Runtime runs the file.

Formulation of the window ops: one window offset at a time, as the lean backend, but on
channels-last copies of the padded maps, so that each ``Gather`` of a window offset (rows, then
columns) copies runs of contiguous channels (ONNX Runtime gathers single elements along the
innermost axis about ten times slower). No ``K^2 x C x H' x W'`` tensor exists: beyond inputs and
output, one ``C x H' x W'`` slice and the ``K^2 x H' x W'`` scores. The kernels are normalised by
the reference's own ``normalize`` (the same masking, epsilon and order of operations). SAPA-D's
sampled attention reads one point at a time (one ``GridSample`` of the keys and one of the
values per point), as its lean backend. Half-precision inputs are computed in float32 and the
result is rounded once, as every backend does. No update is in place: the same functions serve
as ``torch.export`` decompositions.

``decompositions()`` maps each custom op to these functions, for a program that was made by
``torch.export`` before it reaches the ONNX exporter.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _normalizers as nz
from ._dtypes import compute_dtype
from ._geometry import projective_index
from .backends.reference import normalize
from .backends.reference.sampled import sample, sampling_grid


def _compute(*ts):
    return [t.to(compute_dtype(t.dtype)) for t in ts]


def _window_slices(x: torch.Tensor, out_size, kernel_size: int):
    """For every window offset ``p`` in ``F.unfold`` order, the ``B x H' x W' x C``
    (channels-last) slice ``x[:, :, l + p]`` of the ``B x C x H x W`` map ``x``, zero outside."""
    r = kernel_size // 2
    xp = F.pad(x, (r, r, r, r)).permute(0, 2, 3, 1)  # B x H+2r x W+2r x C
    rows = projective_index(out_size[0], x.shape[2], x.device)
    cols = projective_index(out_size[1], x.shape[3], x.device)
    for u in range(kernel_size):
        xr = xp.index_select(1, rows + u)
        for w in range(kernel_size):
            yield xr.index_select(2, cols + w)


def inside_mask(h: int, w: int, kernel_size: int, out_size, device) -> torch.Tensor:
    """``1 x K*K x H' x W'`` bool: which window points lie inside the ``h x w`` map (as
    ``reference.inside_mask``, from index arithmetic alone)."""
    r = kernel_size // 2
    off = torch.arange(-r, r + 1, device=device)
    rows = projective_index(out_size[0], h, device)[None, :] + off[:, None]  # K x H'
    cols = projective_index(out_size[1], w, device)[None, :] + off[:, None]  # K x W'
    rows_in = (rows >= 0) & (rows < h)
    cols_in = (cols >= 0) & (cols < w)
    inside = rows_in[:, None, :, None] & cols_in[None, :, None, :]  # K x K x H' x W'
    return inside.reshape(1, kernel_size * kernel_size, out_size[0], out_size[1])


def _scores(q, k, kernel_size):
    """``B x K*K x H' x W'`` raw scores (outside points score 0: ``k = 0``), compute dtype."""
    ql = q.permute(0, 2, 3, 1)
    return torch.stack([(ql * kp).sum(-1) for kp in _window_slices(k, q.shape[-2:], kernel_size)],
                       dim=1)


def _assemble(kernels, v, kernel_size):
    """``B x C x H' x W'``: ``sum_p kernels[:, p] * v[:, :, l + p]``, compute dtype."""
    kl = kernels.permute(0, 2, 3, 1)  # B x H' x W' x K*K
    out = None
    for p, vp in enumerate(_window_slices(v, kernels.shape[-2:], kernel_size)):
        term = vp * kl[..., p, None]
        out = term if out is None else out + term
    return out.permute(0, 3, 1, 2)


def _inside(k, q, kernel_size, border):
    if border != "valid":
        return None
    return inside_mask(k.shape[2], k.shape[3], kernel_size, q.shape[-2:], q.device)


def local_similarity(q, k, kernel_size, border):
    qc, kc = _compute(q, k)
    scores = _scores(qc, kc, kernel_size)
    inside = _inside(k, q, kernel_size, border)
    if inside is not None:
        scores = scores.masked_fill(~inside, float("-inf"))
    return scores.to(q.dtype)


def local_assemble(kernels, v, kernel_size, border):
    kc, vc = _compute(kernels, v)
    return _assemble(kc, vc, kernel_size).to(v.dtype)


def _attention(q, k, v, kernel_size, normalizer, border):
    qc, kc, vc = _compute(q, k, v)
    scores = _scores(qc, kc, kernel_size)
    inside = _inside(k, q, kernel_size, border)
    out = _assemble(normalize(scores, normalizer, inside), vc, kernel_size)
    return out.to(v.dtype), scores, inside


def sapa_attention(q, k, v, kernel_size, normalizer, border):
    return _attention(q, k, v, kernel_size, normalizer, border)[0]


def _by_group(t, groups):
    b, c, h, w = t.shape
    return t.reshape(b * groups, c // groups, h, w)


def _sampled(q, k, v, offsets, groups, num_points, normalizer):
    """``(out, scores)``: the lean backend's order of work (one ``GridSample`` of the keys,
    then of the values, per point), written without in-place updates."""
    b, c, _, _ = v.shape
    hq, wq = q.shape[-2:]
    qc, kc, vc, oc = _compute(q, k, v, offsets)
    grid = sampling_grid(oc, groups, num_points, k.shape[-2:])  # B*G x N x H' x W' x 2
    qg, kg, vg = _by_group(qc, groups), _by_group(kc, groups), _by_group(vc, groups)
    scores = torch.stack([(qg * sample(kg, grid[:, n])).sum(1) for n in range(num_points)], 1)
    weights = normalize(scores, normalizer)  # over the N points, B*G x N x H' x W'
    out = None
    for n in range(num_points):
        term = weights[:, n : n + 1] * sample(vg, grid[:, n])
        out = term if out is None else out + term
    return out.reshape(b, c, hq, wq).to(v.dtype), scores


def sampled_attention(q, k, v, offsets, groups, num_points, normalizer):
    return _sampled(q, k, v, offsets, groups, num_points, normalizer)[0]


# ---- for programs made by torch.export beforehand --------------------------------------------

def _attention_op(q, k, v, kernel_size, normalizer, border, backend):
    out, scores, inside = _attention(q, k, v, kernel_size, normalizer, border)
    return out, nz.stat(scores, normalizer, inside)


def _similarity_op(q, k, kernel_size, border, backend):
    return local_similarity(q, k, kernel_size, border)


def _assemble_op(kernels, v, kernel_size, border, backend):
    return local_assemble(kernels, v, kernel_size, border)


def _sampled_op(q, k, v, offsets, groups, num_points, normalizer, backend):
    out, scores = _sampled(q, k, v, offsets, groups, num_points, normalizer)
    return out, nz.stat(scores, normalizer).view(q.shape[0], groups, *q.shape[-2:])


def decompositions() -> dict:
    """``torch.export``'s default decomposition table plus one entry per forward custom op of
    ``torch.ops.sapa`` (these functions; each returns what its op returns), for
    ``ExportedProgram.run_decompositions``: a program that ``torch.export`` made with the
    custom ops in it, decomposed with this table, exports to ONNX."""
    table = torch.export.default_decompositions()
    table[torch.ops.sapa.attention.default] = _attention_op
    table[torch.ops.sapa.similarity.default] = _similarity_op
    table[torch.ops.sapa.assemble.default] = _assemble_op
    table[torch.ops.sapa.sampled_attention.default] = _sampled_op
    return table
