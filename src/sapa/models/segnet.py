"""A SegNet-style encoder-decoder whose every upsampling stage is a named upsampler.

Following the paper's Appendix C (SegNet on SUN RGBD, all upsampling stages replaced): the
encoder is ``depth`` stages of conv-BN-ReLU blocks, each followed by 2x2 max pooling; the
decoder mirrors it, and where SegNet un-pools with the pooling indices, decoder stage ``i``
calls ``up_i(x, e_i)``: the upsampler, guided by the encoder feature ``e_i`` that was pooled
at that stage. There are no skip concatenations, so whatever high-resolution information
reaches the decoder passes through the upsamplers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules import build_upsampler
from ._blocks import check_num_classes, check_positive_ints, conv_bn_relu


class SegNet(nn.Module):
    """SegNet-style segmentation network with swappable upsamplers.

    ``forward(image)``: ``B x in_channels x H x W`` with ``H`` and ``W`` multiples of
    ``2**len(widths)``; returns logits ``B x num_classes x H x W``.

    Encoder stage ``i`` (``widths[i]`` channels) runs at ``H / 2**i``; the bottleneck at
    ``H / 2**depth``. Decoder stage ``i`` upsamples its ``widths[i]``-channel input to the size
    of ``e_i`` with ``upsamplers[i]`` (built as ``build_upsampler(upsampler, widths[i],
    widths[i], scale_factor=2)``), then runs ``convs_per_stage`` conv blocks ending at
    ``widths[i - 1]`` channels (``widths[0]`` for the last stage).

    Args:
        num_classes: output channels.
        upsampler: a name from ``sapa.list_upsamplers()``.
        widths: channels of each encoder stage, shallow to deep (SegNet's VGG-16: 64, 128,
            256, 512, 512).
        convs_per_stage: conv blocks per encoder and per decoder stage.
        in_channels: image channels.
        upsampler_kwargs: extra options for every upsampler (e.g. ``{"kernel_size": 3}``).
    """

    def __init__(self, num_classes: int, upsampler: str = "bilinear",
                 widths=(32, 64, 128, 256), convs_per_stage: int = 2, in_channels: int = 3,
                 upsampler_kwargs: dict | None = None):
        super().__init__()
        check_num_classes(num_classes)
        widths = check_positive_ints("widths", widths)
        check_positive_ints("convs_per_stage", [convs_per_stage])
        check_positive_ints("in_channels", [in_channels])
        self.num_classes, self.widths, self.upsampler_name = num_classes, widths, upsampler

        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoder.append(nn.Sequential(
                *[conv_bn_relu(cin if j == 0 else w, w) for j in range(convs_per_stage)]))
            cin = w

        self.upsamplers = nn.ModuleList(
            build_upsampler(upsampler, w, w, scale_factor=2, **(upsampler_kwargs or {}))
            for w in widths)
        self.decoder = nn.ModuleList()
        for i, w in enumerate(widths):
            wout = widths[max(i - 1, 0)]
            self.decoder.append(nn.Sequential(
                *[conv_bn_relu(w, w if j < convs_per_stage - 1 else wout)
                  for j in range(convs_per_stage)]))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    @property
    def stride(self) -> int:
        """Input sizes must be multiples of this."""
        return 2 ** len(self.widths)

    def check_input(self, image: torch.Tensor) -> None:
        if not isinstance(image, torch.Tensor) or image.dim() != 4:
            raise ValueError(f"image must be a B x C x H x W tensor, got "
                             f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
        h, w = image.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"image height and width must be multiples of {self.stride} "
                             f"(2**depth), got {h}x{w}")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.check_input(image)
        x, skips = image, []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        for i in reversed(range(len(self.widths))):
            x = self.upsamplers[i](x, skips[i])
            x = self.decoder[i](x)
        return self.classifier(x)

    def last_upsampler(self) -> nn.Module:
        """The upsampler of the last (highest-resolution) decoder stage."""
        return self.upsamplers[0]
