"""The generated COCO-format detection set and the COCO 2017 layout reader."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from sapa.tasks.detection import coco, synthetic


@pytest.fixture(scope="module")
def val64():
    return synthetic.generate("val", 64, 160, seed=0)


def test_generation_is_deterministic_and_per_image(val64):
    ann, px = synthetic.generate("val", 3, 160, seed=0)
    np.testing.assert_array_equal(px, val64[1][:3])
    assert ann["annotations"] == [a for a in val64[0]["annotations"] if a["image_id"] <= 3]
    _, other = synthetic.generate("val", 3, 160, seed=1)
    _, train = synthetic.generate("train", 3, 160, seed=0)
    assert not np.array_equal(other, px) and not np.array_equal(train, px)


def test_real_coco_json_with_non_contiguous_categories(val64):
    ann, px = val64
    assert px.shape == (64, 160, 160, 3) and px.dtype == np.uint8
    ids = [c["id"] for c in ann["categories"]]
    assert ids == sorted(ids) and ids != list(range(1, len(ids) + 1))
    assert {a["category_id"] for a in ann["annotations"]} == set(ids)  # every category occurs
    assert len({a["id"] for a in ann["annotations"]}) == len(ann["annotations"])
    assert [img["id"] for img in ann["images"]] == list(range(1, 65))
    json.dumps(ann)  # serialisable as is


# pycocotools 2.0.11's decode trips numpy 2's copy-keyword deprecation (its own code)
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_boxes_and_areas_are_those_of_the_visible_masks(val64):
    ann, _ = val64
    for a in ann["annotations"][:40]:
        m = mask_utils.decode(a["segmentation"])
        rows, cols = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert (x, y, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1,
                                rows.max() - rows.min() + 1)
        assert a["area"] == m.sum() <= w * h and a["iscrowd"] == 0


def test_all_three_coco_scales_are_populated_at_the_default_size(val64):
    areas = np.array([a["area"] for a in val64[0]["annotations"]])
    small, large = (areas < 32 ** 2).sum(), (areas >= 96 ** 2).sum()
    medium = len(areas) - small - large
    assert small >= 0.3 * len(areas) and medium >= 0.2 * len(areas) and large >= 5, (small, medium, large)
    # objects overlap: some box intersects another one in the same image
    assert any(_overlap(a, b) for a in val64[0]["annotations"] for b in val64[0]["annotations"]
               if a["image_id"] == b["image_id"] and a["id"] < b["id"])


def _overlap(a, b):
    ax, ay, aw, ah = a["bbox"]
    bx, by, bw, bh = b["bbox"]
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


@pytest.mark.parametrize("kwargs, match", [({"split": "test"}, "split"), ({"num_images": 0}, "num_images"),
                                           ({"size": 32}, "size"), ({"seed": -1}, "seed")])
def test_generator_arguments(kwargs, match):
    args = {"split": "train", "num_images": 1, "size": 96, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        synthetic.generate(**args)


def test_in_memory_set_items(val64):
    ds = coco.in_memory(*val64, source="generated", split="val")
    assert len(ds) == 64 and ds.num_classes == 5
    image, target = ds[0]
    assert image.shape == (3, 160, 160) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    anns = [a for a in val64[0]["annotations"] if a["image_id"] == 1]
    x, y, w, h = anns[0]["bbox"]
    assert target["boxes"][0].tolist() == [x, y, x + w, y + h]
    label_of = {c: i + 1 for i, c in enumerate(ds.index.label_to_category)}
    assert target["labels"].tolist() == [label_of[a["category_id"]] for a in anns]
    assert target["image_id"] == 1
    np.testing.assert_array_equal(ds.raw_image(0), val64[1][0])
    images, targets = coco.collate([ds[0], ds[1]])
    assert len(images) == len(targets) == 2 and targets[1]["image_id"] == 2


def test_sets_pickle_for_loader_workers(val64, tmp_path):
    import pickle

    ds = coco.in_memory(*val64, source="generated", split="val")
    again = pickle.loads(pickle.dumps(ds))
    assert torch.equal(again[2][0], ds[2][0])
    root = synthetic.write_coco_layout(str(tmp_path), 1, 2, size=64)
    folder = coco.coco_folder(root, "val")
    assert torch.equal(pickle.loads(pickle.dumps(folder))[1][0], folder[1][0])


def test_horizontal_flip_moves_boxes_with_the_image(val64):
    ds = coco.in_memory(*val64, source="generated", split="val")
    ds.hflip = True
    image, target = ds[0]
    torch.manual_seed(0)
    flips = [ds[0] for _ in range(8)]
    flipped = [(im, t) for im, t in flips if not torch.equal(im, image)]
    assert flipped, "8 draws at p = 0.5 should flip at least once"
    im, t = flipped[0]
    assert torch.equal(im, image.flip(-1))
    assert torch.equal(t["boxes"][:, 0], 160 - target["boxes"][:, 2])
    assert torch.equal(t["boxes"][:, 2], 160 - target["boxes"][:, 0])


# ---- the COCO 2017 layout ----------------------------------------------------------------

CATEGORIES = [{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}]


def _write_layout(root, train_anns, val_anns, images=None, skip_files=(), wrong_size=()):
    """Images 1-4 (64 x 48) in both splits, their files, and the two json files."""
    images = images or [{"id": i, "file_name": f"{i:012d}.jpg", "height": 48, "width": 64}
                        for i in range(1, 5)]
    for split, anns in (("train", train_anns), ("val", val_anns)):
        folder = os.path.join(root, f"{split}2017")
        os.makedirs(folder, exist_ok=True)
        for img in images:
            if img["id"] in skip_files:
                continue
            size = (32, 32) if img["id"] in wrong_size else (img["width"], img["height"])
            Image.new("RGB", size, (10 * img["id"], 0, 0)).save(os.path.join(folder, img["file_name"]))
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        with open(coco.annotation_file(str(root), split), "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": CATEGORIES}, f)
    return str(root)


def _ann(i, image_id, cat, bbox, crowd=0):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox,
            "area": float(bbox[2] * bbox[3]), "iscrowd": crowd}


ANNS = [
    _ann(1, 1, 4, [2, 3, 20, 10]),
    _ann(2, 1, 9, [30, 5, 60, 30]),          # runs past the right edge: clamped to 64
    _ann(3, 1, 9, [0, 0, 64, 48], crowd=1),  # crowd: not a target, kept for evaluation
    _ann(4, 2, 4, [10, 10, 0, 5]),           # degenerate (w = 0): skipped and reported
    _ann(5, 3, 4, [5, 5, 1, 1]),             # a 1 x 1 box: image 3 has no usable box for training
    # image 4: no annotation at all
]


def test_layout_reads_targets_crowd_and_clamps(tmp_path):
    root = _write_layout(tmp_path, ANNS, ANNS)
    with pytest.warns(UserWarning, match=r"instances_train2017.json: skipped 1 x degenerate box; "
                                         r"3 x training image without usable annotations"):
        train = coco.coco_folder(root, "train")
    assert train.index.image_ids == [1]  # 2: only a degenerate box, 3: only a 1x1 box, 4: none
    assert train.hflip  # torchvision's reference flips training images
    train.hflip = False
    image, target = train[0]
    assert image.shape == (3, 48, 64)
    assert target["boxes"].tolist() == [[2, 3, 22, 13], [30, 5, 64, 35]]
    assert target["labels"].tolist() == [1, 2]  # category 4 -> 1, 9 -> 2
    assert 3 in {a["id"] for a in train.index.gt["annotations"]}  # the crowd box, for COCOeval


def test_layout_validation_split_keeps_images_without_objects(tmp_path):
    root = _write_layout(tmp_path, ANNS, ANNS)
    with pytest.warns(UserWarning, match="1 x degenerate box"):
        val = coco.coco_folder(root, "val")
    assert val.index.image_ids == [1, 2, 3, 4] and not val.hflip
    assert val[3][1]["boxes"].shape == (0, 4)
    assert {a["id"] for a in val.index.gt["annotations"]} == {1, 2, 3, 5}
    with pytest.warns(UserWarning, match="1 x degenerate box"):
        val2 = coco.coco_folder(root, "val", max_images=2)
    assert val2.index.image_ids == [1, 2]
    assert {a["image_id"] for a in val2.index.gt["annotations"]} <= {1, 2}


def test_layout_skips_and_reports_missing_and_wrong_files(tmp_path):
    root = _write_layout(tmp_path, [], ANNS, skip_files=(2,), wrong_size=(3,))
    with pytest.warns(UserWarning) as record:
        val = coco.coco_folder(root, "val")
    message = " ".join(str(r.message) for r in record)
    assert "1 x missing image file" in message and "1 x image file of another size" in message
    assert val.index.image_ids == [1, 4]
    # max_images counts usable images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert coco.coco_folder(root, "val", max_images=2).index.image_ids == [1, 4]


@pytest.mark.parametrize("bad, match", [
    (_ann(9, 1, 5, [1, 1, 5, 5]), r"instances_val2017.json: annotations\[0\] \(id 9\): unknown category_id 5"),
    (_ann(9, 7, 4, [1, 1, 5, 5]), r"annotations\[0\] \(id 9\): unknown image_id 7"),
    ({**_ann(9, 1, 4, [1, 1, 5, 5]), "bbox": [1, 1, 5]}, r"bbox must be \[x, y, w, h\]"),
    ({"id": 9, "image_id": 1}, r"annotations\[0\] \(id 9\) must have"),
])
def test_layout_errors_name_the_file_and_annotation(tmp_path, bad, match):
    root = _write_layout(tmp_path, [], [bad])
    with pytest.raises(ValueError, match=match):
        coco.coco_folder(root, "val")


def test_layout_errors_for_missing_parts_and_bad_json(tmp_path):
    with pytest.raises(ValueError, match="needs the annotation file .*instances_val2017.json"):
        coco.coco_folder(str(tmp_path), "val")
    root = _write_layout(tmp_path, [], [])
    with open(coco.annotation_file(root, "val"), "w") as f:
        f.write('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(ValueError, match=r"instances_val2017.json, line 2: not valid JSON"):
        coco.coco_folder(root, "val")
    with open(coco.annotation_file(root, "val"), "w") as f:
        json.dump({"images": [], "annotations": []}, f)
    with pytest.raises(ValueError, match="needs a list 'categories'"):
        coco.coco_folder(root, "val")


def test_unreadable_image_content_raises_naming_the_file(tmp_path):
    root = _write_layout(tmp_path, [], ANNS[:1])
    path = os.path.join(root, "val2017", f"{1:012d}.jpg")
    Image.new("RGB", (64, 48)).save(path, format="PNG")
    with open(path, "rb") as f:
        head = f.read(60)
    with open(path, "wb") as f:  # a readable header (the size is right), then nothing
        f.write(head)
    val = coco.coco_folder(root, "val")
    assert val.index.image_ids[0] == 1
    with pytest.raises(ValueError, match=f"cannot read image .*{os.path.basename(path)}"):
        val[0]


def test_write_coco_layout_round_trips(tmp_path):
    root = synthetic.write_coco_layout(str(tmp_path), 3, 2, size=96, seed=0)
    ds = coco.coco_folder(root, "val")
    ann, px = synthetic.generate("val", 2, 96, 0)
    np.testing.assert_array_equal(ds.raw_image(1), px[1])  # PNG: lossless
    assert ds.index.gt["annotations"] == [{**a} for a in ann["annotations"]]
