"""``Pointwise``: the 1x1 projection that follows a channel norm, computed in its input's layout."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def is_channels_last_view(x: torch.Tensor) -> bool:
    """Whether ``x`` (``B x C x H x W``) is laid out channels-last and not also NCHW-contiguous."""
    return (x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


class Pointwise(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` (same parameters, same state dict) that, on a channels-last input,
    multiplies the channels-last view by the weight (``F.linear``, as the SAPA release's
    ``nn.Linear`` on ``B x H x W x C``) and returns the result NCHW-contiguous.

    ``ChannelLayerNorm`` returns ``layer_norm``'s channels-last result as a ``B x C x H x W``
    view. Inductor (torch 2.13, 2.14) cannot compile such a view, with dynamic sizes, as the
    input of a convolution or as a tensor saved for backward (``cannot determine truth value of
    Relational``), and the CPU convolution copies it to NCHW first. The matrix product reads it
    as it lies and writes the ``C_out`` channels (usually fewer than ``C_in``) NCHW.
    NCHW inputs go to the convolution unchanged.

    ``forward(x)``: ``B x C_in x H x W`` -> ``B x C_out x H x W``.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last_view(x):
            out = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
            return out.permute(0, 3, 1, 2).contiguous()
        return super().forward(x)
