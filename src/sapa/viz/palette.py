"""Colours for class maps."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps


def palette(num_classes: int) -> np.ndarray:
    """``num_classes x 3`` uint8: tab10 / tab20 colours, or evenly spaced hues beyond 20."""
    if num_classes <= 10:
        colors = colormaps["tab10"].colors[:num_classes]
    elif num_classes <= 20:
        colors = colormaps["tab20"].colors[:num_classes]
    else:
        colors = colormaps["hsv"](np.linspace(0, 1, num_classes, endpoint=False))[:, :3]
    return (np.asarray(colors) * 255).round().astype(np.uint8)


def colorize(label: np.ndarray, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """``H x W`` class indices -> ``H x W x 3`` uint8; ignored pixels are black."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be H x W, got shape {label.shape}")
    pal = palette(num_classes)
    out = np.zeros(label.shape + (3,), dtype=np.uint8)
    valid = (label >= 0) & (label < num_classes)
    if ignore_index is not None:
        valid &= label != ignore_index
    out[valid] = pal[label[valid]]
    return out
