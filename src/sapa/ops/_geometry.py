"""Index arithmetic shared by the backends: projective locations and window offsets."""
from __future__ import annotations

import torch

# Denominator guard for the non-exponential normalizers (paper Table 6: "the other three have
# to play with the epsilon trick to prevent zero division").
EPS = 1e-6


def projective_index(out_size: int, in_size: int, device=None) -> torch.Tensor:
    """``floor(i' * in_size / out_size)`` for every ``i'`` in ``range(out_size)`` (int64).

    For ``out_size = s * in_size`` this is ``floor(i' / s)`` as in the paper; the general form
    makes any ``out_size >= in_size`` (such as ``2H + 1``) well defined.
    """
    return torch.arange(out_size, device=device, dtype=torch.int64) * in_size // out_size


def window_offsets(kernel_size: int):
    """Offsets ``(u, w)`` in ``[-r, r]^2`` in the row-major order of ``F.unfold``."""
    r = kernel_size // 2
    return [(u, w) for u in range(-r, r + 1) for w in range(-r, r + 1)]


def nearest_upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour upsampling with the operator's own projective location.

    ``F.interpolate(mode="nearest")`` computes its source index in floating point, which can
    disagree with ``floor(i' * H / H')`` for sizes that are not multiples; this never does.
    """
    h, w = x.shape[-2:]
    # Advanced indexing, not index_select: torch 2.13's CPU inductor miscompiles the backward of
    # index_select in these graphs (wrong gradients, heap corruption); docs/operator.md.
    return x[..., projective_index(size[0], h, x.device)[:, None],
             projective_index(size[1], w, x.device)]
