"""The Figure-6 style matte panels and the choice of their zoomed window."""
import numpy as np
import pytest

from sapa.viz import detail_crop, plot_mattes


def test_detail_crop_finds_the_strand():
    alpha = np.zeros((40, 40), np.uint8)
    alpha[5:15, 5:15] = 255  # a solid block: no partial pixels
    alpha[30, 20:36] = 120  # a thin partial-opacity strand
    trimap = np.full((40, 40), 128, np.uint8)
    y, x = detail_crop(alpha, trimap, 10)
    assert y <= 30 < y + 10 and 20 <= x + 10 and x < 36
    # known pixels do not count: hide the strand in the known region and the block's soft edge wins
    alpha[4, 5:15] = 128
    trimap[25:, :] = 0
    y, x = detail_crop(alpha, trimap, 10)
    assert y <= 4 < y + 10
    with pytest.raises(ValueError, match="size must be in"):
        detail_crop(alpha, trimap, 41)


def test_plot_mattes_layout():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(2)]
    trimaps = [np.full((24, 32), 128, np.uint8)] * 2
    alphas = [rng.integers(0, 256, (24, 32), dtype=np.uint8) for _ in range(2)]
    preds = {"bilinear": alphas, "sapa-b": alphas}
    fig = plot_mattes(images, trimaps, alphas, preds, title="t")
    assert len(fig.axes) == 2 * 2 * 5  # two rows (full, zoom) per sample, five columns
    assert [ax.get_title() for ax in fig.axes[:5]] == ["input", "trimap", "ground truth", "bilinear", "sapa-b"]
    zoom = fig.axes[5].images[0].get_array()
    assert zoom.shape[:2] == (8, 8)  # a third of the smaller side
    with pytest.raises(ValueError, match="same non-zero length"):
        plot_mattes(images, trimaps, alphas[:1], preds)
