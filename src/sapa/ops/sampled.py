"""SAPA-D's operator (arXiv 2307.08198): similarity-aware attention over learned sampling points.

Instead of the fixed ``K x K`` window of ``sapa_attention``, every output point compares its
query with keys read at ``N`` learned points per group (bilinear, ``grid_sample`` semantics) and
reassembles the values read at the same points. Its backends
(``sapa.ops.list_backends("sampled")``):

- ``reference`` (``backends/reference/sampled.py``): ``grid_sample`` at all ``N`` points at once;
  memory ``O(N (d + C) H' W')``. Never chosen automatically.
- ``lean`` (``backends/lean/sampled.py``): one point at a time through
  ``torch.ops.sapa.sampled_attention``; keeps only ``B x G x H' x W'`` statistics for the
  backward.

The choice, the autocast policy and the custom op are those of the window operator
(``sapa.ops.dispatch``, ``sapa.ops._dtypes``, ``sapa.ops._library``).
"""
from __future__ import annotations

import torch

from . import _checks, _library, _onnx, dispatch
from ._dtypes import apply_autocast_policy
from .backends.lean import sampled as lean_sampled
from .backends.reference import sampled as reference_sampled


def sampled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    *,
    groups: int,
    num_points: int,
    normalizer: str = "softmax",
    backend: str | None = None,
) -> torch.Tensor:
    """Similarity-aware attention over learned sampling points (SAPA-D's operator).

    For output point ``l' = (i', j')`` with projective location
    ``l = (floor(i' * H / H'), floor(j' * W / W'))``, group ``g`` and point ``n < N``::

        p_n = l + (offsets[:, 2(gN + n) + 1], offsets[:, 2(gN + n)])      (row, column)
        s_n = <q_g[l'], k_g(p_n)>                     k_g(p): bilinear read, zeros outside
        w_n = h(s_n) / sum_n h(s_n)                   (softmax: h = exp), over the N points
        out_g[l'] = sum_n w_n * v_g(p_n)

    where ``q_g, k_g`` are the ``d`` channels of group ``g`` and ``v_g`` its ``C / G`` value
    channels. Points outside the map read ``k = v = 0`` and still take part in the normalisation
    with score 0, as in the authors' CUDA kernels of SAPA-D (github.com/tiny-smart/sapa).

    Args:
        q: queries from the high-resolution guide, ``B x G*d x H' x W'`` with ``H' >= H, W' >= W``.
        k: keys from the low-resolution feature, ``B x G*d x H x W``.
        v: values to reassemble, ``B x C x H x W`` with ``C`` divisible by ``G``.
        offsets: ``B x 2*G*N x H' x W'``, in low-resolution pixels, relative to ``l``; channel
            ``2(gN + n)`` moves point ``n`` of group ``g`` along the width (``x``), channel
            ``2(gN + n) + 1`` along the height (``y``): the authors' layout.
        groups: ``G``; num_points: ``N``.
        normalizer: ``"softmax"``, ``"relu"``, ``"sigmoid"``, ``"softplus"`` (these divide by
            ``sum h + 1e-6``) or ``"none"``, as in ``sapa_attention``.
        backend: ``None`` (automatic, when the op runs: ``"lean"``), ``"lean"`` or
            ``"reference"``.

    Returns:
        ``B x C x H' x W'``, the dtype of the inputs (under ``torch.autocast``: the autocast
        dtype, see ``docs/operator.md``).
    """
    return apply_autocast_policy(_sampled_attention, (q, k, v, offsets), groups, num_points,
                                 normalizer, backend)


def _sampled_attention(q, k, v, offsets, groups, num_points, normalizer, backend):
    _checks.check_sampled_args(q, k, offsets, groups, num_points, v)
    _checks.check_choice("normalizer", normalizer, _checks.NORMALIZERS)
    name = dispatch.canonical_backend(backend, "sampled")
    if dispatch.exporting_onnx():  # the backend does not matter in an ONNX graph
        return _onnx.sampled_attention(q, k, v, offsets, groups, num_points, normalizer)
    if name == "reference":
        return reference_sampled.sampled_attention(q, k, v, offsets, groups, num_points,
                                                   normalizer)
    return _library.sampled_attention(q, k, v, offsets, groups, num_points, normalizer, name)[0]


def sampled_similarity(
    q: torch.Tensor,
    k: torch.Tensor,
    offsets: torch.Tensor,
    *,
    groups: int,
    num_points: int,
    backend: str | None = None,
) -> torch.Tensor:
    """Scores ``s_n`` of every output point against its sampled keys (shapes as
    ``sampled_attention``). Plain differentiable PyTorch: the reference reads all points at
    once, every other choice one point at a time (lean's code).

    Returns:
        ``B x G x N x H' x W'`` (under ``torch.autocast``: the autocast dtype).
    """
    return apply_autocast_policy(_sampled_similarity, (q, k, offsets), groups, num_points,
                                 backend)


def _sampled_similarity(q, k, offsets, groups, num_points, backend):
    _checks.check_sampled_args(q, k, offsets, groups, num_points)
    name = dispatch.canonical_backend(backend, "sampled")
    impl = reference_sampled if name == "reference" else lean_sampled
    return impl.sampled_similarity(q, k, offsets, groups, num_points)


def sampling_locations(offsets: torch.Tensor, in_size, *, groups: int, num_points: int):
    """Absolute sampling locations ``B x G x N x 2 x H' x W'`` (``x`` then ``y``, in pixels of
    the ``in_size = (H, W)`` map) of ``offsets`` (``B x 2*G*N x H' x W'``), e.g. to plot them."""
    _checks.check_tensor("offsets", offsets)
    _checks.check_positive_int("groups", groups)
    _checks.check_positive_int("num_points", num_points)
    if offsets.shape[1] != 2 * groups * num_points:
        raise ValueError(
            f"offsets must have 2*groups*num_points = {2 * groups * num_points} channels, "
            f"got shape {tuple(offsets.shape)}")
    _checks.check_guide_size(offsets.shape[2], offsets.shape[3], in_size[0], in_size[1],
                             "offsets", "the input map")
    return reference_sampled.sampling_locations(offsets, groups, num_points, in_size)
