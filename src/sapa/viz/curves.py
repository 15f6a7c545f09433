"""Training curves: training loss and a validation metric against the step, per upsampler."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    return np.convolve(y, kernel, mode="valid")


def plot_training_curves(curves: dict, smooth: int | None = None, *, metric: str = "miou",
                         label: str = "validation mIoU (%)", scale: float = 100.0) -> Figure:
    """Two panels: the training loss (moving average over ``smooth`` steps, default ~7% of the
    run) and the validation metric ``val_<metric>`` times ``scale``, labelled ``label``. Thin
    lines: one per seed; thick: the mean over seeds.

    Args:
        curves: upsampler name -> list (one per seed) of dicts with ``iters``, ``loss``,
            ``val_iters``, ``val_<metric>``.
    """
    if not curves:
        raise ValueError("curves must name at least one upsampler")
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    colors = colormaps["tab10"].colors
    for i, (name, runs) in enumerate(curves.items()):
        c = colors[i % len(colors)]
        losses, vals = [], []
        for run in runs:
            it, loss = np.asarray(run["iters"]), np.asarray(run["loss"], dtype=float)
            w = smooth or max(1, len(loss) // 15)
            ys = _smooth(loss, w)
            xs = it[len(it) - len(ys):]
            ax_loss.plot(xs, ys, color=c, alpha=0.3, lw=0.8)
            losses.append((xs, ys))
            vi, vm = np.asarray(run["val_iters"]), scale * np.asarray(run[f"val_{metric}"], dtype=float)
            ax_val.plot(vi, vm, color=c, alpha=0.3, lw=0.8, marker=".")
            vals.append((vi, vm))
        n = min(len(ys) for _, ys in losses)
        ax_loss.plot(losses[0][0][:n], np.mean([ys[:n] for _, ys in losses], axis=0),
                     color=c, lw=2, label=name)
        m = min(len(v) for _, v in vals)
        ax_val.plot(vals[0][0][:m], np.mean([v[:m] for _, v in vals], axis=0), color=c, lw=2,
                    label=name)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (moving average)")
    ax_val.set_xlabel("step")
    ax_val.set_ylabel(label)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig
