"""Figures: the helpers compute what they say, and every plot writes a readable PNG."""
import numpy as np
import pytest
import torch
from PIL import Image

from sapa import viz


def test_feature_rgb_takes_the_first_three_channels_min_max_scaled():
    f = torch.zeros(5, 2, 2)
    f[0] = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    f[1] = 7.0  # flat -> 0
    f[2] = torch.tensor([[-1.0, 1.0], [1.0, 1.0]])
    f[3] = 100.0  # ignored
    rgb = viz.feature_rgb(f)
    assert rgb.shape == (2, 2, 3)
    assert np.allclose(rgb[..., 0], [[0, 0.25], [0.5, 1]])
    assert np.allclose(rgb[..., 1], 0)
    assert np.allclose(rgb[..., 2], [[0, 1], [1, 1]])
    assert viz.feature_rgb(torch.ones(1, 3, 3)).shape == (3, 3, 3)  # one channel, repeated
    with pytest.raises(ValueError, match="C x H x W"):
        viz.feature_rgb(torch.zeros(1, 3, 2, 2))


def test_kernel_map_is_the_top_left_weight_of_each_point():
    k = torch.arange(25 * 6, dtype=torch.float32).reshape(25, 2, 3)
    assert np.array_equal(viz.kernel_map(k), k[0].numpy())
    with pytest.raises(ValueError, match="K\\*K"):
        viz.kernel_map(torch.zeros(25, 4))


def test_colorize_marks_ignored_pixels_black():
    lab = np.array([[0, 1], [2, 255]])
    rgb = viz.colorize(lab, 3)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[1, 1] == 0).all() and len({tuple(rgb[0, 0]), tuple(rgb[0, 1]), tuple(rgb[1, 0])}) == 3


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_predictions_features_and_curves_figures(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    labels = [rng.integers(0, 3, (16, 16)) for _ in range(2)]
    preds = {"bilinear": labels, "sapa-b": [np.zeros((16, 16), int)] * 2}
    p = viz.save_figure(viz.plot_predictions(images, labels, preds, ["a", "b", "c"]),
                        str(tmp_path / "pred.png"))
    w, h = _png_size(p)
    assert w > h  # 4 columns, 2 rows

    entries = {"bilinear": {"feature": rng.random((16, 16, 3)), "kernel": None},
               "sapa-b": {"feature": rng.random((16, 16, 3)), "kernel": rng.random((16, 16))}}
    p = viz.save_figure(viz.plot_features(images[0], entries, viz.colorize(labels[0], 3)),
                        str(tmp_path / "feat.png"))
    assert _png_size(p)[0] > 100

    curve = {"iters": list(range(1, 101)), "loss": list(np.linspace(2, 0.5, 100)),
             "val_iters": [50, 100], "val_miou": [0.3, 0.5]}
    p = viz.save_figure(viz.plot_training_curves({"bilinear": [curve, curve], "sapa-b": [curve]}),
                        str(tmp_path / "sub" / "curves.png"))
    assert _png_size(p)[0] > 100


def test_training_curves_of_any_metric():
    curve = {"iters": [1, 2, 3, 4], "loss": [2.0, 1.0, 0.5, 0.4], "val_iters": [2, 4],
             "val_rmse": [0.8, 0.6]}
    fig = viz.plot_training_curves({"a": [curve]}, metric="rmse", label="RMS (m)", scale=2.0)
    ax = fig.axes[1]
    assert ax.get_ylabel() == "RMS (m)"
    assert np.allclose(ax.lines[0].get_ydata(), [1.6, 1.2])  # the seed's line, scaled
    with pytest.raises(KeyError, match="val_miou"):
        viz.plot_training_curves({"a": [curve]})  # the default metric is mIoU


def test_plots_reject_mismatched_input():
    img = [np.zeros((4, 4, 3), np.uint8)]
    with pytest.raises(ValueError, match="same non-zero length"):
        viz.plot_predictions(img, [np.zeros((4, 4), int)] * 2, {}, ["a"])
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_features(img[0], {})
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_training_curves({})
