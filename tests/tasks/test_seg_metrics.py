"""Segmentation metrics against hand-computed cases and an independent boundary definition."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from sapa.tasks.segmentation.metrics import (
    SegmentationMeter,
    boundary_counts,
    boundary_dilation,
    confusion_matrix,
    iou_per_class,
    mask_boundary,
    mean_iou,
    pixel_accuracy,
)


def test_confusion_matrix_miou_and_accuracy_by_hand():
    target = torch.tensor([[0, 1], [0, 1]])
    pred = torch.tensor([[0, 1], [1, 1]])
    cm = confusion_matrix(pred, target, 2)
    assert cm.tolist() == [[1, 1], [0, 2]]  # row: true class, column: predicted
    # IoU_0 = 1 / (1 + 1 + 0), IoU_1 = 2 / (2 + 0 + 1)
    assert iou_per_class(cm).tolist() == pytest.approx([0.5, 2 / 3])
    assert mean_iou(cm) == pytest.approx((0.5 + 2 / 3) / 2)
    assert pixel_accuracy(cm) == pytest.approx(3 / 4)


def test_ignored_pixels_are_not_counted():
    target = torch.tensor([[0, 255], [1, 255]])
    pred = torch.tensor([[0, 1], [1, 0]])
    cm = confusion_matrix(pred, target, 2, ignore_index=255)
    assert cm.tolist() == [[1, 0], [0, 1]]
    assert mean_iou(cm) == 1.0 and pixel_accuracy(cm) == 1.0


def test_absent_classes_leave_the_mean_but_false_positives_count():
    target = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([0, 0, 0, 1])
    cm = confusion_matrix(pred, target, 3)
    iou = iou_per_class(cm)
    assert iou[0] == pytest.approx(3 / 4)
    assert iou[1] == 0.0  # predicted, never true: counts as 0
    assert math.isnan(iou[2])  # neither true nor predicted: left out
    assert mean_iou(cm) == pytest.approx((3 / 4 + 0) / 2)


@pytest.mark.parametrize("pred, target, err", [
    (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), TypeError),
    (torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), ValueError),
    (torch.full((2, 2), 3), torch.zeros(2, 2, dtype=torch.long), ValueError),
    (torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), -1), ValueError),
])
def test_confusion_matrix_rejects_bad_input(pred, target, err):
    with pytest.raises(err, match="pred|target"):
        confusion_matrix(pred, target, 3)


def test_dilation_is_two_percent_of_the_diagonal():
    assert boundary_dilation(64, 64) == 2  # 0.02 * 90.5 = 1.81
    assert boundary_dilation(512, 512) == 14  # 0.02 * 724.1 = 14.5 -> 14
    assert boundary_dilation(10, 10) == 1  # at least one pixel


def test_mask_boundary_of_a_square_and_of_a_full_image():
    m = np.zeros((10, 10), dtype=bool)
    m[2:7, 2:7] = True  # 5 x 5 square: its boundary at d=1 is the 16-pixel ring
    b = mask_boundary(m, 1)
    ring = m.copy()
    ring[3:6, 3:6] = False
    assert (b == ring).all() and b.sum() == 16
    full = np.ones((6, 6), dtype=bool)  # the image border counts as a boundary
    assert mask_boundary(full, 1).sum() == 36 - 16


def test_mask_boundary_equals_chessboard_distance_definition():
    rng = np.random.default_rng(0)
    m = ndimage.binary_opening(rng.random((40, 50)) > 0.35, iterations=1)
    for d in (1, 2, 3):
        # distance (chessboard) of each pixel to the nearest background pixel, outside = background
        dist = ndimage.distance_transform_cdt(np.pad(m, 1), metric="chessboard")[1:-1, 1:-1]
        assert (mask_boundary(m, d) == (m & (dist <= d))).all()


def test_boundary_iou_by_hand():
    # 8 x 8 image, d = 1: ground truth splits at column 4, the prediction at column 5
    target = torch.zeros(8, 8, dtype=torch.long)
    target[:, 4:] = 1
    pred = torch.zeros(8, 8, dtype=torch.long)
    pred[:, 5:] = 1
    inter, union = boundary_counts(pred, target, 2)
    # class 0: G_d has 20 px (outline of cols 0-3), P_d 22 px (cols 0-4); they share rows 0 and 7
    # of cols 0-3 (8 px) and col 0 of rows 1-6 (6 px)
    # class 1: G_d 20 px (cols 4-7), P_d 18 px (cols 5-7); shared: rows 0, 7 of cols 5-7 and col 7
    assert inter.tolist() == [14, 12]
    assert union.tolist() == [20 + 22 - 14, 20 + 18 - 12]
    meter = SegmentationMeter(2)
    meter.update(pred[None], target[None])
    assert meter.compute()["biou"] == pytest.approx((14 / 28 + 12 / 26) / 2)


def test_boundary_ignores_ignored_pixels():
    target = torch.zeros(8, 8, dtype=torch.long)
    target[:, 4:] = 1
    target[0] = 255
    for guess in (0, 1):  # right on every valid pixel, anything on the ignored row
        pred = torch.where(target == 255, guess, target)
        inter, union = boundary_counts(pred, target, 2)
        assert (inter == union).all() and (union > 0).all()
        # both masks lose row 0, so each class's boundary is its outline in rows 1-7
        assert union.tolist() == [4 + 4 + 2 * 5, 4 + 4 + 2 * 5]


def test_meter_accumulates_like_one_batch_and_round_trips_its_state():
    g = torch.Generator().manual_seed(0)
    # 8 x 8 blocks of one class, so that regions have interiors and boundaries
    target = torch.randint(0, 4, (6, 4, 4), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    pred = torch.where(torch.rand(6, 32, 32, generator=g) < 0.9, target,
                       torch.randint(0, 4, (6, 32, 32), generator=g))
    whole = SegmentationMeter(4)
    whole.update(pred, target)
    parts = SegmentationMeter(4)
    parts.update(pred[:2], target[:2])
    parts.update(pred[2:], target[2:])
    assert torch.equal(whole.state(), parts.state())
    other = SegmentationMeter(4)
    other.load_state(whole.state())
    assert other.compute() == whole.compute()
    r = whole.compute()
    assert 0 < r["biou"] < r["miou"] < r["acc"] < 1
