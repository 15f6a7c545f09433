"""Parameter-free interpolation upsamplers: nearest neighbour and bilinear.

Without a guide they upsample by ``scale_factor``; with one they produce the guide's spatial
size, whatever it is (``2H + 1`` included), so they can stand in for a guided upsampler.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import _checks
from ..ops._geometry import nearest_upsample
from ._inputs import check_x, positive_int
from .factory import register_upsampler


class _Interpolation(nn.Module):
    def __init__(self, in_channels: int, scale_factor: int = 2):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.scale_factor = positive_int("scale_factor", scale_factor)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, scale_factor={self.scale_factor}"

    def output_size(self, x: torch.Tensor, guide: torch.Tensor | None) -> tuple[int, int]:
        """Validate ``x`` (and ``guide``) and return ``(H', W')``."""
        check_x(x, self.in_channels)
        if guide is None:
            return self.scale_factor * x.shape[2], self.scale_factor * x.shape[3]
        _checks.check_tensor("guide", guide)
        if guide.shape[0] != x.shape[0]:
            raise ValueError(
                f"x and guide must have the same batch size, got {x.shape[0]} and {guide.shape[0]}")
        return guide.shape[2], guide.shape[3]


class NearestUpsample(_Interpolation):
    """Nearest-neighbour upsampling: ``out[i', j'] = x[floor(i' H / H'), floor(j' W / W')]``.

    The index is computed in integers, the projective location of ``sapa.sapa_attention``; for
    integer factors it equals ``F.interpolate(mode="nearest")``.

    ``forward(x, guide=None)``: ``x`` ``B x C x H x W`` -> ``B x C x sH x sW``, or the guide's
    ``H' x W'`` when a guide ``B x Cg x H' x W'`` is given (its values are not read).
    """

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        return nearest_upsample(x, self.output_size(x, guide))


class BilinearUpsample(_Interpolation):
    """Bilinear interpolation, ``F.interpolate(mode="bilinear", align_corners=False)``.

    ``forward(x, guide=None)``: ``x`` ``B x C x H x W`` -> ``B x C x sH x sW``, or the guide's
    ``H' x W'`` when a guide ``B x Cg x H' x W'`` is given (its values are not read).
    """

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        size = self.output_size(x, guide)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@register_upsampler("nearest", guided=False)
def nearest(in_channels, guide_channels=None, scale_factor=2):
    """``NearestUpsample(in_channels, scale_factor)``; ``guide_channels`` is unused."""
    return NearestUpsample(in_channels, scale_factor)


@register_upsampler("bilinear", guided=False)
def bilinear(in_channels, guide_channels=None, scale_factor=2):
    """``BilinearUpsample(in_channels, scale_factor)``; ``guide_channels`` is unused."""
    return BilinearUpsample(in_channels, scale_factor)
