"""Faster R-CNN with a ResNet-FPN backbone (torchvision) whose FPN upsamples with a sapa
upsampler: the paper's detection model (Table 3), sized to train on a CPU when asked.

The detector is torchvision's ``FasterRCNN`` on a ``BackboneWithFPN`` (ResNet stages 1-4,
a max-pooled extra level: five pyramid levels P2-P6), and every top-down step of the FPN is
``lateral + up(coarser, guide=lateral)`` (``sapa.integrations.torchvision``). What differs from
torchvision's ``fasterrcnn_resnet50_fpn`` is only what makes it small:

- the FPN width ``fpn_channels`` (torchvision: 256) and the box head's ``representation_size``;
- the input size: images are resized so the shorter side is ``image_size`` (at most
  ``image_size * 1333 / 800`` on the longer side: COCO's 800/1333 ratio), and the anchor sizes
  are torchvision's ``(32, 64, 128, 256, 512)`` scaled by ``image_size / 800``, so anchors
  cover the same share of the image as at COCO's 800 pixels;
- the number of proposals and of sampled anchors and RoIs (``detector_kwargs``).

Backbone weights: random (``BatchNorm2d``, every stage trainable) unless ``backbone_weights``
names a local torchvision ResNet state dict (e.g. ``resnet50-0676ba61.pth`` from
torchvision's ``ResNet50_Weights.IMAGENET1K_V1``); then, as torchvision does for pretrained
backbones, its BatchNorms are frozen (``FrozenBatchNorm2d``) and the stem and the first stage
are not trained (``trainable_layers=3``).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from ..errors import UsageError

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
# torchvision's defaults at COCO's scale (min_size 800)
COCO_MIN_SIZE, COCO_MAX_SIZE = 800, 1333
COCO_ANCHORS = (32, 64, 128, 256, 512)


def _torchvision():
    try:
        import torchvision
        from torchvision.models.detection import FasterRCNN  # noqa: F401
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise ImportError(f"the detection model needs torchvision, which cannot be imported "
                          f"here ({exc}); pip install 'sapa[detection]'") from exc
    return torchvision


def anchor_sizes(image_size: int) -> tuple[tuple[float, ...], ...]:
    """One anchor size per pyramid level (P2-P6): torchvision's COCO anchors scaled by
    ``image_size / 800``."""
    return tuple((a * image_size / COCO_MIN_SIZE,) for a in COCO_ANCHORS)


def _load_backbone_weights(resnet: nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise UsageError(f"--backbone-weights: no such file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"--backbone-weights: cannot read {path} as a torch state dict "
                         f"({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"--backbone-weights: {path} holds a {type(state).__name__}, "
                         "not a state dict")
    own = resnet.state_dict()
    optional = ("num_batches_tracked",)
    missing = [k for k in own if k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if k not in own and not k.endswith(optional)]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        problems = [f"{what} {keys[:3]}{'...' if len(keys) > 3 else ''}"
                    for what, keys in found if keys]
        raise UsageError(f"--backbone-weights: {path} does not fit this torchvision ResNet: "
                         + "; ".join(problems))
    resnet.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def build_faster_rcnn(num_classes: int, upsampler: str, *, backbone: str = "resnet18",
                      fpn_channels: int = 256, image_size: int = 800,
                      representation_size: int = 1024, backbone_weights: str | None = None,
                      upsampler_kwargs: dict | None = None, **detector_kwargs) -> nn.Module:
    """A torchvision ``FasterRCNN`` whose FPN upsamples with ``upsampler``.

    Args:
        num_classes: object categories, without the background (the detector predicts
            ``num_classes + 1`` classes; label 0 is the background).
        upsampler: a name of ``sapa.list_upsamplers()`` for every FPN top-down step.
        backbone: one of ``BACKBONES``.
        fpn_channels: FPN width.
        image_size: the shorter side images are resized to (a multiple of 32 keeps every
            pyramid level exactly twice the next; the transform pads to 32 anyway).
        representation_size: width of the two-layer box head.
        backbone_weights: a local torchvision ResNet state dict, or ``None`` (random).
        upsampler_kwargs: the upsampler's own options.
        **detector_kwargs: passed to ``FasterRCNN`` (``rpn_pre_nms_top_n_train``,
            ``box_batch_size_per_image``, ...).
    """
    tv = _torchvision()
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops.misc import FrozenBatchNorm2d

    from ..integrations.torchvision import replace_fpn_upsampling

    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {backbone!r}")
    for name, val in (("num_classes", num_classes), ("fpn_channels", fpn_channels),
                      ("image_size", image_size), ("representation_size", representation_size)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    pretrained = backbone_weights is not None
    norm = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    resnet = getattr(tv.models, backbone)(weights=None, norm_layer=norm)
    if pretrained:
        _load_backbone_weights(resnet, backbone_weights)
    # torchvision's rule: 3 trainable stages for a pretrained backbone, all 5 from scratch
    trainable = ["layer4", "layer3", "layer2"] if pretrained else ["layer4", "layer3", "layer2",
                                                                  "layer1", "conv1", "bn1"]
    for name, p in resnet.named_parameters():
        p.requires_grad_(any(name.startswith(t) for t in trainable))
    stage2 = resnet.inplanes // 8  # channels of layer1's output (64 or 256)
    body = BackboneWithFPN(resnet, {f"layer{k}": str(k - 1) for k in range(1, 5)},
                           [stage2 * 2 ** i for i in range(4)], fpn_channels)
    anchors = AnchorGenerator(anchor_sizes(image_size), ((0.5, 1.0, 2.0),) * 5)
    # torchvision's box head and predictor, built here only to set their width
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    box_predictor = FastRCNNPredictor(representation_size, num_classes + 1)
    model = FasterRCNN(body, num_classes=None, min_size=image_size,
                       max_size=int(image_size * COCO_MAX_SIZE / COCO_MIN_SIZE),
                       rpn_anchor_generator=anchors, box_head=box_head,
                       box_predictor=box_predictor, **detector_kwargs)
    return replace_fpn_upsampling(model, upsampler, **(upsampler_kwargs or {}))
