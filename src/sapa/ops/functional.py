"""The public functional API of the window operator: the autocast policy, validation, then the
reference (plain autograd) or the custom op, whose backend is chosen when it runs."""
from __future__ import annotations

import torch

from . import _checks, _library, _onnx, dispatch
from ._dtypes import apply_autocast_policy
from .backends import reference


def sapa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int = 5,
    *,
    normalizer: str = "softmax",
    border: str = "zeros",
    backend: str | None = None,
) -> torch.Tensor:
    """Similarity-aware local attention: the SAPA operator (paper Eq. 2-3).

    For every output point ``l' = (i', j')`` with projective location
    ``l = (floor(i' * H / H'), floor(j' * W / W'))``::

        s_p = <q[:, :, i', j'], k[:, :, l + p]>          p in [-r, r]^2, r = K // 2
        w_p = h(s_p) / sum_p h(s_p)                       (softmax: h = exp)
        out[:, :, i', j'] = sum_p w_p * v[:, :, l + p]

    Args:
        q: queries from the high-resolution guide, ``B x d x H' x W'`` with ``H' >= H, W' >= W``.
        k: keys from the low-resolution feature, ``B x d x H x W``.
        v: values to reassemble, ``B x C x H x W``.
        kernel_size: window size ``K``, odd and >= 1.
        normalizer: ``"softmax"`` (``h = exp``), ``"relu"``, ``"sigmoid"``, ``"softplus"``
            (these divide by ``sum h + 1e-6``) or ``"none"`` (``w_p = s_p``).
        border: ``"zeros"``: window points outside the map count as ``k = 0, v = 0`` and still
            take part in the normalisation (the official kernels); ``"valid"``: they are left
            out of both sums.
        backend: ``None`` chooses automatically, when the op runs; a name from
            ``sapa.ops.list_backends()`` (or ``"cpu"``, an alias of ``"numba"``) forces one.

    Returns:
        ``B x C x H' x W'``, the dtype of the inputs (under ``torch.autocast``: the autocast
        dtype, see ``docs/operator.md``).
    """
    return apply_autocast_policy(_attention, (q, k, v), kernel_size, normalizer, border, backend)


def _attention(q, k, v, kernel_size, normalizer, border, backend):
    _checks.check_attention_args(q, k, v, kernel_size, normalizer, border)
    name = dispatch.canonical_backend(backend)
    if dispatch.exporting_onnx():  # the backend does not matter in an ONNX graph
        return _onnx.sapa_attention(q, k, v, kernel_size, normalizer, border)
    if name == "reference":
        return reference.sapa_attention(q, k, v, kernel_size, normalizer, border)
    return _library.attention(q, k, v, kernel_size, normalizer, border, name)[0]


def local_similarity(
    q: torch.Tensor,
    k: torch.Tensor,
    kernel_size: int = 5,
    *,
    border: str = "zeros",
    backend: str | None = None,
) -> torch.Tensor:
    """Scores ``s_p = <q_{l'}, k_{l+p}>`` of every output point against its window.

    Args:
        q: ``B x d x H' x W'``; k: ``B x d x H x W`` with ``H' >= H, W' >= W``.
        kernel_size: odd ``K``.
        border: ``"zeros"``: outside points score 0 (``k = 0``); ``"valid"``: they score
            ``-inf``, so a softmax over dim 1 leaves them out.

        backend: as ``sapa_attention``.

    Returns:
        ``B x K*K x H' x W'``; index ``p = (u + r) * K + (w + r)``, row-major as in ``F.unfold``.
    """
    return apply_autocast_policy(_similarity, (q, k), kernel_size, border, backend)


def _similarity(q, k, kernel_size, border, backend):
    _checks.check_similarity_args(q, k, kernel_size, border)
    name = dispatch.canonical_backend(backend)
    if dispatch.exporting_onnx():  # the backend does not matter in an ONNX graph
        return _onnx.local_similarity(q, k, kernel_size, border)
    if name == "reference":
        return reference.local_similarity(q, k, kernel_size, border)
    return _library.similarity(q, k, kernel_size, border, name)


def local_assemble(
    kernels: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int = 5,
    *,
    border: str = "zeros",
    backend: str | None = None,
) -> torch.Tensor:
    """Reassemble ``v`` with per-point kernels: ``out_{l'} = sum_p kernels[p, l'] * v_{l+p}``.

    Args:
        kernels: ``B x K*K x H' x W'`` (index order as ``local_similarity``), not renormalised.
        v: ``B x C x H x W`` with ``H' >= H, W' >= W``.
        kernel_size: odd ``K``.
        border: outside points hold ``v = 0``, so ``"zeros"`` and ``"valid"`` give the same
            sum; the argument exists so that both primitives are called alike.
        backend: as ``sapa_attention``.

    Returns:
        ``B x C x H' x W'``.
    """
    return apply_autocast_policy(_assemble, (kernels, v), kernel_size, border, backend)


def _assemble(kernels, v, kernel_size, border, backend):
    _checks.check_assemble_args(kernels, v, kernel_size, border)
    name = dispatch.canonical_backend(backend)
    if dispatch.exporting_onnx():  # the backend does not matter in an ONNX graph
        return _onnx.local_assemble(kernels, v, kernel_size, border)
    if name == "reference":
        return reference.local_assemble(kernels, v, kernel_size, border)
    return _library.assemble(kernels, v, kernel_size, border, name)
