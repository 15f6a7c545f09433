"""COCO box AP through pycocotools on hand-worked cases, and the meter under a simulated
2-process gather."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from sapa.tasks.detection.evaluation import STATS, CocoMeter, coco_box_metrics

CATS = [{"id": 3, "name": "a"}, {"id": 8, "name": "b"}]  # non-contiguous ids


def _gt(objects, images=(1, 2)):
    """``objects``: ``(image_id, category_id, [x, y, w, h], iscrowd)``."""
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 200, "width": 200} for i in images],
        "annotations": [{"id": k + 1, "image_id": img, "category_id": cat, "bbox": list(map(float, box)),
                         "area": float(box[2] * box[3]), "iscrowd": crowd}
                        for k, (img, cat, box, crowd) in enumerate(objects)],
        "categories": CATS,
    }


SMALL, MEDIUM, LARGE = [5, 5, 20, 20], [50, 50, 40, 40], [60, 60, 120, 110]
OBJECTS = [(1, 3, SMALL, 0), (1, 8, MEDIUM, 0), (2, 3, LARGE, 0), (2, 8, [10, 100, 45, 50], 0)]


def _dets(rows):
    """``(image_id, category_id, [x, y, w, h], score)`` -> the N x 7 result array."""
    return np.array([[img, *box, score, cat] for img, cat, box, score in rows], dtype=np.float64)


def test_perfect_detections_give_ap_one_everywhere():
    dets = _dets([(img, cat, box, 1.0) for img, cat, box, _ in OBJECTS])
    m = coco_box_metrics(_gt(OBJECTS), dets)
    # (a mean of ones in floating point: equal up to rounding)
    assert {k: m[k] for k in STATS} == pytest.approx({k: 1.0 for k in STATS}, abs=1e-12)
    assert m["ap_per_category"] == pytest.approx({"a": 1.0, "b": 1.0}, abs=1e-12)


def test_one_of_two_objects_missed_gives_51_of_101():
    # recall reaches 0.5 at precision 1, then stops: 51 of COCO's 101 recall points (0, .01,
    # ..., .5) have precision 1, the other 50 have 0, at every IoU threshold
    objects = [(1, 3, MEDIUM, 0), (2, 3, [10, 100, 45, 50], 0)]
    m = coco_box_metrics(_gt(objects), _dets([(1, 3, MEDIUM, 0.9)]))
    for k in ("ap", "ap50", "ap75", "apm"):
        assert m[k] == pytest.approx(51 / 101), k
    assert math.isnan(m["aps"]) and math.isnan(m["apl"])  # no ground truth at those scales
    assert m["ap_per_category"] == {"a": pytest.approx(51 / 101), "b": None}


def test_false_positive_ranked_first_halves_precision():
    # detections by score: FP (.9), TP (.8): precision at recall 1 is 1/2, and the
    # interpolated precision (max over recall >= r) is 1/2 at every recall point
    objects = [(1, 3, MEDIUM, 0)]
    dets = _dets([(1, 3, [120, 120, 40, 40], 0.9), (1, 3, MEDIUM, 0.8)])
    m = coco_box_metrics(_gt(objects), dets)
    assert m["ap"] == pytest.approx(0.5) and m["ap50"] == pytest.approx(0.5)


def test_localisation_error_counts_only_at_low_iou_thresholds():
    # a 40 x 40 box shifted by 9 px: IoU = 31 / 49 = 0.633, a match at IoU .50, .55 and .60
    # only: AP = 3 / 10, AP50 = 1, AP75 = 0
    objects = [(1, 3, MEDIUM, 0)]
    x, y, w, h = MEDIUM
    m = coco_box_metrics(_gt(objects), _dets([(1, 3, [x + 9, y, w, h], 0.7)]))
    assert m["ap"] == pytest.approx(0.3)
    assert m["ap50"] == pytest.approx(1.0) and m["ap75"] == pytest.approx(0.0)


def test_scale_ranges_follow_ground_truth_area():
    # the small object found, the medium one missed
    objects = [(1, 3, SMALL, 0), (1, 3, MEDIUM, 0)]
    m = coco_box_metrics(_gt(objects), _dets([(1, 3, SMALL, 0.9)]))
    assert m["aps"] == pytest.approx(1.0) and m["apm"] == pytest.approx(0.0)
    assert math.isnan(m["apl"])
    assert m["ap"] == pytest.approx(51 / 101)


def test_detections_in_crowd_regions_are_ignored():
    objects = [(1, 3, MEDIUM, 0), (1, 3, [100, 100, 90, 90], 1)]
    dets = _dets([(1, 3, [110, 110, 30, 30], 0.95), (1, 3, MEDIUM, 0.8)])
    assert coco_box_metrics(_gt(objects), dets)["ap"] == pytest.approx(1.0)
    # the same detection without the crowd region is a false positive ranked first
    assert coco_box_metrics(_gt(objects[:1]), dets)["ap"] == pytest.approx(0.5)


def test_no_detections_is_zero_and_nothing_to_evaluate_raises():
    m = coco_box_metrics(_gt(OBJECTS), np.zeros((0, 7)))
    assert {k: m[k] for k in STATS} == {k: 0.0 for k in STATS}
    with pytest.raises(ValueError, match="nothing to evaluate"):
        coco_box_metrics(_gt([]), np.zeros((0, 7)))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        coco_box_metrics(_gt(OBJECTS), np.zeros((0, 7)), image_ids=[])


def test_only_the_evaluated_images_count():
    dets = _dets([(1, cat, box, 1.0) for img, cat, box, _ in OBJECTS if img == 1])
    assert coco_box_metrics(_gt(OBJECTS), dets, image_ids=[1])["ap"] == pytest.approx(1.0)
    assert coco_box_metrics(_gt(OBJECTS), dets)["ap"] < 1.0  # image 2's objects are missed


# ---- the meter ---------------------------------------------------------------------------

LABEL_TO_CATEGORY = [3, 8]


def _outputs_and_batch(image_ids, rng):
    """Detector-style outputs (boxes xyxy, labels 1-based) near the ground truth."""
    outputs, targets = [], []
    for img in image_ids:
        rows = [(cat, box) for i, cat, box, _ in OBJECTS if i == img]
        boxes = torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h) in rows], dtype=torch.float32)
        boxes = boxes + torch.from_numpy(rng.normal(0, 2, size=boxes.shape)).float()
        extra = torch.tensor([[150.0, 20.0, 190.0, 70.0]])  # a false positive
        outputs.append({"boxes": torch.cat([boxes, extra]),
                        "scores": torch.from_numpy(rng.uniform(0.1, 1, size=len(rows) + 1)).float(),
                        "labels": torch.tensor([LABEL_TO_CATEGORY.index(c) + 1 for c, _ in rows] + [1])})
        targets.append({"image_id": img})
    return outputs, (None, targets)


class _Group:
    """Two simulated processes exchanging objects through ``all_gather_object``."""

    def __init__(self):
        self.slots, self.barrier = [None, None], threading.Barrier(2)

    def reducer(self, rank):
        group = self

        class R:
            world_size = 2

            def all_reduce_sum(self, t):
                raise AssertionError("detections must be gathered, not summed")

            def all_gather_object(self, obj):
                group.slots[rank] = obj
                group.barrier.wait()
                out = list(group.slots)
                group.barrier.wait()
                return out

        return R()


def test_meter_converts_labels_and_boxes():
    meter = CocoMeter(_gt(OBJECTS), LABEL_TO_CATEGORY)
    out = [{"boxes": torch.tensor([[5.0, 5.0, 25.0, 25.0]]), "scores": torch.tensor([0.5]),
            "labels": torch.tensor([1])}]
    meter.update(out, (None, [{"image_id": 1}]))
    np.testing.assert_array_equal(meter.per_image[1], [[1, 5, 5, 20, 20, 0.5, 3]])


def test_meter_synced_over_two_processes_equals_one_process():
    rng = np.random.default_rng(0)
    outputs, (_, targets) = _outputs_and_batch([1, 2], rng)
    single = CocoMeter(_gt(OBJECTS), LABEL_TO_CATEGORY)
    single.update(outputs, (None, targets))
    expected = single.compute()

    group = _Group()
    meters = [CocoMeter(_gt(OBJECTS), LABEL_TO_CATEGORY) for _ in range(2)]
    meters[0].update(outputs[1:], (None, targets[1:]))  # rank 0 has image 2, rank 1 image 1
    meters[1].update(outputs[:1], (None, targets[:1]))
    threads = [threading.Thread(target=m.sync, args=(group.reducer(r),)) for r, m in enumerate(meters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m in meters:
        got = m.compute()
        assert got == expected
    assert 0 < expected["ap"] < 1


def test_meter_without_images_raises():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        CocoMeter(_gt(OBJECTS), LABEL_TO_CATEGORY).compute()
