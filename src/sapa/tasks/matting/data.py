"""Batches of the matting sets and the network's input.

Every data set of the task (``SyntheticMatting``, ``AdobeTrain``, ``CompositionTest``) yields
dicts: ``"image"`` ``3 x H x W`` float32 in [0, 1], ``"alpha"`` ``1 x H x W`` float32 in
[0, 1], ``"trimap"`` ``1 x H x W`` uint8 (0 / 128 / 255), ``"index"`` (the sample's position),
and for training ``"fg"``, ``"bg"`` ``3 x H x W`` (the composition loss's colours).
"""
from __future__ import annotations

import torch

from ..photos import normalize


def collate(samples: list[dict]) -> dict:
    """One batch dict from sample dicts: each tensor entry stacked to ``B x ...`` when every
    sample has the same shape (training crops, the generated set), else kept as a list of the
    samples' tensors (whole test images of different sizes); ``"index"`` an int64 tensor."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    keys = samples[0].keys()
    if any(s.keys() != keys for s in samples):
        raise ValueError("every sample of a batch needs the same keys")
    batch = {}
    for k in keys:
        vals = [s[k] for s in samples]
        if k == "index":
            batch[k] = torch.as_tensor(vals, dtype=torch.int64)
        elif all(v.shape == vals[0].shape for v in vals):
            batch[k] = torch.stack(vals)
        else:
            batch[k] = vals
    return batch


def model_input(image: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """The 4-channel input of the matting network, as A2U makes it: ImageNet-normalised RGB
    and ``trimap / 255``.

    Args:
        image: ``B x 3 x H x W`` in [0, 1].
        trimap: ``B x 1 x H x W`` (0 / 128 / 255, any dtype).
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be B x 3 x H x W, got {tuple(image.shape)}")
    if trimap.shape != (image.shape[0], 1, *image.shape[2:]):
        raise ValueError(f"trimap must be B x 1 x H x W = {(image.shape[0], 1, *image.shape[2:])}, "
                         f"got {tuple(trimap.shape)}")
    return torch.cat([normalize(image), trimap.to(image.dtype) / 255], dim=1)
