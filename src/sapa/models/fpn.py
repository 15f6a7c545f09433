"""An FPN-style segmentation decoder on a ``timm`` backbone, with swappable upsamplers.

The backbone is anything with timm's ``features_only`` interface: calling it returns a list of
feature maps, shallow to deep, and ``backbone.feature_info.channels()`` /
``.reduction()`` describe them. Each level gets a 1x1 lateral projection to ``channels``;
the top-down path is ``p_i = lateral_i + up_i(p_{i+1}, lateral_i)``, where ``up_i`` is the named
upsampler guided by the matching (projected) encoder feature. The finest level goes through a
3x3 conv block and the classifier; the logits are resized to the image bilinearly, because no
encoder feature exists at full resolution to guide that last step (as the paper does for
depth estimation).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules import build_upsampler
from ._blocks import check_num_classes, check_positive_ints, conv_bn_relu

TIMM_EXTRA_HINT = "pip install 'sapa[timm]' (timm needs torchvision built for your torch)"


def timm_backbone(name: str, pretrained: bool = False, out_indices=(1, 2, 3, 4)) -> nn.Module:
    """``timm.create_model(name, features_only=True, ...)``; timm is imported here, lazily.

    ``pretrained=True`` loads weights through timm (from its cache, or the Hugging Face hub
    when online); without it the backbone is randomly initialised and nothing is downloaded.
    """
    try:
        import timm
    except Exception as exc:  # ImportError, or timm failing to import torchvision
        raise ImportError(f"--model fpn needs timm, which cannot be imported here ({exc}); "
                          f"{TIMM_EXTRA_HINT}") from exc
    try:
        return timm.create_model(name, features_only=True, pretrained=pretrained,
                                 out_indices=tuple(out_indices))
    except Exception as exc:
        if pretrained:
            raise RuntimeError(
                f"could not load pretrained weights for timm backbone {name!r} ({exc}); they "
                "must be in timm's cache when offline; drop --pretrained to start from random "
                "weights") from exc
        raise


class FPN(nn.Module):
    """FPN decoder over ``backbone``'s feature pyramid.

    ``forward(image)``: ``B x 3 x H x W`` (``H``, ``W`` multiples of the coarsest reduction);
    returns logits ``B x num_classes x H x W``.

    Args:
        backbone: a module returning a list of features; ``backbone.feature_info.channels()``
            and ``.reduction()`` list their channels and strides, consecutive strides must
            differ by a factor 2.
        num_classes: output channels.
        upsampler: a name from ``sapa.list_upsamplers()``, used at every top-down step.
        channels: width of the pyramid.
        upsampler_kwargs: extra options for every upsampler.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, upsampler: str = "bilinear",
                 channels: int = 128, upsampler_kwargs: dict | None = None):
        super().__init__()
        check_num_classes(num_classes)
        check_positive_ints("channels", [channels])
        info = getattr(backbone, "feature_info", None)
        if info is None or not hasattr(info, "channels") or not hasattr(info, "reduction"):
            raise TypeError("backbone must expose timm's feature_info with channels() and "
                            "reduction() (create it with features_only=True)")
        in_channels = check_positive_ints("backbone.feature_info.channels()", info.channels())
        reductions = check_positive_ints("backbone.feature_info.reduction()", info.reduction())
        if len(in_channels) != len(reductions) or len(reductions) < 2:
            raise ValueError(f"the backbone must give at least 2 levels with one channel count and one "
                             f"reduction each, got channels {in_channels} and reductions {reductions}")
        for a, b in zip(reductions, reductions[1:]):
            if b != 2 * a:
                raise ValueError(f"consecutive backbone reductions must double, got {reductions}")
        self.backbone, self.num_classes = backbone, num_classes
        self.reductions, self.upsampler_name = reductions, upsampler
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        # upsamplers[i] brings level i + 1 to level i
        self.upsamplers = nn.ModuleList(
            build_upsampler(upsampler, channels, channels, scale_factor=2,
                            **(upsampler_kwargs or {}))
            for _ in reductions[:-1])
        self.head = conv_bn_relu(channels, channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    @property
    def stride(self) -> int:
        """Input sizes must be multiples of this."""
        return self.reductions[-1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.dim() != 4:
            raise ValueError("image must be a B x C x H x W tensor")
        h, w = image.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"image height and width must be multiples of {self.stride} "
                             f"(the coarsest backbone reduction), got {h}x{w}")
        feats = self.backbone(image)
        if len(feats) != len(self.lateral):
            raise ValueError(f"the backbone returned {len(feats)} features, its feature_info "
                             f"lists {len(self.lateral)}")
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        p = lat[-1]
        for i in reversed(range(len(lat) - 1)):
            p = lat[i] + self.upsamplers[i](p, lat[i])
        logits = self.classifier(self.head(p))
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)

    def last_upsampler(self) -> nn.Module:
        """The upsampler of the last (highest-resolution) top-down step."""
        return self.upsamplers[0]
