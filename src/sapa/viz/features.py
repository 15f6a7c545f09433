"""Upsampled features and kernel maps (the paper's Figures 2 and 8).

Features are shown as in Figure 2: the first three channels of the last upsampling stage's
output as RGB (each channel min-max scaled). Kernel maps are as in Appendix B: the top-left
weight (``p = 0``) of every output point's kernel, one value per output point, so the map has
the size of the upsampled feature.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def feature_rgb(feature: torch.Tensor) -> np.ndarray:
    """``C x H x W`` -> ``H x W x 3`` float in [0, 1] from channels 0, 1, 2 (a channel is
    repeated when ``C < 3``), each scaled to its own range."""
    if not isinstance(feature, torch.Tensor) or feature.dim() != 3:
        raise ValueError("feature must be a C x H x W tensor")
    f = feature.detach().float().cpu().numpy()
    idx = [min(c, f.shape[0] - 1) for c in range(3)]
    return np.stack([_minmax(f[c]) for c in idx], axis=-1)


def kernel_map(kernels: torch.Tensor) -> np.ndarray:
    """``K*K x H' x W'`` kernels -> the ``H' x W'`` map of their top-left weight ``p = 0``."""
    if not isinstance(kernels, torch.Tensor) or kernels.dim() != 3:
        raise ValueError("kernels must be a K*K x H' x W' tensor")
    return kernels[0].detach().float().cpu().numpy()


def plot_features(image, entries: dict, label=None, title: str | None = None) -> Figure:
    """Top row: the input and each upsampler's upsampled feature as RGB; bottom row: the
    ground truth (if given) and each upsampler's kernel map, or "no kernels" for upsamplers
    without dynamic kernels.

    Args:
        image: ``H x W x 3`` input.
        entries: upsampler name -> ``{"feature": H' x W' x 3, "kernel": H' x W' or None}``.
        label: an ``H x W x 3`` coloured ground truth for the bottom-left panel.
    """
    if not entries:
        raise ValueError("entries must name at least one upsampler")
    cols = 1 + len(entries)
    fig = Figure(figsize=(1.9 * cols, 4.0), layout="constrained")
    axes = np.asarray(fig.subplots(2, cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].imshow(image, interpolation="nearest")
    axes[0, 0].set_title("input", fontsize=9)
    if label is not None:
        axes[1, 0].imshow(label, interpolation="nearest")
        axes[1, 0].set_title("ground truth", fontsize=9)
    else:
        axes[1, 0].axis("off")
    for j, (name, e) in enumerate(entries.items(), start=1):
        axes[0, j].imshow(e["feature"], interpolation="nearest")
        axes[0, j].set_title(f"{name}: feature", fontsize=9)
        if e.get("kernel") is None:
            axes[1, j].text(0.5, 0.5, "no kernels", ha="center", va="center", fontsize=9,
                            transform=axes[1, j].transAxes)
            axes[1, j].set_title(f"{name}", fontsize=9)
        else:
            axes[1, j].imshow(e["kernel"], cmap="viridis", interpolation="nearest")
            axes[1, j].set_title(f"{name}: kernel p=0", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
