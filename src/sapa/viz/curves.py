"""Training curves: training loss and validation mIoU against the step, per upsampler."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    return np.convolve(y, kernel, mode="valid")


def plot_training_curves(curves: dict, smooth: int | None = None) -> Figure:
    """Two panels: the training loss (moving average over ``smooth`` steps, default ~7% of the
    run) and the validation mIoU in %. Thin lines: one per seed; thick: the mean over seeds.

    Args:
        curves: upsampler name -> list (one per seed) of dicts with ``iters``, ``loss``,
            ``val_iters``, ``val_miou``.
    """
    if not curves:
        raise ValueError("curves must name at least one upsampler")
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_miou = fig.subplots(1, 2)
    colors = colormaps["tab10"].colors
    for i, (name, runs) in enumerate(curves.items()):
        c = colors[i % len(colors)]
        losses, mious = [], []
        for run in runs:
            it, loss = np.asarray(run["iters"]), np.asarray(run["loss"], dtype=float)
            w = smooth or max(1, len(loss) // 15)
            ys = _smooth(loss, w)
            xs = it[len(it) - len(ys):]
            ax_loss.plot(xs, ys, color=c, alpha=0.3, lw=0.8)
            losses.append((xs, ys))
            vi, vm = np.asarray(run["val_iters"]), 100 * np.asarray(run["val_miou"], dtype=float)
            ax_miou.plot(vi, vm, color=c, alpha=0.3, lw=0.8, marker=".")
            mious.append((vi, vm))
        n = min(len(ys) for _, ys in losses)
        ax_loss.plot(losses[0][0][:n], np.mean([ys[:n] for _, ys in losses], axis=0),
                     color=c, lw=2, label=name)
        m = min(len(v) for _, v in mious)
        ax_miou.plot(mious[0][0][:m], np.mean([v[:m] for _, v in mious], axis=0), color=c, lw=2,
                     label=name)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (moving average)")
    ax_miou.set_xlabel("step")
    ax_miou.set_ylabel("validation mIoU (%)")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig
