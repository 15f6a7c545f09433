"""BTS's training loss: the scale-invariant log error (Eigen et al. 2014, as ``silog_loss`` in
cleinc/bts ``pytorch/bts.py``)."""
from __future__ import annotations

import torch

# BTS trains on NYU with ``mask = depth_gt > 0.1`` (1.0 on KITTI) and variance_focus 0.85
MIN_TRAIN_DEPTH = 0.1
VARIANCE_FOCUS = 0.85
# log() floor for predictions: max_depth * sigmoid can underflow to 0 in float32
_EPS = 1e-6


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None,
               variance_focus: float = VARIANCE_FOCUS) -> torch.Tensor:
    """``10 * sqrt(mean(d^2) - variance_focus * mean(d)^2)``, ``d = ln pred - ln gt`` over the
    pixels of ``mask`` (default ``gt > 0.1``), pooled over the whole batch as BTS does.

    Args:
        pred: ``B x 1 x H x W`` predicted depth (> 0; clamped at 1e-6 before the log).
        gt: ground truth of the same shape; invalid pixels hold 0.
        mask: bool, same shape; the pixels that count.
        variance_focus: ``lambda`` in ``[0, 1]`` (0: the plain log RMSE; 1: fully
            scale-invariant).

    Returns:
        a scalar. A batch without a valid pixel gives ``0 * pred.sum()`` (zero, still part of
        the graph so every process of a distributed run does a backward pass).
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(gt, torch.Tensor):
        raise TypeError("pred and gt must be tensors")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(gt.shape)}")
    if not 0.0 <= variance_focus <= 1.0:
        raise ValueError(f"variance_focus must be in [0, 1], got {variance_focus}")
    if mask is None:
        mask = gt > MIN_TRAIN_DEPTH
    elif mask.shape != gt.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(gt.shape)}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    if not bool(mask.any()):
        return pred.sum() * 0.0
    d = torch.log(pred[mask].clamp_min(_EPS)) - torch.log(gt[mask])
    return torch.sqrt((d ** 2).mean() - variance_focus * d.mean() ** 2) * 10.0
