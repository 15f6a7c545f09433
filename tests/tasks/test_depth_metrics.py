"""Depth metrics against hand-worked cases; the meter's per-image mean and its DDP gather."""
import math

import numpy as np
import pytest
import torch

from sapa.tasks.depth.metrics import (
    METRICS,
    DepthMeter,
    clip_prediction,
    depth_errors,
    eigen_crop_mask,
    valid_mask,
)

LN2, LN125 = math.log(2), math.log(1.25)


def test_hand_worked_image():
    # valid pixels: g = 1, 2, 4 (the 0 is a missing measurement); p = 1, 1, 5
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])
    pred = np.array([[1.0, 1.0], [5.0, 7.0]])
    e = depth_errors(pred, gt)
    # max(g/p, p/g) = 1, 2, 1.25: 1.25 is not < 1.25; 2 is not < 1.25^3 = 1.953125
    assert e["delta1"] == pytest.approx(1 / 3)
    assert e["delta2"] == pytest.approx(2 / 3)
    assert e["delta3"] == pytest.approx(2 / 3)
    assert e["abs_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)  # 0.25
    assert e["sq_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)
    assert e["rmse"] == pytest.approx(0.816496580927726)  # sqrt((0 + 1 + 1) / 3)
    assert e["rmse_log"] == pytest.approx(math.sqrt((LN2 ** 2 + LN125 ** 2) / 3))
    assert e["log10"] == pytest.approx((math.log10(2) + math.log10(1.25)) / 3)
    # e = ln p - ln g = 0, -ln 2, ln 1.25
    m1, m2 = (-LN2 + LN125) / 3, (LN2 ** 2 + LN125 ** 2) / 3
    assert e["silog"] == pytest.approx(100 * math.sqrt(m2 - m1 ** 2))
    assert set(e) == set(METRICS)


def test_perfect_prediction():
    gt = torch.tensor([[0.5, 3.0], [9.0, 0.0]])
    e = depth_errors(gt.clone(), gt)
    assert e["delta1"] == e["delta2"] == e["delta3"] == 1.0
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert e[k] == pytest.approx(0.0, abs=1e-12)


def test_predictions_are_clipped_as_bts_does():
    # +inf -> max_depth, nan -> min_depth, below min -> min, above max -> max
    pred = np.array([[np.inf, np.nan], [-1.0, 20.0]])
    assert clip_prediction(pred, 1e-3, 10).tolist() == [[10.0, 1e-3], [1e-3, 10.0]]
    e = depth_errors(pred, np.full((2, 2), 2.0), 1e-3, 10)
    assert e["abs_rel"] == pytest.approx((4 + 0.9995 + 0.9995 + 4) / 4)
    assert e["rmse"] == pytest.approx(math.sqrt((64 + 2 * 1.999 ** 2 + 64) / 4))


def test_valid_pixels_are_strictly_inside_the_range():
    gt = np.array([[1e-3, 0.002, 10.0, 9.99, np.nan, np.inf, -1.0, 0.0]])
    assert valid_mask(gt, 1e-3, 10).tolist() == [[False, True, False, True, False, False, False, False]]
    # the excluded pixels do not count, whatever the prediction there
    pred = np.array([[5.0, 0.002, 5.0, 9.99, 5.0, 5.0, 5.0, 5.0]])
    assert depth_errors(pred, gt)["rmse"] == 0.0


def test_eigen_crop_is_exact_on_nyu_frames_and_scales_with_the_frame():
    m = eigen_crop_mask(480, 640)
    rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (45, 471, 41, 601)
    assert m.sum() == 426 * 560
    m2 = eigen_crop_mask(960, 1280)
    rows, cols = np.nonzero(m2.any(1))[0], np.nonzero(m2.any(0))[0]
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (90, 942, 82, 1202)
    # and it restricts the evaluation: an error outside the crop does not count
    gt = np.full((480, 640), 2.0)
    pred = gt.copy()
    pred[:45] = 9.0
    assert depth_errors(pred, gt, crop="eigen")["rmse"] == 0.0
    assert depth_errors(pred, gt)["rmse"] > 0


def test_no_valid_pixel_gives_none():
    assert depth_errors(np.ones((3, 3)), np.zeros((3, 3))) is None


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"pred": np.ones((2, 3))}, ValueError, "same shape"),
    ({"pred": np.ones((2, 2, 2))}, ValueError, "pred must be an H x W"),
    ({"gt": np.ones((2, 2), dtype=np.int64)}, TypeError, "floating-point"),
    ({"pred": [[1.0]]}, TypeError, "pred must be a torch.Tensor or numpy array"),
    ({"min_depth": 0.0}, ValueError, "min_depth"),
    ({"max_depth": 1e-4}, ValueError, "min_depth must be < max_depth"),
    ({"crop": "garg"}, ValueError, "crop"),
])
def test_bad_arguments(kwargs, exc, match):
    args = {"pred": np.ones((2, 2)), "gt": np.ones((2, 2)), **kwargs}
    with pytest.raises(exc, match=match):
        depth_errors(**args)


def _batch(gts, start):
    return {"depth": torch.stack([torch.as_tensor(g, dtype=torch.float32)[None] for g in gts]),
            "index": torch.arange(start, start + len(gts))}


def test_meter_averages_per_image_not_per_pixel():
    # image 0: 1 valid pixel, error 1; image 1: 3 valid pixels, error 0
    gts = [np.array([[2.0, 0.0], [0.0, 0.0]]), np.array([[2.0, 2.0], [2.0, 0.0]])]
    preds = torch.tensor([[[3.0, 1.0], [1.0, 1.0]], [[2.0, 2.0], [2.0, 2.0]]])[:, None]
    meter = DepthMeter()
    meter.update(preds, _batch(gts, 0))
    out = meter.compute()
    assert out["rmse"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert out["abs_rel"] == pytest.approx(0.25)  # (0.5 + 0) / 2; pooled over pixels: 0.5 / 4
    assert out["delta1"] == pytest.approx(0.5)  # (0 + 1) / 2; pooled over pixels: 3 / 4
    assert out["num_images"] == 2 and out["num_skipped"] == 0


def test_meter_skips_images_without_ground_truth_and_raises_when_nothing_was_evaluated():
    meter = DepthMeter()
    meter.update(torch.ones(1, 1, 2, 2), _batch([np.zeros((2, 2))], 0))
    with pytest.raises(ValueError, match="no image with a valid"):
        meter.compute()
    meter.update(torch.full((1, 1, 2, 2), 2.0), _batch([np.full((2, 2), 2.0)], 1))
    out = meter.compute()
    assert out["num_images"] == 1 and out["num_skipped"] == 1 and out["rmse"] == 0.0


def test_meter_checks_batch_lengths():
    with pytest.raises(ValueError, match="one entry per image"):
        DepthMeter().update(torch.ones(2, 1, 2, 2), _batch([np.ones((2, 2))], 0))


class FakeReducer:
    """Process ``rank`` of a simulated group whose members' objects are ``parts`` (what each
    process passes to ``all_gather_object``)."""

    def __init__(self, parts, rank):
        self.parts, self.rank, self.world_size = parts, rank, len(parts)

    def all_gather_object(self, obj):
        assert obj is self.parts[self.rank], "a process must gather its own object"
        return list(self.parts)

    def all_reduce_sum(self, t):
        raise AssertionError("per-image metrics must be gathered, not summed")


def test_sync_gathers_per_image_values_across_two_processes():
    rng = np.random.default_rng(0)
    # five images with different numbers of valid pixels, so per-process means would differ
    gts = [np.where(rng.random((6, 8)) < frac, 0.0, rng.uniform(0.5, 9.5, (6, 8)))
           for frac in (0.0, 0.2, 0.5, 0.7, 0.9)]
    preds = [torch.as_tensor(g * rng.uniform(0.8, 1.25, g.shape), dtype=torch.float32)[None]
             for g in gts]
    single = DepthMeter()
    for i in range(5):
        single.update(preds[i][None], _batch([gts[i]], i))
    expected = single.compute()

    # rank 0 evaluates 0, 2, 4; rank 1 evaluates 1, 3 and 4 again (a sampler's padding)
    shards = {0: [0, 2, 4], 1: [1, 3, 4]}
    meters = {r: DepthMeter() for r in shards}
    for r, idx in shards.items():
        for i in idx:
            meters[r].update(preds[i][None], _batch([gts[i]], i))
    parts = [meters[0].values, meters[1].values]
    for r in shards:
        meters[r].sync(FakeReducer(parts, r))
    for r in shards:
        got = meters[r].compute()
        assert got == expected  # bit-identical: the same values averaged in the same order
    # a mean of the two processes' means would not be right here
    per_rank = [np.mean([depth_errors(preds[i][0], gts[i])["rmse"] for i in set(idx)])
                for idx in shards.values()]
    assert abs(np.mean(per_rank) - expected["rmse"]) > 1e-3
