"""Depth maps beside the ground truth, one column per upsampler, with their error maps."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

DEPTH_CMAP = "magma_r"  # near is bright
ERROR_CMAP = "inferno"
INVALID_COLOR = (0.6, 0.6, 0.6)


def _masked(a: np.ndarray, valid: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_array(a, mask=~valid)


def plot_depth_predictions(images, depths, preds: dict, min_depth: float = 1e-3,
                           max_depth: float | None = None, title: str | None = None) -> Figure:
    """Two rows per sample: the image, its ground truth and each upsampler's predicted depth
    (one colormap, one scale for the whole figure); below them ``|prediction - ground truth|``
    in metres on the valid pixels (one scale for the whole figure). Pixels without ground
    truth are grey in the ground truth and in the error maps.

    Args:
        images: ``N`` arrays ``H x W x 3`` (uint8, or float in [0, 1]).
        depths: ``N`` ground-truth maps ``H x W`` in metres (``<= min_depth``: invalid).
        preds: upsampler name -> ``N`` predicted ``H x W`` maps of the ground truth's size.
        min_depth, max_depth: valid range of the ground truth (``None``: no upper bound).
    """
    n = len(images)
    if n == 0 or len(depths) != n or not preds or any(len(p) != n for p in preds.values()):
        raise ValueError(f"images, depths and every entry of preds (at least one) need the same "
                         f"non-zero length, got {n}, {len(depths)} and "
                         f"{[len(p) for p in preds.values()]}")
    gts = [np.asarray(d, dtype=np.float64) for d in depths]
    valid = [(g > min_depth) & (g < (max_depth or np.inf)) for g in gts]
    for name, ps in preds.items():
        for i, p in enumerate(ps):
            if np.shape(p) != gts[i].shape:
                raise ValueError(f"preds[{name!r}][{i}] has shape {np.shape(p)}, its ground truth "
                                 f"{gts[i].shape}")
    shown = [g[v] for g, v in zip(gts, valid) if v.any()]
    vmin = min(float(s.min()) for s in shown) if shown else 0.0
    vmax = max(float(s.max()) for s in shown) if shown else (max_depth or 1.0)
    errors = {k: [np.abs(np.asarray(p, dtype=np.float64) - g) for p, g in zip(ps, gts)]
              for k, ps in preds.items()}
    pooled = np.concatenate([e[v] for es in errors.values() for e, v in zip(es, valid)] or [[0.0]])
    emax = max(float(np.percentile(pooled, 99)), 1e-6)

    depth_cmap = colormaps[DEPTH_CMAP].with_extremes(bad=INVALID_COLOR)
    error_cmap = colormaps[ERROR_CMAP].with_extremes(bad=INVALID_COLOR)
    cols = ["image", "ground truth", *preds]
    fig = Figure(figsize=(1.8 * len(cols) + 1.0, 3.4 * n + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(2 * n, len(cols), squeeze=False))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    dim = err = None
    for i in range(n):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        top[0].imshow(images[i], interpolation="nearest")
        dim = top[1].imshow(_masked(gts[i], valid[i]), cmap=depth_cmap, vmin=vmin, vmax=vmax,
                            interpolation="nearest")
        bottom[0].axis("off")
        bottom[1].imshow(valid[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        bottom[1].set_title("valid pixels" if i == 0 else "", fontsize=8)
        for j, name in enumerate(preds, start=2):
            top[j].imshow(np.asarray(preds[name][i]), cmap=depth_cmap, vmin=vmin, vmax=vmax,
                          interpolation="nearest")
            err = bottom[j].imshow(_masked(errors[name][i], valid[i]), cmap=error_cmap, vmin=0,
                                   vmax=emax, interpolation="nearest")
            bottom[j].set_title(f"|error| {name}" if i == 0 else "", fontsize=8)
        if i == 0:
            for j, c in enumerate(cols):
                top[j].set_title(c, fontsize=9)
    fig.colorbar(dim, ax=axes.ravel().tolist(), location="right", label="depth (m)",
                 shrink=0.6)
    if err is not None:
        fig.colorbar(err, ax=axes.ravel().tolist(), location="bottom", extend="max",
                     label="|prediction - ground truth| (m), valid pixels", shrink=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
