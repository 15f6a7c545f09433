"""The training loss of A2U (``scripts/trainval.py``, ``weighted_loss``), Deep Image Matting's
alpha-prediction and composition losses on the unknown region."""
from __future__ import annotations

import torch

EPS = 1e-6
ALPHA_WEIGHT = 0.5


def _charbonnier_per_image(diff: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """``sum_{c,H,W} sqrt((diff * m)^2 + eps^2) / (sum_{H,W} m + 1)`` per image: ``B``."""
    d = diff * mask
    return torch.sqrt(d * d + eps * eps).sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) + 1)


def matting_loss(pred: torch.Tensor, alpha: torch.Tensor, trimap: torch.Tensor, fg: torch.Tensor,
                 bg: torch.Tensor, image: torch.Tensor, alpha_weight: float = ALPHA_WEIGHT,
                 eps: float = EPS) -> torch.Tensor:
    """``w L_alpha + (1 - w) L_comp``, averaged over the batch.

    ``m = [trimap == 128]``; per image, ``L_alpha = sum sqrt(((p - alpha) m)^2 + eps^2) /
    (sum m + 1)`` and ``L_comp`` the same of ``p F + (1 - p) B - I`` summed over the three
    colour channels, exactly as A2U computes them (so ``eps`` also counts at the pixels outside
    ``m``, and ``p`` is the network's raw, unclipped output).

    Args:
        pred: ``B x 1 x H x W`` predicted alpha.
        alpha: ``B x 1 x H x W`` ground truth in [0, 1].
        trimap: ``B x 1 x H x W`` (0 / 128 / 255).
        fg, bg, image: ``B x 3 x H x W`` foreground, background and composite in [0, 1].
    """
    b, _, h, w = pred.shape
    for name, t, c in (("alpha", alpha, 1), ("trimap", trimap, 1), ("fg", fg, 3), ("bg", bg, 3),
                       ("image", image, 3)):
        if tuple(t.shape) != (b, c, h, w):
            raise ValueError(f"{name} must be {(b, c, h, w)} like pred, got {tuple(t.shape)}")
    mask = (trimap == 128).to(pred.dtype)
    loss_alpha = _charbonnier_per_image(pred - alpha, mask, eps)
    loss_comp = _charbonnier_per_image(pred * fg + (1 - pred) * bg - image, mask, eps)
    return (alpha_weight * loss_alpha + (1 - alpha_weight) * loss_comp).mean()
