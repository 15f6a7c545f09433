"""The depth figure: predictions and error maps beside the ground truth."""
import numpy as np
import pytest
from PIL import Image

from sapa import viz


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_depth_predictions_figure(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(2)]
    depths = [rng.uniform(1, 5, (16, 24)) for _ in range(2)]
    depths[0][:4, :4] = 0  # invalid
    preds = {"nearest": [d + 0.5 for d in depths], "sapa-b": [d * 1.1 for d in depths]}
    fig = viz.plot_depth_predictions(images, depths, preds, max_depth=10.0, title="t")
    # 2 rows per sample (depth, error), image + ground truth + one column per upsampler
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 4 * 4
    img = _png(viz.save_figure(fig, str(tmp_path / "depth.png")))
    assert img.shape[0] > 300 and img.shape[1] > 300


def test_depth_predictions_rejects_mismatched_input():
    d = [np.ones((4, 4))]
    with pytest.raises(ValueError, match="same non-zero length"):
        viz.plot_depth_predictions([np.zeros((4, 4, 3))], d, {"a": d * 2})
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_depth_predictions([np.zeros((4, 4, 3))], d, {})
    with pytest.raises(ValueError, match=r"preds\['a'\]\[0\] has shape \(2, 2\)"):
        viz.plot_depth_predictions([np.zeros((4, 4, 3))], d, {"a": [np.ones((2, 2))]})
