"""COCO box AP with the official COCO API (``pycocotools.cocoeval.COCOeval``), and the meter
that gathers detections across processes.

The metrics are ``COCOeval(gt, gt.loadRes(dets), "bbox")``'s first six ``stats``, the numbers
of COCO's leaderboard and of the paper's Table 3:

- ``ap``: AP averaged over IoU thresholds .50:.05:.95 (101-point interpolated precision,
  averaged over categories), up to 100 detections per image;
- ``ap50``, ``ap75``: AP at IoU .50 and .75;
- ``aps``, ``apm``, ``apl``: AP of objects with area < 32², 32²-96², > 96² pixels (the ground
  truth's ``area`` field; in pixels of the original image).

An area range without any ground-truth object has no AP: COCOeval's ``-1`` is reported as
``nan``. Crowd ground truth is matched to nothing and ignores the detections it covers.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

from ..base import Reducer

STATS = ("ap", "ap50", "ap75", "aps", "apm", "apl")


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise ImportError("COCO evaluation needs pycocotools: "
                          "pip install 'sapa[detection]'") from exc
    return COCO, COCOeval


def coco_ground_truth(gt: dict):
    """A ``pycocotools.coco.COCO`` over the instances dict ``gt`` (without its console output)."""
    COCO, _ = _pycocotools()
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_box_metrics(gt, detections: np.ndarray, image_ids=None) -> dict:
    """COCO box AP of ``detections`` against ``gt``.

    Args:
        gt: a ``pycocotools.coco.COCO`` (or an instances dict).
        detections: ``N x 7`` ``[image_id, x, y, w, h, score, category_id]`` (COCO's result
            format as an array; boxes in pixels, ``x, y`` the top-left corner).
        image_ids: the images evaluated (default: every image of ``gt``); images without
            detections count, their objects are missed.

    Returns:
        ``STATS`` -> float (``nan`` for an area range without ground truth) and
        ``"ap_per_category"``: category name -> AP (``None`` without ground truth).

    Raises:
        ValueError: no image to evaluate, or no (non-crowd) ground-truth object in them.
    """
    _, COCOeval = _pycocotools()
    if isinstance(gt, dict):
        gt = coco_ground_truth(gt)
    ids = sorted(gt.getImgIds() if image_ids is None else {int(i) for i in image_ids})
    if not ids:
        raise ValueError("nothing to evaluate: no image")
    if not gt.getAnnIds(imgIds=ids, iscrowd=False):
        raise ValueError("nothing to evaluate: the evaluated images have no ground-truth object")
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 7)
    with contextlib.redirect_stdout(io.StringIO()):
        if len(detections):
            dt = gt.loadRes(detections)
        else:  # loadRes refuses an empty result; an empty result set is what it would make
            dt = coco_ground_truth({"images": gt.dataset["images"], "annotations": [],
                                    "categories": gt.dataset["categories"]})
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {k: (float(v) if v > -1 else float("nan")) for k, v in zip(STATS, ev.stats[:6])}
    # precision: T x R x K x A x M (IoU thresholds, recall points, categories, areas, maxDets)
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per_cat = {}
    for k, cid in enumerate(ev.params.catIds):
        p = prec[:, :, k]
        per_cat[gt.cats[cid]["name"]] = float(p[p > -1].mean()) if (p > -1).any() else None
    out["ap_per_category"] = per_cat
    return out


class CocoMeter:
    """Collects detections per evaluated image; ``compute`` runs ``coco_box_metrics``.

    ``update(outputs, batch)``: ``outputs`` the detector's list of dicts (``boxes`` ``N x 4``
    ``x0, y0, x1, y1`` in the original image's pixels, ``scores``, ``labels`` 1-based
    contiguous), ``batch`` ``(images, targets)`` whose targets carry ``image_id``.
    ``sync(reducer)`` gathers every process's images and detections (an image seen by several
    processes counts once), sorted by image so the result does not depend on how the images
    were split; afterwards every process computes the same metrics.

    Args:
        gt: the ground truth (``CocoIndex.gt``: instances dict).
        label_to_category: contiguous label ``l`` -> COCO category id ``label_to_category[l - 1]``.
    """

    def __init__(self, gt: dict, label_to_category: list[int]):
        self.gt = coco_ground_truth(gt)
        self.label_to_category = np.asarray([0, *label_to_category], dtype=np.float64)
        self.per_image: dict[int, np.ndarray] = {}

    def update(self, outputs, batch) -> None:
        _, targets = batch
        if len(outputs) != len(targets):
            raise ValueError(f"outputs must hold one dict per image of the batch, got "
                             f"{len(outputs)} for {len(targets)} images")
        for out, tgt in zip(outputs, targets):
            image_id = int(tgt["image_id"])
            boxes = out["boxes"].detach().to("cpu", torch.float64).numpy().reshape(-1, 4)
            scores = out["scores"].detach().to("cpu", torch.float64).numpy().reshape(-1)
            labels = out["labels"].detach().to("cpu").numpy().reshape(-1).astype(np.int64)
            rows = np.empty((len(boxes), 7), dtype=np.float64)
            rows[:, 0] = image_id
            rows[:, 1:3] = boxes[:, :2]
            rows[:, 3:5] = boxes[:, 2:] - boxes[:, :2]
            rows[:, 5] = scores
            rows[:, 6] = self.label_to_category[labels]
            self.per_image[image_id] = rows

    def sync(self, reducer: Reducer) -> None:
        merged: dict[int, np.ndarray] = {}
        for part in reducer.all_gather_object(self.per_image):
            for image_id, rows in part.items():
                merged.setdefault(image_id, rows)
        self.per_image = dict(sorted(merged.items()))

    def compute(self) -> dict:
        if not self.per_image:
            raise ValueError("nothing to evaluate: the meter saw no image")
        dets = np.concatenate([self.per_image[k] for k in sorted(self.per_image)], axis=0)
        return coco_box_metrics(self.gt, dets, list(self.per_image))
