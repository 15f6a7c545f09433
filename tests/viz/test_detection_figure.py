"""``sapa.viz.plot_detections``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle

from sapa.viz import plot_detections, save_figure


def _inputs():
    images = [np.zeros((40, 50, 3), dtype=np.uint8), np.full((40, 50, 3), 200, dtype=np.uint8)]
    targets = [{"boxes": torch.tensor([[1.0, 2.0, 20.0, 30.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    pred = [{"boxes": torch.tensor([[1.0, 2.0, 20.0, 30.0], [5.0, 5.0, 9.0, 9.0]]),
             "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "scores": torch.zeros(0)}]
    return images, targets, {"nearest": pred, "sapa-b": pred}


def test_boxes_above_the_threshold_are_drawn(tmp_path):
    images, targets, preds = _inputs()
    fig = plot_detections(images, targets, preds, ["a", "b"], score_threshold=0.5)
    axes = fig.axes
    assert len(axes) == 2 * 3
    boxes = [sum(isinstance(p, Rectangle) for p in ax.patches) for ax in axes]
    # row 1: ground truth 1 box, each upsampler 1 box of score >= 0.5 (the 0.2 one is left out)
    assert boxes[:3] == [1, 1, 1] and boxes[3:] == [0, 0, 0]
    assert axes[1].get_title() == "nearest"
    top = plot_detections(images, targets, preds, ["a", "b"], score_threshold=0.0, top_k=[2, 0])
    assert [sum(isinstance(p, Rectangle) for p in ax.patches) for ax in top.axes] == [1, 2, 2, 0, 0, 0]
    top1 = plot_detections(images, targets, preds, ["a", "b"], score_threshold=0.0, top_k=1)
    assert [sum(isinstance(p, Rectangle) for p in ax.patches) for ax in top1.axes][:3] == [1, 1, 1]
    assert (tmp_path / "d.png").exists() is False
    save_figure(fig, str(tmp_path / "d.png"))
    assert (tmp_path / "d.png").stat().st_size > 1000


def test_bad_arguments():
    images, targets, preds = _inputs()
    with pytest.raises(ValueError, match="same non-zero length"):
        plot_detections(images[:1], targets, preds, ["a", "b"])
    with pytest.raises(ValueError, match="top_k"):
        plot_detections(images, targets, preds, ["a", "b"], top_k=[1])
    with pytest.raises(ValueError, match="score_threshold"):
        plot_detections(images, targets, preds, ["a", "b"], score_threshold=2)
