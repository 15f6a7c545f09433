"""Predictions beside the ground truth, one column per upsampler (the paper's Figure 5)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .palette import colorize, palette


def plot_predictions(images, labels, preds: dict, class_names, ignore_index: int | None = 255,
                     title: str | None = None) -> Figure:
    """One row per sample: the image, its ground truth, then each upsampler's prediction.

    Args:
        images: ``N`` arrays ``H x W x 3`` (uint8, or float in [0, 1]).
        labels: ``N`` arrays ``H x W`` of class indices.
        preds: upsampler name -> ``N`` predicted ``H x W`` class maps.
        class_names: one name per class (for the legend).
    """
    n = len(images)
    if n == 0 or len(labels) != n or any(len(p) != n for p in preds.values()):
        raise ValueError(f"images, labels and every entry of preds need the same non-zero length, "
                         f"got {n}, {len(labels)} and {[len(p) for p in preds.values()]}")
    k = len(class_names)
    cols = ["image", "ground truth", *preds]
    fig = Figure(figsize=(1.6 * len(cols), 1.6 * n + 0.8), layout="constrained")
    axes = np.asarray(fig.subplots(n, len(cols), squeeze=False))
    for i in range(n):
        panels = [images[i], colorize(labels[i], k, ignore_index),
                  *[colorize(p[i], k, ignore_index) for p in preds.values()]]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
    if k <= 24:
        pal = palette(k) / 255.0
        fig.legend(handles=[Patch(color=pal[c], label=class_names[c]) for c in range(k)],
                   loc="outside lower center", ncol=min(k, 8), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
