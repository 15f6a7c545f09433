"""Semantic-segmentation metrics: mIoU, pixel accuracy and boundary IoU.

- mIoU and pixel accuracy come from one confusion matrix accumulated over the whole set
  (as mmsegmentation does): ``IoU_c = TP / (TP + FP + FN)``; classes that appear neither in
  the labels nor in the predictions are left out of the mean.
- Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
  Evaluation", CVPR 2021): for a binary mask ``G`` the boundary region ``G_d`` is ``G`` minus
  its erosion by a ``(2d+1) x (2d+1)`` square (the image border counts as background, so
  masks cut by the border have a boundary there), with ``d = round(0.02 * diagonal)``, at
  least 1. Per class ``c``, ``|G_d ∩ P_d| / |G_d ∪ P_d|`` is accumulated over the set like the
  IoU, and the class values are averaged like the mIoU.

Pixels labelled ``ignore_index`` count in neither metric; for the boundary IoU both the true and
the predicted class masks are restricted to the valid pixels before their boundaries are taken,
so a prediction that is right on every valid pixel scores 1, whatever it says on ignored ones.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

_SQUARE = np.ones((3, 3), dtype=bool)


def _check_pair(pred, target):
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")


def _check_num_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """``num_classes x num_classes`` int64 counts; row = true class, column = predicted class.

    Args:
        pred, target: integer tensors of the same shape (any, e.g. ``B x H x W``).
        num_classes: ``C``; every non-ignored ``target`` and every ``pred`` must lie in
            ``[0, C)``.
        ignore_index: ``target`` value whose pixels are not counted (``None``: none).
    """
    _check_pair(pred, target)
    _check_num_classes(num_classes)
    pred, target = pred.reshape(-1), target.reshape(-1)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, t in (("target", target), ("pred", pred)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} holds class indices outside [0, {num_classes}) "
                             f"(ignore_index={ignore_index}): min {int(t.min())}, max {int(t.max())}")
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """``IoU_c`` (float64) from a confusion matrix; NaN for classes with an empty union."""
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(cm: torch.Tensor) -> float:
    """Mean of ``iou_per_class`` over the classes with a non-empty union (NaN if none)."""
    return _nanmean(iou_per_class(cm))


def pixel_accuracy(cm: torch.Tensor) -> float:
    """Correct pixels / counted pixels (NaN if none counted)."""
    total = cm.sum()
    return float(cm.diagonal().sum() / total) if total > 0 else float("nan")


def _nanmean(values: torch.Tensor) -> float:
    values = values[~torch.isnan(values)]
    return float(values.mean()) if values.numel() else float("nan")


def boundary_dilation(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """``d = max(1, round(dilation_ratio * sqrt(H^2 + W^2)))`` in pixels (Cheng et al.)."""
    return max(1, int(round(dilation_ratio * float(np.hypot(height, width)))))


def mask_boundary(mask: np.ndarray, dilation: int) -> np.ndarray:
    """``G_d``: the pixels of the ``H x W`` bool ``mask`` within ``dilation`` pixels (chessboard
    distance) of its contour, i.e. ``mask`` minus its erosion; outside the image is background."""
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(f"mask must be a 2-D bool array, got shape {mask.shape} dtype {mask.dtype}")
    eroded = ndimage.binary_erosion(mask, structure=_SQUARE, iterations=dilation, border_value=0)
    return mask & ~eroded


def boundary_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                    ignore_index: int | None = 255, dilation_ratio: float = 0.02):
    """Per-class boundary intersections and unions summed over a batch.

    Args:
        pred, target: ``B x H x W`` (or ``H x W``) integer class maps.
        num_classes, ignore_index: as ``confusion_matrix``.
        dilation_ratio: boundary width as a fraction of the image diagonal.

    Returns:
        ``(intersection, union)``, two int64 tensors of length ``num_classes``.
    """
    _check_pair(pred, target)
    _check_num_classes(num_classes)
    if pred.dim() == 2:
        pred, target = pred[None], target[None]
    if pred.dim() != 3:
        raise ValueError(f"pred and target must be H x W or B x H x W, got shape {tuple(pred.shape)}")
    inter = np.zeros(num_classes, dtype=np.int64)
    union = np.zeros(num_classes, dtype=np.int64)
    d = boundary_dilation(pred.shape[-2], pred.shape[-1], dilation_ratio)
    for p, t in zip(pred.cpu().numpy(), target.cpu().numpy()):
        valid = t != ignore_index if ignore_index is not None else np.ones(t.shape, dtype=bool)
        present = np.union1d(np.unique(p), np.unique(t[valid]))
        for c in present:
            if not 0 <= c < num_classes:
                raise ValueError(f"class index {c} outside [0, {num_classes}) in pred or target")
            gb = mask_boundary((t == c) & valid, d)
            pb = mask_boundary((p == c) & valid, d)
            inter[c] += np.count_nonzero(gb & pb)
            union[c] += np.count_nonzero(gb | pb)
    return torch.from_numpy(inter), torch.from_numpy(union)


class SegmentationMeter:
    """Accumulates the confusion matrix and the boundary counts over batches.

    ``state()`` returns the accumulators as one int64 tensor that can be summed across
    processes (``torch.distributed.all_reduce``) and given back with ``load_state``.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255,
                 dilation_ratio: float = 0.02):
        _check_num_classes(num_classes)
        self.num_classes, self.ignore_index, self.dilation_ratio = (
            num_classes, ignore_index, dilation_ratio)
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.b_inter = torch.zeros(num_classes, dtype=torch.int64)
        self.b_union = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of ``B x H x W`` predicted and true class maps."""
        pred, target = pred.cpu(), target.cpu()
        self.cm += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        i, u = boundary_counts(pred, target, self.num_classes, self.ignore_index,
                               self.dilation_ratio)
        self.b_inter += i
        self.b_union += u

    def state(self) -> torch.Tensor:
        return torch.cat([self.cm.reshape(-1), self.b_inter, self.b_union])

    def load_state(self, state: torch.Tensor) -> None:
        c = self.num_classes
        self.cm = state[: c * c].reshape(c, c).clone()
        self.b_inter = state[c * c : c * c + c].clone()
        self.b_union = state[c * c + c :].clone()

    def compute(self) -> dict:
        """``{"miou", "biou", "acc", "iou_per_class"}`` (fractions in [0, 1])."""
        b = self.b_union.double()
        biou = torch.where(b > 0, self.b_inter.double() / b.clamp_min(1),
                           torch.full_like(b, float("nan")))
        return {
            "miou": mean_iou(self.cm),
            "biou": _nanmean(biou),
            "acc": pixel_accuracy(self.cm),
            "iou_per_class": [None if np.isnan(v) else float(v) for v in iou_per_class(self.cm).tolist()],
        }
