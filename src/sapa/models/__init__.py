"""Encoder-decoder networks whose upsampling stages are swappable by upsampler name."""
from __future__ import annotations

from .a2u_matting import A2UMatting
from .bts import BTS
from .fpn import FPN, timm_backbone
from .segformer import MIT_SIZES, SegFormer, SegFormerHead, mit_encoder
from .segnet import SegNet

MODELS = ("segnet", "fpn", "segformer")


def build_model(name: str, num_classes: int, upsampler: str, *, widths=(32, 64, 128, 256),
                backbone: str = "resnet18", pretrained: bool = False, channels: int = 128,
                segformer_size: str = "b0", weights: str | None = None,
                upsampler_kwargs: dict | None = None):
    """``"segnet"``: ``SegNet(num_classes, upsampler, widths)``; ``"fpn"``: ``FPN`` on the timm
    backbone ``backbone`` (``features_only``, strides 4-32); ``"segformer"``: ``SegFormer`` with
    MiT-``segformer_size``, encoder weights from the local path ``weights`` (default: random)."""
    if name == "segnet":
        return SegNet(num_classes, upsampler, widths, upsampler_kwargs=upsampler_kwargs)
    if name == "fpn":
        return FPN(timm_backbone(backbone, pretrained), num_classes, upsampler, channels,
                   upsampler_kwargs=upsampler_kwargs)
    if name == "segformer":
        return SegFormer(num_classes, upsampler, segformer_size, weights=weights,
                         upsampler_kwargs=upsampler_kwargs)
    raise ValueError(f"model must be one of {list(MODELS)}, got {name!r}")


__all__ = ["SegNet", "FPN", "BTS", "A2UMatting", "timm_backbone", "SegFormer", "SegFormerHead",
           "mit_encoder", "MIT_SIZES", "build_model", "MODELS"]
