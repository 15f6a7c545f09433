"""SAPA (or any sapa upsampler) in the feature pyramid of torchvision's detectors.

torchvision's ``FeaturePyramidNetwork`` merges each level with the coarser one as
``inner = lateral + F.interpolate(coarser, size=lateral.shape[-2:], mode="nearest")``, a
hard-coded nearest-neighbour upsampling. ``replace_fpn_upsampling`` turns every such step into
``inner = lateral + up(coarser, guide=lateral)`` with one upsampler module per step, the way
the SAPA authors' detection code (``FPN_UPSAMPLE`` in tiny-smart/detection-with-upsamplers)
does it: the decoder feature is the coarser, already merged map; the guide is the finer
lateral (the 1x1 projection of the backbone feature), so both have the FPN's width.

Example::

    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    replace_fpn_upsampling(model, "sapa-b")          # model.backbone.fpn now upsamples with SAPA-B
    model.load_state_dict(checkpoint, strict=False)  # a checkpoint of the unmodified model loads

Works for ``FeaturePyramidNetwork`` itself and for every model holding one (Faster, Mask and
Keypoint R-CNN, RetinaNet, FCOS, or any ``BackboneWithFPN``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from ..modules import build_upsampler

try:
    from torchvision.ops import FeaturePyramidNetwork
except Exception as exc:  # ImportError, or a torchvision built for another torch
    raise ImportError(f"sapa.integrations.torchvision needs torchvision, which cannot be imported "
                      f"here ({exc}); pip install 'sapa[detection]' (a torchvision built for "
                      "your torch)") from exc

__all__ = ["UpsamplingFeaturePyramidNetwork", "replace_fpn_upsampling"]


class UpsamplingFeaturePyramidNetwork(FeaturePyramidNetwork):
    """torchvision's ``FeaturePyramidNetwork`` with a module upsampling each top-down step.

    It holds the ``inner_blocks``, ``layer_blocks`` and ``extra_blocks`` of the FPN it was
    made from (the same modules, so the same ``state_dict`` keys and values) plus
    ``upsamplers``, where ``upsamplers[i]`` brings the merged map of level ``i + 1`` to level
    ``i``: ``inner_i = lateral_i + upsamplers[i](inner_{i+1}, lateral_i)``. Everything else in
    ``forward`` is torchvision's: with upsamplers that compute exactly
    ``F.interpolate(x, size=guide.shape[-2:], mode="nearest")`` the outputs are identical.

    ``forward(x)``: an ordered dict of ``B x C_l x H_l x W_l`` features, finest first (as
    torchvision's); returns an ordered dict of ``B x out_channels x H_l x W_l`` maps (plus the
    extra blocks' levels). Upsamplers with a fixed factor (``carafe``, ``deconv``,
    ``pixelshuffle``, ...) need every level to be exactly twice the next one (torchvision's
    detectors pad images to multiples of 32, which ensures it); SAPA, FADE and the
    interpolations take any ``H_l >= H_{l+1}``.

    Build one with ``from_fpn`` (or ``replace_fpn_upsampling``), not with the constructor.
    """

    def __init__(self, fpn: FeaturePyramidNetwork, upsamplers: nn.ModuleList):
        nn.Module.__init__(self)  # adopt fpn's blocks instead of building new ones
        if len(upsamplers) != len(fpn.inner_blocks) - 1:
            raise ValueError(f"upsamplers must hold one module per top-down step, "
                             f"{len(fpn.inner_blocks) - 1} for this FPN, got {len(upsamplers)}")
        self.inner_blocks = fpn.inner_blocks
        self.layer_blocks = fpn.layer_blocks
        self.extra_blocks = fpn.extra_blocks
        self.upsamplers = upsamplers

    @classmethod
    def from_fpn(cls, fpn: FeaturePyramidNetwork, upsampler: str,
                 **kwargs) -> UpsamplingFeaturePyramidNetwork:
        """``fpn``'s blocks (shared, not copied) with a new ``upsampler`` per top-down step.

        Args:
            fpn: a torchvision ``FeaturePyramidNetwork`` (or one of this class: its upsamplers
                are replaced).
            upsampler: a name of ``sapa.list_upsamplers()`` or a spec with options
                (``"sapa-b:kernel_size=7"``), as ``sapa.build_upsampler`` takes.
            **kwargs: the upsampler's own options (``kernel_size``, ``embed_dim``, ...).
        """
        if not isinstance(fpn, FeaturePyramidNetwork):
            raise TypeError(f"fpn must be a torchvision.ops.FeaturePyramidNetwork, got "
                            f"{type(fpn).__name__}")
        width = _fpn_width(fpn)
        ups = nn.ModuleList(build_upsampler(upsampler, width, width, scale_factor=2, **kwargs)
                            for _ in range(len(fpn.inner_blocks) - 1))
        like = next(fpn.parameters(), None)
        if like is not None:
            ups.to(device=like.device, dtype=like.dtype)
        out = cls(fpn, ups)
        out.train(fpn.training)
        return out

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = list(x.keys())
        feats = list(x.values())
        if len(feats) != len(self.inner_blocks):
            raise ValueError(f"x must hold {len(self.inner_blocks)} feature maps (one per FPN "
                             f"level), got {len(feats)}: {names}")
        last_inner = self.inner_blocks[-1](feats[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(feats) - 2, -1, -1):
            inner_lateral = self.inner_blocks[idx](feats[idx])
            last_inner = inner_lateral + self.upsamplers[idx](last_inner, inner_lateral)
            results.insert(0, self.layer_blocks[idx](last_inner))
        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, feats, names)
        return OrderedDict(zip(names, results))


def _fpn_width(fpn: FeaturePyramidNetwork) -> int:
    """``out_channels`` of the FPN: that of its 1x1 lateral convolutions."""
    convs = [m for m in fpn.inner_blocks[0].modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise TypeError("fpn.inner_blocks[0] holds no Conv2d: not a torchvision FPN layout")
    return convs[0].out_channels


def replace_fpn_upsampling(model_or_fpn: nn.Module, upsampler: str, **kwargs) -> nn.Module:
    """Make every torchvision FPN in ``model_or_fpn`` upsample with ``upsampler``.

    Each ``FeaturePyramidNetwork`` found (``model_or_fpn`` itself, or any submodule such as
    ``model.backbone.fpn``) is replaced by an ``UpsamplingFeaturePyramidNetwork`` holding the
    same blocks, so every other parameter keeps its value and its ``state_dict`` key: a
    checkpoint of the unmodified model loads with ``strict=False`` reporting only the
    upsamplers' keys (``...fpn.upsamplers.*``) as missing.

    Args:
        model_or_fpn: a ``FeaturePyramidNetwork`` or a model containing one or more.
        upsampler: a name of ``sapa.list_upsamplers()`` or a spec (``"sapa-b:kernel_size=7"``);
            one module per top-down step, each ``build_upsampler(upsampler, C, C,
            scale_factor=2, **kwargs)`` with ``C`` the FPN width, on the FPN's device and dtype.
        **kwargs: the upsampler's own options.

    Returns:
        The model, changed in place; when ``model_or_fpn`` is itself the FPN, the new FPN.

    Raises:
        TypeError: ``model_or_fpn`` is not an ``nn.Module``.
        ValueError: it contains no ``FeaturePyramidNetwork``, or ``upsampler`` is unknown.
    """
    if not isinstance(model_or_fpn, nn.Module):
        raise TypeError(f"model_or_fpn must be an nn.Module, got {type(model_or_fpn).__name__}")
    if isinstance(model_or_fpn, FeaturePyramidNetwork):
        return UpsamplingFeaturePyramidNetwork.from_fpn(model_or_fpn, upsampler, **kwargs)
    # the FPNs' parents, found before anything changes (an FPN inside an FPN is not a layout)
    sites = [(parent, name, child) for parent in model_or_fpn.modules()
             for name, child in parent.named_children() if isinstance(child, FeaturePyramidNetwork)]
    if not sites:
        raise ValueError(f"model_or_fpn ({type(model_or_fpn).__name__}) contains no "
                         "torchvision.ops.FeaturePyramidNetwork")
    # build every replacement before changing anything, so a bad option leaves the model as it was
    new = [UpsamplingFeaturePyramidNetwork.from_fpn(fpn, upsampler, **kwargs)
           for _, _, fpn in sites]
    for (parent, name, _), fpn in zip(sites, new):
        setattr(parent, name, fpn)
    return model_or_fpn
