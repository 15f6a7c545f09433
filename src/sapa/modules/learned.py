"""Learned upsamplers with a fixed integer factor and no guide: transposed convolution and
pixel shuffle, plus the input contract every guide-free fixed-factor upsampler shares.

Configured as mmcv / mmdetection build them for the CARAFE comparisons (``FPN_CARAFE`` with
``upsample_cfg=dict(type='deconv' | 'pixel_shuffle', upsample_kernel=k)``), the harness the
later papers (IndexNet, A2U, FADE, SAPA, DySample) compare in: an odd ``k x k`` kernel with
``(k - 1) // 2`` padding, Xavier-uniform weights and zero biases.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import _checks
from ._inputs import check_x, odd_int, positive_int
from .factory import register_upsampler


def xavier_uniform_(module: nn.Module) -> None:
    """Xavier-uniform weight and zero bias (mmcv's ``xavier_init(m, distribution='uniform')``)."""
    nn.init.xavier_uniform_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class FixedScaleUpsampler(nn.Module):
    """Base of the guide-free upsamplers whose output is exactly ``scale_factor`` x the input.

    ``forward(x, guide=None)`` takes ``x``: ``B x C x H x W``. A guide is accepted and ignored,
    but its spatial size must then be exactly ``sH x sW``: these modules cannot produce any
    other size, and they never crop or pad to fit one.
    """

    def __init__(self, in_channels: int, scale_factor: int):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.scale_factor = positive_int("scale_factor", scale_factor)

    @property
    def guide_scale(self) -> int:
        """A guide, when given, must be exactly this many times ``x``'s size (see
        ``sapa.deploy.upsampler_axes``)."""
        return self.scale_factor

    def check_inputs(self, x: torch.Tensor, guide: torch.Tensor | None) -> None:
        name = type(self).__name__
        check_x(x, self.in_channels)
        if guide is None:
            return
        _checks.check_tensor("guide", guide)
        if guide.shape[0] != x.shape[0]:
            raise ValueError(
                f"x and guide must have the same batch size, got {x.shape[0]} and {guide.shape[0]}")
        s = self.scale_factor
        want = (s * x.shape[2], s * x.shape[3])
        if tuple(guide.shape[2:]) != want:
            raise ValueError(
                f"{name} upsamples by exactly scale_factor={s}, so x of spatial size "
                f"{x.shape[2]}x{x.shape[3]} gives {want[0]}x{want[1]}, but the guide is "
                f"{guide.shape[2]}x{guide.shape[3]}; use 'nearest'/'bilinear' (any size) "
                "or a guided upsampler for other sizes")

    def extra_repr(self) -> str:
        return f"{self.in_channels}, scale_factor={self.scale_factor}"


class Deconv(FixedScaleUpsampler):
    """Transposed convolution (Zeiler et al. 2010; the "Deconv" baseline of CARAFE, SAPA, FADE).

    ``ConvTranspose2d(C, C, k, stride=s, padding=(k - 1) // 2, output_padding=s - 1)``: for odd
    ``k`` the output is exactly ``B x C x sH x sW`` (for ``s = 2`` this is mmdetection's
    ``output_padding = (k - 1) // 2``).

    Args:
        in_channels: ``C`` (also the output channels).
        scale_factor: ``s``, the stride.
        kernel_size: odd ``k``; default ``2s - 1``, i.e. 3 for ``s = 2``, the smallest odd
            kernel that reaches every output point (with ``k < s`` some outputs are only the bias).
    """

    def __init__(self, in_channels: int, scale_factor: int = 2, *, kernel_size: int | None = None):
        super().__init__(in_channels, scale_factor)
        s = self.scale_factor
        kernel_size = 2 * s - 1 if kernel_size is None else kernel_size
        self.kernel_size = odd_int("kernel_size", kernel_size)
        self.deconv = nn.ConvTranspose2d(
            in_channels, in_channels, kernel_size, stride=s,
            padding=(kernel_size - 1) // 2, output_padding=s - 1)
        xavier_uniform_(self.deconv)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``B x C x H x W`` -> ``B x C x sH x sW``; ``guide`` is ignored."""
        self.check_inputs(x, guide)
        return self.deconv(x)


class PixelShuffleUpsampler(FixedScaleUpsampler):
    """Convolution to ``C * s^2`` channels, then pixel shuffle (Shi et al. CVPR 2016), as
    mmcv's ``PixelShufflePack``.

    Args:
        in_channels: ``C`` (also the output channels).
        scale_factor: ``s``.
        kernel_size: odd ``k`` of the expanding convolution (default 3).
    """

    def __init__(self, in_channels: int, scale_factor: int = 2, *, kernel_size: int = 3):
        super().__init__(in_channels, scale_factor)
        self.kernel_size = odd_int("kernel_size", kernel_size)
        s = self.scale_factor
        self.conv = nn.Conv2d(in_channels, in_channels * s * s, kernel_size,
                              padding=(kernel_size - 1) // 2)
        xavier_uniform_(self.conv)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``B x C x H x W`` -> ``B x C x sH x sW``; ``guide`` is ignored."""
        self.check_inputs(x, guide)
        return F.pixel_shuffle(self.conv(x), self.scale_factor)


@register_upsampler("deconv", guided=False, module=Deconv)
def deconv(in_channels, guide_channels=None, scale_factor=2, **kwargs):
    """``Deconv(in_channels, scale_factor, **kwargs)``; ``guide_channels`` is unused."""
    return Deconv(in_channels, scale_factor, **kwargs)


@register_upsampler("pixelshuffle", guided=False, module=PixelShuffleUpsampler)
def pixelshuffle(in_channels, guide_channels=None, scale_factor=2, **kwargs):
    """``PixelShuffleUpsampler(in_channels, scale_factor, **kwargs)``; ``guide_channels``
    is unused."""
    return PixelShuffleUpsampler(in_channels, scale_factor, **kwargs)
