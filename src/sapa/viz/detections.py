"""Detected boxes beside the ground truth, one column per upsampler."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from .palette import palette


def _draw_boxes(ax, boxes, labels, scores, colors):
    for k, (box, label) in enumerate(zip(boxes, labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        color = colors[(int(label) - 1) % len(colors)]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, lw=1.2))
        if scores is not None:
            ax.text(x0, y0, f"{float(scores[k]):.2f}", color="white", fontsize=5, va="bottom",
                    bbox={"facecolor": color, "edgecolor": "none", "pad": 0.5, "alpha": 0.8})


def plot_detections(images, targets, preds: dict, class_names, score_threshold: float = 0.5,
                    top_k=None, title: str | None = None) -> Figure:
    """One row per image: its ground-truth boxes, then each upsampler's detections with a
    score of at least ``score_threshold`` (the score is written on the box), at most the
    ``top_k`` highest-scoring ones.

    Args:
        images: ``N`` arrays ``H x W x 3`` (uint8, or float in [0, 1]).
        targets: ``N`` dicts with ``boxes`` (``M x 4``, ``x0, y0, x1, y1`` in pixels) and
            ``labels`` (``M``, 1-based indices into ``class_names``).
        preds: upsampler name -> ``N`` dicts with ``boxes``, ``labels`` and ``scores``.
        class_names: one name per label (the legend; colours follow the label).
        top_k: ``None`` (no limit), an int, or one int per image (e.g. its number of
            ground-truth objects, to compare what each model ranks highest).
    """
    n = len(images)
    if n == 0 or len(targets) != n or any(len(p) != n for p in preds.values()):
        raise ValueError(f"images, targets and every entry of preds need the same non-zero "
                         f"length, got {n}, {len(targets)} and {[len(p) for p in preds.values()]}")
    if not 0 <= score_threshold <= 1:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    ks = [top_k] * n if top_k is None or isinstance(top_k, int) else list(top_k)
    if len(ks) != n or any(k is not None and (isinstance(k, bool) or k < 0) for k in ks):
        raise ValueError(f"top_k must be None, an int >= 0 or one per image, got {top_k!r}")
    colors = palette(max(len(class_names), 1)) / 255.0
    cols = ["ground truth", *preds]
    fig = Figure(figsize=(2.0 * len(cols), 2.0 * n + 0.8), layout="constrained")
    axes = np.asarray(fig.subplots(n, len(cols), squeeze=False))
    for i in range(n):
        for j, name in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(images[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                t = targets[i]
                _draw_boxes(ax, np.asarray(t["boxes"]), np.asarray(t["labels"]), None, colors)
            else:
                p = preds[name][i]
                scores = np.asarray(p["scores"])
                keep = np.flatnonzero(scores >= score_threshold)
                keep = keep[np.argsort(-scores[keep], kind="stable")][: ks[i]]
                _draw_boxes(ax, np.asarray(p["boxes"])[keep], np.asarray(p["labels"])[keep],
                            scores[keep], colors)
            if i == 0:
                ax.set_title(name, fontsize=8)
    handles = [Patch(color=colors[c], label=name) for c, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(class_names), 8),
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
