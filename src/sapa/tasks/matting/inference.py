"""Inference as A2U does it (``scripts/trainval.py``, ``validate``): pad the input to a
multiple of the output stride by reflection (bottom and right), predict, crop back, clip to
[0, 1], and keep the trimap's known pixels (0 / 255) as they are: ``alpha = (1 - m) trimap +
m clip(pred) 255`` with ``m = [trimap == 128]``.

The result is rounded to uint8, the PNG the official MATLAB evaluation reads (A2U's script
truncates with ``astype(np.uint8)`` instead, which biases every value down by up to 1/255).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .data import model_input


def reflect_indices(n: int, total: int, device=None) -> torch.Tensor:
    """Indices ``0..total-1`` of ``n`` samples extended by reflection without repeating the
    edge (``numpy.pad(mode="reflect")``, for any ``total``; ``n = 1`` repeats its one sample)."""
    i = torch.arange(total, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i % period
    return torch.where(i < n, i, period - i)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` (``... x H x W``) reflect-padded at the bottom and right to the next multiples of
    ``multiple``."""
    h, w = x.shape[-2:]
    hp, wp = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if (hp, wp) == (h, w):
        return x
    x = x[..., reflect_indices(h, hp, x.device), :]
    return x[..., reflect_indices(w, wp, x.device)]


@torch.no_grad()
def predict_alpha(model: nn.Module, image: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """``B x H x W`` uint8 alpha mattes for ``image`` ``B x 3 x H x W`` in [0, 1] and ``trimap``
    ``B x 1 x H x W`` (any ``H, W``; ``model`` takes multiples of its ``stride``, default 16)."""
    x = model_input(image, trimap)
    h, w = x.shape[-2:]
    pred = model(pad_to_multiple(x, getattr(model, "stride", 16)))[:, :, :h, :w]
    alpha = pred.clamp(0, 1) * 255
    trimap = trimap.to(alpha.dtype)
    alpha = torch.where(trimap == 128, alpha, trimap)
    return alpha.round().to(torch.uint8)[:, 0]
