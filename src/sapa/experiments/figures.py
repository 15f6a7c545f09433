"""The figures of ``sapa compare``: the training curves (every task) and the task's own figures,
drawn from the runs' checkpoints (plotting lives in ``sapa.viz``)."""
from __future__ import annotations

import os

from ..tasks.base import Task

CURVES_PNG = "curves.png"


def draw_curves(out_dir: str, task: Task, curves: dict) -> str:
    """``curves.png``: training loss and the validation primary metric per upsampler (thin:
    seeds, thick: mean), the metric scaled and labelled as its ``results.md`` column."""
    from .. import viz

    col = next(c for c in task.columns if c.key == task.primary)
    direction = "lower is better" if col.lower_is_better else "higher is better"
    fig = viz.plot_training_curves(curves, metric=task.primary, scale=col.scale,
                                   label=f"validation {col.header} ({direction})")
    return viz.save_figure(fig, os.path.join(out_dir, CURVES_PNG))


def draw_all(out_dir: str, task: Task, models: dict, curves: dict, val_set, device) -> list[str]:
    """``task.draw_figures`` then ``curves.png``; the paths written.

    Args:
        models: upsampler -> trained model (first seed), in eval mode on ``device``.
        curves: upsampler -> one curves dict per seed (see ``trainer.train_run``).
    """
    paths = list(task.draw_figures(out_dir, models, curves, val_set, device))
    if curves:
        paths.append(draw_curves(out_dir, task, curves))
    return paths
