"""SAPA-D's operator (arXiv 2307.08198): similarity-aware attention over learned sampling points.

Instead of the fixed ``K x K`` window of ``sapa_attention``, every output point compares its
query with keys read at ``N`` learned points per group (bilinear, ``grid_sample`` semantics) and
reassembles the values read at the same points. Validation and the choice between the two
backends happen here, in one place:

- ``reference`` (``sampled_reference``): ``grid_sample`` at all ``N`` points at once; memory
  ``O(N (d + C) H' W')``. Never chosen automatically.
- ``lean`` (``sampled_lean``): one point at a time through ``torch.ops.sapa.sampled_attention``;
  keeps only ``B x G x H' x W'`` statistics for the backward.

The ``sapa.dispatch`` logger says at DEBUG level which backend ran.
"""
from __future__ import annotations

import logging

import torch

from . import _checks, _sampled_library
from .backends.lean import sampled as sampled_lean
from .backends.reference import sampled as sampled_reference

logger = logging.getLogger("sapa.dispatch")

# name -> module; a module ``sampled_<name>`` implementing the protocol of ``sampled_lean`` runs
# through ``torch.ops.sapa.sampled_attention`` (imported here, not on each call, so that
# ``torch.compile`` traces the choice)
BACKENDS = {"reference": sampled_reference, "lean": sampled_lean}
# tried in this order when backend=None; the reference is never chosen automatically
AUTO_ORDER = ("lean",)


def _log(msg, *args):
    if not torch.compiler.is_compiling():  # dynamo cannot trace logging calls
        logger.debug(msg, *args)


def list_sampled_backends() -> list[str]:
    """Names accepted by the ``backend=`` argument of the sampled ops."""
    return list(BACKENDS)


def choose_sampled_backend(*tensors, backend: str | None = None):
    """The backend module that will run a sampled op on ``tensors`` (as ``choose_backend``)."""
    if backend is not None:
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(
                f"backend must be None or one of {list_sampled_backends()}, got {backend!r}")
        mod = BACKENDS[backend]
        reason = mod.can_run(*tensors)
        if reason is not None:
            raise RuntimeError(f"backend={backend!r} cannot run here: {reason}")
        _log("sampled backend %s (requested)", backend)
        return mod
    for name in AUTO_ORDER:
        mod = BACKENDS[name]
        reason = mod.can_run(*tensors)
        if reason is None:
            _log("sampled backend %s (automatic)", name)
            return mod
        _log("sampled backend %s passed over: %s", name, reason)
    raise RuntimeError("no backend can run these inputs")  # unreachable: lean always can


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_sampled_args(q, k, offsets, groups, num_points, v=None):
    named = {"q": q, "k": k} if v is None else {"q": q, "k": k, "v": v}
    named["offsets"] = offsets
    for name, t in named.items():
        _checks.check_tensor(name, t)
    _checks.check_same_kind(named)
    _check_positive_int("groups", groups)
    _check_positive_int("num_points", num_points)
    batch = {name: t.shape[0] for name, t in named.items()}
    if len(set(batch.values())) != 1:
        raise ValueError(f"{', '.join(batch)} must share the batch size, got {batch}")
    if q.shape[1] != k.shape[1]:
        raise ValueError(
            f"q and k must have the same number of channels G*d, got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)}")
    if q.shape[1] % groups:
        raise ValueError(
            f"the channels of q and k ({q.shape[1]}) must be divisible by groups={groups}")
    if v is not None:
        if v.shape[1] % groups:
            raise ValueError(f"the channels of v ({v.shape[1]}) must be divisible by groups={groups}")
        if k.shape[2:] != v.shape[2:]:
            raise ValueError(
                f"k and v must have the same spatial size H x W, got k {tuple(k.shape)} "
                f"and v {tuple(v.shape)}")
    _checks.check_guide_size(q.shape[2], q.shape[3], k.shape[2], k.shape[3])
    expected = (q.shape[0], 2 * groups * num_points, q.shape[2], q.shape[3])
    if tuple(offsets.shape) != expected:
        raise ValueError(
            f"offsets must be B x 2*groups*num_points x H' x W' = {expected} "
            f"(groups={groups}, num_points={num_points}, H' x W' of q), got {tuple(offsets.shape)}")


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
    with score 0, as in the authors' CUDA kernels (``tiny-smart/sapa``, ``deformsapa``).

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
        backend: ``None`` (automatic: ``"lean"``), ``"lean"`` or ``"reference"``.

    Returns:
        ``B x C x H' x W'``, the dtype of the inputs.
    """
    _check_sampled_args(q, k, offsets, groups, num_points, v)
    _checks.check_choice("normalizer", normalizer, _checks.NORMALIZERS)
    mod = choose_sampled_backend(q, k, v, offsets, backend=backend)
    if mod is sampled_reference:
        return sampled_reference.sampled_attention(q, k, v, offsets, groups, num_points, normalizer)
    return _sampled_library.sampled_attention(
        q, k, v, offsets, groups, num_points, normalizer, mod.NAME)[0]


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
    ``sampled_attention``; plain differentiable PyTorch in both backends).

    Returns:
        ``B x G x N x H' x W'``.
    """
    _check_sampled_args(q, k, offsets, groups, num_points)
    mod = choose_sampled_backend(q, k, offsets, backend=backend)
    return mod.sampled_similarity(q, k, offsets, groups, num_points)


def sampling_locations(offsets: torch.Tensor, in_size, *, groups: int, num_points: int):
    """Absolute sampling locations ``B x G x N x 2 x H' x W'`` (``x`` then ``y``, in pixels of
    the ``in_size = (H, W)`` map) of ``offsets`` (``B x 2*G*N x H' x W'``), e.g. to plot them."""
    _checks.check_tensor("offsets", offsets)
    _check_positive_int("groups", groups)
    _check_positive_int("num_points", num_points)
    if offsets.shape[1] != 2 * groups * num_points:
        raise ValueError(
            f"offsets must have 2*groups*num_points = {2 * groups * num_points} channels, "
            f"got shape {tuple(offsets.shape)}")
    _checks.check_guide_size(offsets.shape[2], offsets.shape[3], in_size[0], in_size[1],
                             "offsets", "the input map")
    return sampled_reference.sampling_locations(offsets, groups, num_points, in_size)
