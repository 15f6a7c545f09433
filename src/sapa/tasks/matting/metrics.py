"""Matting errors as the benchmark's official MATLAB code computes them, and their meter.

The definitions are those of the Deep Image Matting evaluation code (Ning Xu, 2018) that the
A2U, FADE and SAPA papers report with (dongdong93/a2u_matting ``matlab_testcode/``:
``compute_sad_loss.m``, ``compute_mse_loss.m``, ``compute_gradient_loss.m``,
``compute_connectivity_error.m``, ``test_withpic.m``). Inputs are alpha mattes with values in
``[0, 255]`` (the PNGs the MATLAB script reads: uint8) and the trimap; every error is summed
over the trimap's unknown pixels (value 128) only:

- **SAD** ``= sum |p - g| / 255 / 1000``.
- **MSE** ``= sum ((p - g) / 255)^2 / #unknown`` (not scaled).
- **Grad** ``= sum (|grad P| - |grad G|)^2 / 1000`` with ``P = mat2gray(p)``,
  ``G = mat2gray(g)`` (each min-max normalised to [0, 1] over the whole image) and
  ``grad`` MATLAB's ``gaussgradient(., 1.4)``: a ``9 x 9`` kernel
  ``hx(i, j) = gauss(i) dgauss(j)`` (``i, j = -4..4``; ``halfsize = ceil(s sqrt(-2 ln(sqrt(2 pi)
  s 0.01)))`` = 4), scaled to unit L2 norm, ``hy = hx^T``, applied with
  ``imfilter(., 'replicate', 'conv')`` (here ``scipy.ndimage.convolve(mode="nearest")``, the
  same operation).
- **Conn** ``= sum |phi(p) - phi(g)| / 1000`` with ``p, g`` divided by 255: for each threshold
  ``t = 0.1, 0.2, ..., 1`` take ``omega``, the largest 4-connected component of
  ``p >= t & g >= t`` (thresholds with no such pixel are skipped); every pixel that has no
  level yet and lies outside ``omega`` gets the level ``l = t - 0.1``; pixels left without a
  level get ``l = 1``; ``phi(x) = 1 - d [d >= 0.15]``, ``d = x - l``. (The script's distance
  maps are computed and never used: ``lambda = 1``.) Of equally large components MATLAB's
  ``max`` takes the first in ``bwconncomp``'s order, that of the components' first pixels in
  column-major order; so does this code.

The reported value of a set is the mean over its images (``test_withpic.m``). SAD, Grad and
Conn are returned already divided by 1000, as ``test_withpic.m`` prints them and as papers
report them.

Numerics: MATLAB evaluates SAD, MSE and the Grad error map in single precision and Conn's
``p / 255`` in single; this code uses float64 throughout. The thresholds of Conn are the
correctly rounded decimals ``k / 10`` (as MATLAB's colon operator makes ``0:0.1:1``), so for
uint8 mattes every comparison ``p >= t`` and ``d >= 0.15`` decides as MATLAB's does; the
results differ from MATLAB's by single-precision rounding only (relative 1e-6).

How the common Python ports differ (so numbers from them are not comparable):

- IndexNet's and A2U's ``utils.py`` ("for reference only") min-max normalise prediction and
  ground truth for *every* metric (``cv.normalize``), use ``scipy.ndimage.gaussian_filter(
  sigma=1.4, order=1)`` (a different, unnormalised kernel, reflect borders) and report Grad
  ``/ 10`` instead of ``/ 1000``.
- GCA-Matting's ``utils/evaluate.py`` builds the same ``gaussgradient`` kernel but skips
  ``mat2gray`` (divides by 255: the same whenever both mattes span 0..255); its Conn takes the
  largest label of ``np.bincount(labels)`` *including the background label 0*, so whenever
  the background outnumbers every component ``omega`` is the background (its docstring: Conn
  "~5% smaller" than MATLAB), and its thresholds ``np.arange(0, 1.1, 0.1)`` put 0.6 at
  0.6000000000000001, so ``p = 153`` no longer passes ``t = 0.6``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

UNKNOWN = 128
SIGMA = 1.4
CONN_STEP = 0.1
CONN_THETA = 0.15
METRICS = ("sad", "mse", "grad", "conn")


def _as_array(name: str, a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be an H x W matte, got shape {a.shape}")
    numeric = np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
    if a.dtype == np.bool_ or not numeric:
        raise TypeError(f"{name} must hold numbers in [0, 255], got dtype {a.dtype}")
    return a


def _check(pred, target, trimap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``pred``, ``target`` and the bool unknown mask, after the checks."""
    pred, target, trimap = _as_array("pred", pred), _as_array("target", target), _as_array("trimap", trimap)
    if not pred.shape == target.shape == trimap.shape:
        raise ValueError(f"pred, target and trimap must have the same H x W, got {pred.shape}, "
                         f"{target.shape} and {trimap.shape}")
    pred, target = pred.astype(np.float64), target.astype(np.float64)
    for name, a in (("pred", pred), ("target", target)):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
            raise ValueError(f"{name} must hold alpha values in [0, 255], got range "
                             f"[{a.min()}, {a.max()}]")
    unknown = trimap == UNKNOWN
    if not unknown.any():
        raise ValueError("trimap has no unknown pixels (value 128): the errors are undefined")
    return pred, target, unknown


def sad(pred, target, trimap) -> float:
    """Sum of absolute differences over the unknown pixels, ``/ 255 / 1000``.

    Args:
        pred, target: ``H x W`` alpha mattes, values in ``[0, 255]``.
        trimap: ``H x W``; pixels equal to 128 are evaluated.
    """
    pred, target, unknown = _check(pred, target, trimap)
    return float(np.abs(pred - target)[unknown].sum() / 255 / 1000)


def mse(pred, target, trimap) -> float:
    """Mean of ``((p - g) / 255)^2`` over the unknown pixels (arguments as ``sad``)."""
    pred, target, unknown = _check(pred, target, trimap)
    return float((((pred - target) / 255) ** 2)[unknown].mean())


def mat2gray(a: np.ndarray) -> np.ndarray:
    """MATLAB's ``mat2gray``: ``(a - min) / (max - min)``; a constant image is returned as is
    (its gradient is zero either way)."""
    lo, hi = float(a.min()), float(a.max())
    return a.astype(np.float64) if hi == lo else (a - lo) / (hi - lo)


def gauss_gradient_kernel(sigma: float = SIGMA) -> np.ndarray:
    """``hx`` of MATLAB's ``gaussgradient``: ``(2h+1) x (2h+1)``, ``hx[i, j] = gauss(i - h)
    dgauss(j - h)`` (x along the columns), unit L2 norm."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 1e-2)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-u ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    dg = -u * g / sigma ** 2
    hx = g[:, None] * dg[None, :]
    return hx / np.sqrt((hx * hx).sum())


def gauss_gradient(a: np.ndarray, sigma: float = SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """``(gx, gy)`` of MATLAB's ``gaussgradient(a, sigma)`` (replicate borders, convolution)."""
    from scipy import ndimage

    hx = gauss_gradient_kernel(sigma)
    return (ndimage.convolve(a, hx, mode="nearest"), ndimage.convolve(a, hx.T, mode="nearest"))


def grad(pred, target, trimap) -> float:
    """Gradient error ``sum (|grad P| - |grad G|)^2 / 1000`` over the unknown pixels, ``P`` and
    ``G`` the ``mat2gray``-normalised mattes (arguments as ``sad``)."""
    pred, target, unknown = _check(pred, target, trimap)
    amp = [np.hypot(*gauss_gradient(mat2gray(a))) for a in (pred, target)]
    return float(((amp[0] - amp[1]) ** 2)[unknown].sum() / 1000)


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected component of ``mask`` (ties: first in column-major order, as
    MATLAB's ``bwconncomp`` numbers them), or ``None`` if ``mask`` is empty."""
    from skimage.measure import label

    labels = label(mask.T, connectivity=1).T  # labelled in column-major scan order
    sizes = np.bincount(labels.ravel())
    if len(sizes) < 2:
        return None
    return labels == 1 + int(np.argmax(sizes[1:]))


def connectivity_levels(pred: np.ndarray, target: np.ndarray, step: float = CONN_STEP) -> np.ndarray:
    """The level map ``l`` of the connectivity error for mattes ``pred``, ``target`` in [0, 1]."""
    n = int(round(1 / step))
    thresholds = [k / n for k in range(n + 1)]  # correctly rounded, as MATLAB's 0:step:1
    level = np.full(pred.shape, -1.0)
    for prev, t in zip(thresholds[:-1], thresholds[1:]):
        omega = _largest_component((pred >= t) & (target >= t))
        if omega is None:
            continue
        level[(level == -1) & ~omega] = prev
    level[level == -1] = 1.0
    return level


def conn(pred, target, trimap, step: float = CONN_STEP) -> float:
    """Connectivity error ``sum |phi(p) - phi(g)| / 1000`` over the unknown pixels (arguments
    as ``sad``; ``step`` the threshold step, 0.1 officially)."""
    pred, target, unknown = _check(pred, target, trimap)
    if not 0 < step <= 1 or abs(round(1 / step) * step - 1) > 1e-9:
        raise ValueError(f"step must divide 1 (0.1 officially), got {step!r}")
    pred, target = pred / 255, target / 255
    level = connectivity_levels(pred, target, step)
    d_p, d_g = pred - level, target - level
    phi_p = 1 - d_p * (d_p >= CONN_THETA)
    phi_g = 1 - d_g * (d_g >= CONN_THETA)
    return float(np.abs(phi_p - phi_g)[unknown].sum() / 1000)


def matting_errors(pred, target, trimap) -> dict[str, float]:
    """``{"sad", "mse", "grad", "conn"}`` of one image, in the reported units (see the module)."""
    return {"sad": sad(pred, target, trimap), "mse": mse(pred, target, trimap),
            "grad": grad(pred, target, trimap), "conn": conn(pred, target, trimap)}


class MattingMeter:
    """Per-image SAD, MSE, Grad and Conn, averaged over the images (as ``test_withpic.m``).

    ``update(preds, batch)``: ``preds`` the ``H x W`` uint8 mattes of ``Task.predict`` (a list,
    or a ``B x H x W`` tensor), ``batch`` a dict with ``"alpha"`` (``B x 1 x H x W`` in [0, 1],
    or a list of ``1 x H x W``), ``"trimap"`` (same layout, values 0/128/255) and ``"index"``
    (the samples' positions in the evaluation set). ``sync`` gathers every process's per-image
    values (a mean of means would weight the processes' shards wrongly); ``compute`` averages
    them in index order with ``math.fsum``, so the result does not depend on how the images
    were split across processes.
    """

    def __init__(self):
        self.records: list[tuple[int, dict[str, float]]] = []

    def update(self, preds, batch: dict) -> None:
        alphas, trimaps, index = batch["alpha"], batch["trimap"], batch["index"]
        if len(preds) != len(index):
            raise ValueError(f"got {len(preds)} predictions for a batch of {len(index)} images")
        for pred, alpha, trimap, i in zip(preds, alphas, trimaps, index):
            gt = (alpha[0].detach().cpu().double() * 255).round()
            self.records.append((int(i), matting_errors(pred, gt.numpy(), trimap[0])))

    def sync(self, reducer: Any) -> None:
        if reducer.world_size > 1:
            gathered = reducer.all_gather_object(self.records)
            self.records = [r for part in gathered for r in part]

    def compute(self) -> dict[str, float]:
        if not self.records:
            raise ValueError("the matting meter saw no images: nothing to evaluate")
        seen = [i for i, _ in self.records]
        if len(set(seen)) != len(seen):
            raise ValueError("the matting meter saw an image twice (index repeated)")
        records = [m for _, m in sorted(self.records, key=lambda r: r[0])]
        out = {k: math.fsum(m[k] for m in records) / len(records) for k in METRICS}
        out["num_images"] = len(records)
        return out
