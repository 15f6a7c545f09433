"""IndexNet index blocks as guided x2 upsamplers: ``indexnet-hin`` and ``indexnet-m2o``.

Lu, Dai, Shen, Xu, "Indices Matter: Learning to Index for Deep Image Matting", ICCV 2019, and
"Index Networks", TPAMI 2022 (code: poppinace/indexnet_matting, ``hlindex.py``, ``hldecoder.py``).

An index block looks at the encoder feature (the guide, ``2H x 2W``) and predicts, for every
``2 x 2`` cell, four logits with a stride-2 convolution. IndexNet turns them into two maps:
the encoder index (``softmax(sigmoid(.))`` over the four, used to pool the encoder) and the
decoder index (``sigmoid(.)``), both pixel-shuffled back to ``2H x 2W``. Upsampling is the
decoder's "indexed upsampling"::

    out = pixel_shuffle(sigmoid(index_block(guide)), 2) * NN(x)

with no further factor: the ``4 *`` in the released code multiplies the encoder's average
pooling (``4 * avg_pool(idx_en * x)``), not the decoder.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import _checks
from ..ops._geometry import nearest_upsample
from ._inputs import check_guided, positive_int
from .factory import register_upsampler

BLOCKS = ("holistic", "m2o")


def _init_conv(conv: nn.Conv2d, out_channels: int) -> None:
    """The released code's init: ``N(0, 2 / (k_h * k_w * out_channels))`` (He, fan-out).

    ``out_channels`` is that of the code's own convolution, which for the fused M2O
    branches is a quarter of ``conv.out_channels``.
    """
    n = conv.kernel_size[0] * conv.kernel_size[1] * out_channels
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))


class IndexNetUpsample(nn.Module):
    """IndexNet's index block (holistic or depthwise many-to-one) used as an x2 upsampler.

    ``forward(x, guide)``: ``x`` the decoder feature ``B x C x H x W``, ``guide`` the encoder
    feature ``B x Cg x 2H x 2W``; returns ``B x C x 2H x 2W``. Only exactly twice ``x``'s size
    is supported (the index block is a stride-2 convolution followed by a x2 pixel shuffle);
    any other guide size raises ``ValueError``.

    Blocks (``k x k`` the index convolution: ``4 x 4`` with padding 1 when ``context``, else
    ``2 x 2``):

    - ``"holistic"`` (HIN): one index map shared by all channels, ``B x 1 x 2H x 2W``.
      Nonlinear: ``conv_k(Cg -> 2Cg)``, BN, ReLU6, ``conv_1x1(2Cg -> 4)``: ``32Cg^2 + 8Cg``
      weights with context (SAPA Table 1) plus ``4Cg`` BN parameters.
    - ``"m2o"`` (depthwise many-to-one): one index map per channel, ``B x C x 2H x 2W``, so it
      needs ``Cg == C``. Four branches, one per position in the ``2 x 2`` cell, each
      ``conv_k(C -> C)``, BN, ReLU6, ``conv_1x1(C -> C)``: ``68C^2`` weights with context
      (SAPA Table 1) plus ``8C`` BN parameters. The four branches are stored fused: one
      ``conv_k(C -> 4C)``, ``BatchNorm2d(4C)`` and a ``conv_1x1`` with ``groups=4``, output
      channel ``j * C + c`` being branch ``j`` (cell position ``(j // 2, j % 2)``), channel ``c``.

    Table 1 counts convolution weights only; the BN affine parameters come on top.

    Args:
        in_channels: ``C``, channels of ``x``.
        guide_channels: ``Cg``, channels of the guide (default ``C``).
        block: ``"holistic"`` or ``"m2o"``.
        nonlinear: the two-layer index block (default, as Table 1 counts and the released
            training script uses) instead of a single convolution.
        context: ``4 x 4`` index convolutions (default) instead of ``2 x 2``.
    """

    # the guide must be exactly this many times x's size (see sapa.deploy.upsampler_axes)
    guide_scale = 2

    def __init__(self, in_channels: int, guide_channels: int | None = None, *,
                 block: str = "holistic", nonlinear: bool = True, context: bool = True):
        super().__init__()
        positive_int("in_channels", in_channels)
        guide_channels = in_channels if guide_channels is None else guide_channels
        positive_int("guide_channels", guide_channels)
        _checks.check_choice("block", block, BLOCKS)
        if block == "m2o" and guide_channels != in_channels:
            raise ValueError(
                "block 'm2o' predicts one index map per channel and needs guide_channels == "
                f"in_channels, got {guide_channels} and {in_channels}; use block 'holistic'")
        self.in_channels, self.guide_channels = in_channels, guide_channels
        self.block, self.nonlinear, self.context = block, bool(nonlinear), bool(context)

        c = guide_channels
        k, pad = (4, 1) if context else (2, 0)
        # the m2o branches are fused: their outputs are stacked along the channels
        branches = 1 if block == "holistic" else 4
        first_out = (2 * c if nonlinear else 4) if block == "holistic" else 4 * c
        first = nn.Conv2d(c, first_out, k, stride=2, padding=pad, bias=False)
        _init_conv(first, first_out // branches)
        if nonlinear:
            last_out = 4 if block == "holistic" else 4 * c
            last = nn.Conv2d(first_out, last_out, 1, groups=branches, bias=False)
            _init_conv(last, last_out // branches)
            self.index = nn.Sequential(first, nn.BatchNorm2d(first_out), nn.ReLU6(), last)
        else:
            self.index = first

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, guide_channels={self.guide_channels}, block={self.block!r}, "
                f"nonlinear={self.nonlinear}, context={self.context}")

    def _check_inputs(self, x, guide):
        check_guided("IndexNet", x, guide, self.in_channels, self.guide_channels, exact_scale=2)

    def index_map(self, guide: torch.Tensor) -> torch.Tensor:
        """The decoder index ``sigmoid`` map, ``B x 1 x 2H x 2W`` (holistic) or ``B x C x 2H x 2W``
        (m2o), for a guide ``B x Cg x 2H x 2W``."""
        logits = self.index(guide)
        if self.block == "m2o":
            # branch-major (j * C + c) -> channel-major (c * 4 + j), as pixel_shuffle expects
            b, _, h, w = logits.shape
            logits = logits.view(b, 4, -1, h, w).transpose(1, 2).reshape(b, -1, h, w)
        return F.pixel_shuffle(torch.sigmoid(logits), 2)

    @torch.no_grad()
    def kernels(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The index map ``B x 1 x 2H x 2W`` (for m2o the mean over channels), for visualisation."""
        self._check_inputs(x, guide)
        idx = self.index_map(guide)
        return idx if self.block == "holistic" else idx.mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, guide)
        return self.index_map(guide) * nearest_upsample(x, guide.shape[-2:])


def _check_x2(name, scale_factor):
    if scale_factor != 2 or isinstance(scale_factor, bool):
        raise ValueError(
            f"{name} upsamples exactly x2 (stride-2 index blocks), got scale_factor={scale_factor!r}")


@register_upsampler("indexnet-hin", guided=True, module=IndexNetUpsample,
                    fixed=("block",))
def indexnet_hin(in_channels, guide_channels=None, scale_factor=2, **kwargs):
    """IndexNet holistic index block (HIN): ``IndexNetUpsample(..., block="holistic")``."""
    _check_x2("indexnet-hin", scale_factor)
    return IndexNetUpsample(in_channels, guide_channels, block="holistic", **kwargs)


@register_upsampler("indexnet-m2o", guided=True, module=IndexNetUpsample,
                    fixed=("block",))
def indexnet_m2o(in_channels, guide_channels=None, scale_factor=2, **kwargs):
    """IndexNet depthwise many-to-one index block (M2O): ``IndexNetUpsample(..., block="m2o")``."""
    _check_x2("indexnet-m2o", scale_factor)
    return IndexNetUpsample(in_channels, guide_channels, block="m2o", **kwargs)
