"""Channel normalisations for NCHW feature maps (SAPA normalises q and k inputs before similarity)."""
from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F

NORMS = ("layer", "group", "none")


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channel dimension of a ``B x C x H x W`` map, at every pixel.

    Returns ``layer_norm``'s channels-last result as a ``B x C x H x W`` view (no copy back to
    NCHW); the 1x1 projections that follow are ``Pointwise``, which read it as it lies (a bare
    convolution on it does not compile with dynamic sizes, see ``Pointwise``).
    """

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def build_norm(kind: str, channels: int) -> nn.Module:
    """``"layer"``: LayerNorm over channels (the paper); ``"group"``: GroupNorm with up to 32
    groups (the authors' extension); ``"none"``: identity."""
    if kind == "layer":
        return ChannelLayerNorm(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")
