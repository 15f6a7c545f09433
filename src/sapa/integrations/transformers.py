"""Hugging Face ``transformers``: SegFormer with a sapa upsampler in its decode head.

::

    from transformers import SegformerForSemanticSegmentation
    from sapa.integrations.transformers import segformer_with_upsampler

    model = SegformerForSemanticSegmentation.from_pretrained("nvidia/segformer-b1-finetuned-ade-512-512")
    segformer_with_upsampler(model, "sapa-g")     # in place; returns the model
    loss = model(pixel_values=images, labels=labels).loss   # fine-tune as before

The decode head becomes ``sapa.models.segformer.SegFormerHead``: the model's own projections,
fuse conv, BatchNorm, dropout and classifier (weights kept), with the three bilinear resizes
replaced by six guided x2 upsamplers in the order of the SAPA / FADE releases (see
``sapa.models.segformer``). Only the upsamplers are new (randomly initialised).

Saving and reloading: ``from_pretrained`` builds the stock head and drops the upsamplers'
weights, so reload with ``segformer_with_upsampler`` then ``model.load_state_dict(saved)``.
"""
from __future__ import annotations

import copy

import torch.nn as nn

from ..models.segformer import SegFormerHead

__all__ = ["segformer_with_upsampler"]


def segformer_with_upsampler(model: nn.Module, upsampler: str, **upsampler_kwargs) -> nn.Module:
    """Replace the decode head of a ``transformers`` SegFormer by one whose upsampling is
    ``upsampler``; returns ``model`` (changed in place).

    Args:
        model: a ``SegformerForSemanticSegmentation`` (anything with a ``decode_head`` of type
            ``transformers``' ``SegformerDecodeHead`` and a ``SegformerConfig`` as ``config``).
        upsampler: a name from ``sapa.list_upsamplers()`` (``"bilinear"`` gives back the
            original computation).
        **upsampler_kwargs: options of every upsampler module (``kernel_size=3``, ...).

    Raises:
        TypeError: ``model`` is not a SegFormer for semantic segmentation.
        ValueError: its configuration is one the head cannot serve (``reshape_last_stage=False``),
            or the upsampler name or options are wrong.
    """
    from transformers.models.segformer.modeling_segformer import SegformerDecodeHead

    old = getattr(model, "decode_head", None)
    config = getattr(model, "config", None)
    if not isinstance(old, SegformerDecodeHead) or config is None:
        raise TypeError("model must be a transformers SegformerForSemanticSegmentation (with a "
                        f"SegformerDecodeHead as decode_head), got {type(model).__name__}")
    if not getattr(config, "reshape_last_stage", True):
        raise ValueError("model.config.reshape_last_stage must be True: the head takes the four "
                         "stage outputs as B x C x H x W maps")
    head = SegFormerHead(config.hidden_sizes, config.decoder_hidden_size, config.num_labels,
                         upsampler, dropout=0.0, upsampler_kwargs=upsampler_kwargs)
    result = head.load_state_dict(old.state_dict(), strict=False)
    new = [k for k in result.missing_keys if not k.startswith("upsamplers.")]
    if new or result.unexpected_keys:  # transformers changed its head: refuse to guess
        raise TypeError(f"the model's decode head does not match SegFormer's all-MLP head "
                        f"(not loaded: {new}; unexpected: {result.unexpected_keys})")
    head.dropout = copy.deepcopy(old.dropout)  # the model's own dropout (transformers: nn.Dropout)
    param = next(old.parameters())
    model.decode_head = head.to(device=param.device, dtype=param.dtype).train(old.training)
    return model
