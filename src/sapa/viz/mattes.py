"""Alpha mattes side by side with a zoom on fine structure (the SAPA paper's Figure 6)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def detail_crop(alpha: np.ndarray, trimap: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``size x size`` window with the most fine structure: the
    largest sum of the ground truth's gradient magnitude over partial-alpha (``0 < alpha <
    255``) unknown pixels, which thin strands dominate.

    Args:
        alpha: ``H x W`` ground-truth alpha (0..255).
        trimap: ``H x W`` (128 = unknown).
        size: window side, at most ``min(H, W)``.
    """
    from scipy import ndimage

    h, w = alpha.shape
    if not 1 <= size <= min(h, w):
        raise ValueError(f"size must be in [1, {min(h, w)}] for a {h}x{w} matte, got {size}")
    a = alpha.astype(np.float64)
    score = np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1))
    score *= (trimap == 128) & (alpha > 0) & (alpha < 255)
    integral = np.pad(score.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    # sum over the window whose top-left corner is (y, x), for every valid corner
    sums = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
            + integral[:-size, :-size])
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def plot_mattes(images, trimaps, alphas, preds: dict, crops=None, crop_size: int | None = None,
                title: str | None = None) -> Figure:
    """Per sample two rows: the input, its trimap, the ground-truth alpha and each upsampler's
    alpha; below them the same panels zoomed on ``crops`` (outlined above).

    Args:
        images: ``N`` arrays ``H x W x 3`` (uint8, or float in [0, 1]).
        trimaps, alphas: ``N`` arrays ``H x W`` (0..255).
        preds: upsampler name -> ``N`` predicted ``H x W`` mattes (0..255).
        crops: ``N`` top-left ``(y, x)`` of the zoomed windows (default: ``detail_crop``).
        crop_size: their side (default a third of the smaller image side, at least 8 px).
    """
    n = len(images)
    if n == 0 or len(trimaps) != n or len(alphas) != n or any(len(p) != n for p in preds.values()):
        raise ValueError("images, trimaps, alphas and every entry of preds need the same non-zero "
                         f"length, got {n}, {len(trimaps)}, {len(alphas)} and "
                         f"{[len(p) for p in preds.values()]}")
    cols = ["input", "trimap", "ground truth", *preds]
    fig = Figure(figsize=(1.5 * len(cols), 3.0 * n + 0.3), layout="constrained")
    axes = np.asarray(fig.subplots(2 * n, len(cols), squeeze=False))
    for i in range(n):
        h, w = np.asarray(alphas[i]).shape
        side = crop_size or max(min(8, h, w), min(h, w) // 3)
        if crops is not None:
            y, x = crops[i]
        else:
            y, x = detail_crop(np.asarray(alphas[i]), np.asarray(trimaps[i]), side)
        panels = [images[i], trimaps[i], alphas[i], *[p[i] for p in preds.values()]]
        for j, panel in enumerate(panels):
            panel = np.asarray(panel)
            gray = {} if panel.ndim == 3 else {"cmap": "gray", "vmin": 0, "vmax": 255}
            top, zoom = axes[2 * i, j], axes[2 * i + 1, j]
            top.imshow(panel, interpolation="nearest", **gray)
            top.add_patch(Rectangle((x - 0.5, y - 0.5), side, side, fill=False, edgecolor="red", lw=1))
            zoom.imshow(panel[y : y + side, x : x + side], interpolation="nearest", **gray)
            for ax in (top, zoom):
                ax.set_xticks([])
                ax.set_yticks([])
            if i == 0:
                top.set_title(cols[j], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
