"""Monocular-depth metrics, exactly as BTS evaluates NYU Depth V2.

Definitions (Eigen et al. 2014, as ``compute_errors`` in cleinc/bts ``pytorch/bts_main.py`` and
``utils/eval_with_pngs.py``), over the valid pixels ``V`` of one image, ground truth ``g``,
prediction ``p``:

- ``delta_k = mean(max(g / p, p / g) < 1.25 ** k)`` for ``k = 1, 2, 3``
- ``abs_rel = mean(|g - p| / g)``, ``sq_rel = mean((g - p)^2 / g)``
- ``rmse = sqrt(mean((g - p)^2))``, ``rmse_log = sqrt(mean((ln g - ln p)^2))``
- ``log10 = mean(|log10 p - log10 g|)``
- ``silog = 100 * sqrt(mean(e^2) - mean(e)^2)``, ``e = ln p - ln g``

Each metric is computed **per image and then averaged over the images** (not pooled over
pixels). Before that, as BTS does: predictions are clipped to ``[min_depth, max_depth]``,
``+inf`` becomes ``max_depth`` and NaN becomes ``min_depth``; non-finite ground truth counts as
invalid; the valid pixels are ``min_depth < g < max_depth`` (BTS's NYU setting: ``1e-3`` and
``10``), intersected with the Eigen crop when one is asked for.

The Eigen crop (``--eigen_crop`` in BTS) keeps rows 45:471 and columns 41:601 of a 480 x 640
NYU frame. For ground truth of another size, ``eigen_crop_mask`` scales those bounds with the
frame (``round(45 * H / 480)`` etc.), which gives exactly 45:471, 41:601 at 480 x 640; the
generated scenes are evaluated without a crop (they have no registration border).

Computation is in float64 (BTS uses float32 arrays; the difference is far below the printed
digits).
"""
from __future__ import annotations

import math

import numpy as np
import torch

# the keys of ``depth_errors`` and ``DepthMeter.compute``, in BTS's print order plus SILog
METRICS = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
# metrics for which lower is better (the deltas are accuracies)
LOWER_IS_BETTER = {k: not k.startswith("delta") for k in METRICS}
# the Eigen crop on NYU's 480 x 640 frames: rows [45, 471), cols [41, 601)
EIGEN_FRAME = (480, 640)
EIGEN_ROWS = (45, 471)
EIGEN_COLS = (41, 601)
CROPS = ("eigen", None)


def eigen_crop_mask(height: int, width: int) -> np.ndarray:
    """``H x W`` bool: the Eigen crop, scaled from NYU's 480 x 640 frame (exact there)."""
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    fh, fw = height / EIGEN_FRAME[0], width / EIGEN_FRAME[1]
    mask = np.zeros((height, width), dtype=bool)
    mask[round(EIGEN_ROWS[0] * fh) : round(EIGEN_ROWS[1] * fh),
         round(EIGEN_COLS[0] * fw) : round(EIGEN_COLS[1] * fw)] = True
    return mask


def _as_map(name: str, a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(a).__name__}")
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be an H x W (or 1 x H x W) depth map, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point depths in metres, got dtype {a.dtype}")
    return a.astype(np.float64)


def _check_range(min_depth, max_depth):
    for name, v in (("min_depth", min_depth), ("max_depth", max_depth)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if min_depth >= max_depth:
        raise ValueError(f"min_depth must be < max_depth, got {min_depth} and {max_depth}")


def valid_mask(gt, min_depth: float = 1e-3, max_depth: float = 10.0,
               crop: str | None = None) -> np.ndarray:
    """``H x W`` bool: finite ``min_depth < gt < max_depth``, within the crop (``"eigen"`` or
    ``None``)."""
    _check_range(min_depth, max_depth)
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
    g = _as_map("gt", gt)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(g) & (g > min_depth) & (g < max_depth)
    if crop == "eigen":
        valid &= eigen_crop_mask(*g.shape)
    return valid


def clip_prediction(pred, min_depth: float = 1e-3, max_depth: float = 10.0) -> np.ndarray:
    """BTS's clipping: into ``[min_depth, max_depth]``, ``+inf -> max_depth``, NaN -> ``min_depth``
    (float64 copy)."""
    _check_range(min_depth, max_depth)
    p = _as_map("pred", pred)
    p = np.where(np.isnan(p), min_depth, p)
    return np.clip(p, min_depth, max_depth)


def depth_errors(pred, gt, min_depth: float = 1e-3, max_depth: float = 10.0,
                 crop: str | None = None) -> dict | None:
    """The metrics of one image (see the module docstring).

    Args:
        pred, gt: ``H x W`` (or ``1 x H x W``) depths in metres, tensors or arrays of the same
            shape; ``gt <= min_depth`` (0 in NYU's PNGs) marks a missing measurement.
        min_depth, max_depth: the valid range of ``gt`` and the clipping range of ``pred``.
        crop: ``"eigen"`` or ``None``.

    Returns:
        ``{metric: float}`` for every name in ``METRICS``, or ``None`` when the image has no
        valid pixel (BTS skips such images).
    """
    p = clip_prediction(pred, min_depth, max_depth)
    valid = valid_mask(gt, min_depth, max_depth, crop)
    if p.shape != valid.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {valid.shape}")
    if not valid.any():
        return None
    g, p = _as_map("gt", gt)[valid], p[valid]
    thresh = np.maximum(g / p, p / g)
    err = np.log(p) - np.log(g)
    return {
        "delta1": float(np.mean(thresh < 1.25)),
        "delta2": float(np.mean(thresh < 1.25 ** 2)),
        "delta3": float(np.mean(thresh < 1.25 ** 3)),
        "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(err ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        # the variance is >= 0; max() only guards against a rounding -1e-17
        "silog": float(100 * np.sqrt(max(np.mean(err ** 2) - np.mean(err) ** 2, 0.0))),
    }


class DepthMeter:
    """Per-image depth metrics over an evaluation, averaged over images.

    ``update(pred, batch)`` takes the predicted depths ``B x 1 x H x W`` (or ``B x H x W``,
    metres, at the ground truth's size) and the batch dict, whose ``"depth"`` is the ground
    truth of the same shape and ``"index"`` the samples' indices in the data set. Values are
    kept per sample index, so ``sync`` can **gather** them from every process (a mean of
    per-process means would weight processes, not images) and a sample that a distributed
    sampler evaluated twice (padding) counts once. ``compute`` returns the mean over images of
    every metric in ``METRICS`` plus ``num_images`` (evaluated) and ``num_skipped`` (images
    without a valid pixel).
    """

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None):
        _check_range(min_depth, max_depth)
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
        self.min_depth, self.max_depth, self.crop = min_depth, max_depth, crop
        # sample index -> tuple of the METRICS values, or None (no valid pixel)
        self.values: dict[int, tuple | None] = {}

    def update(self, pred, batch: dict) -> None:
        gt, index = batch["depth"], batch["index"]
        if isinstance(pred, torch.Tensor) and pred.dim() == 4:
            pred = pred[:, 0] if pred.shape[1] == 1 else pred
        if isinstance(gt, torch.Tensor) and gt.dim() == 4:
            gt = gt[:, 0] if gt.shape[1] == 1 else gt
        index = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
        if len(pred) != len(gt) or len(gt) != len(index):
            raise ValueError(f"pred, batch['depth'] and batch['index'] must have one entry per "
                             f"image, got {len(pred)}, {len(gt)} and {len(index)}")
        for i, p, g in zip(index, pred, gt):
            e = depth_errors(p, g, self.min_depth, self.max_depth, self.crop)
            self.values.setdefault(i, None if e is None else tuple(e[k] for k in METRICS))

    def sync(self, reducer) -> None:
        """Gather every process's per-image values (rank order; the first one of a sample
        evaluated twice is kept)."""
        merged: dict[int, tuple | None] = {}
        for part in reducer.all_gather_object(self.values):
            for i, v in part.items():
                merged.setdefault(int(i), v)
        self.values = merged

    def compute(self) -> dict:
        done = [v for v in self.values.values() if v is not None]
        if not done:
            raise ValueError("no image with a valid ground-truth pixel was evaluated "
                             f"({len(self.values)} image(s) seen)")
        # exactly rounded sums: the result does not depend on the order the images came in
        out = {k: math.fsum(v[j] for v in done) / len(done) for j, k in enumerate(METRICS)}
        out["num_images"] = len(done)
        out["num_skipped"] = len(self.values) - len(done)
        return out
