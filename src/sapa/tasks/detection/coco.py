"""COCO-format detection data: the validated annotation index, the data set and its collate.

One code path reads both sources: the generated set (``synthetic.generate``: a COCO dict and
its pixels in memory) and real data in the COCO 2017 layout (``train2017/``, ``val2017/``,
``annotations/instances_{train,val}2017.json``). ``index_coco`` validates an instances dict
once, before any training, and turns it into per-image targets:

- structural problems (missing keys, duplicate ids, an annotation of an unknown image or an
  unknown ``category_id``, a malformed ``bbox``) raise ``UsageError`` (a ``ValueError``)
  naming the file and the annotation;
- **degenerate boxes** (non-finite, ``w <= 0`` or ``h <= 0``, or wholly outside the image) are
  skipped, counted and reported (a warning), and left out of the evaluation's ground truth;
- **crowd** annotations (``iscrowd = 1``) are left out of the training targets and kept in the
  evaluation's ground truth, where COCOeval treats them as regions to ignore (as torchvision's
  reference scripts do);
- **images without annotations**: the training split drops images that have no annotation
  with ``w > 1`` and ``h > 1`` (torchvision's ``_coco_remove_images_without_annotations``);
  the validation split keeps them (they count for false positives);
- **missing or unreadable image files** and files whose size differs from the json's
  ``width``/``height`` are skipped, counted and reported (the header of every used image is
  read up front), so a bad file never stops a run in the middle.

Labels are contiguous, ``1 .. K`` in the order of increasing COCO category id (0 is the
background of torchvision's detectors); ``label_to_category`` maps them back.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import UsageError

SPLIT_FOLDERS = {"train": "train2017", "val": "val2017"}


def annotation_file(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{SPLIT_FOLDERS[split]}.json")


@dataclass
class CocoIndex:
    """A validated COCO instances dict, ready for training and evaluation.

    Attributes:
        source: where the dict came from (a file path, or a description), for messages.
        gt: the instances dict for evaluation: the kept images, their valid annotations
            (crowd included), the categories.
        image_ids: the kept images, in the order of ``gt["images"]``.
        targets: image id -> ``(boxes xyxy float32 N x 4, labels int64 N)``, crowd excluded.
        label_to_category: contiguous label ``l`` (1-based) -> COCO category id
            ``label_to_category[l - 1]``.
        class_names: the category names in label order.
        skipped: reason -> how many annotations or images were skipped for it.
    """

    source: str
    gt: dict
    image_ids: list[int]
    targets: dict[int, tuple[torch.Tensor, torch.Tensor]]
    label_to_category: list[int]
    class_names: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def images(self) -> dict[int, dict]:
        return {img["id"]: img for img in self.gt["images"]}


def _need(cond: bool, source: str, what: str) -> None:
    if not cond:
        raise UsageError(f"{source}: {what}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def index_coco(data: dict, source: str, split: str) -> CocoIndex:
    """Validate the COCO instances dict ``data`` and index it (see the module doc).

    Args:
        data: ``{"images", "annotations", "categories"}`` as in ``instances_*.json``.
        source: the file (or a description) named in errors and reports.
        split: ``"train"`` (drops images without usable boxes) or ``"val"`` (keeps all).
    """
    _need(isinstance(data, dict), source, "the top level must be a JSON object")
    for key in ("images", "annotations", "categories"):
        _need(isinstance(data.get(key), list), source, f"needs a list {key!r}")
    cats = data["categories"]
    _need(len(cats) > 0, source, "'categories' is empty")
    cat_ids: dict[int, str] = {}
    for i, c in enumerate(cats):
        _need(isinstance(c, dict) and isinstance(c.get("id"), int) and "name" in c, source,
              f"categories[{i}] must have an int 'id' and a 'name', got {c!r}")
        _need(c["id"] not in cat_ids, source, f"category id {c['id']} appears twice")
        cat_ids[c["id"]] = str(c["name"])
    label_to_category = sorted(cat_ids)
    label_of = {cid: i + 1 for i, cid in enumerate(label_to_category)}

    images: dict[int, dict] = {}
    for i, img in enumerate(data["images"]):
        _need(isinstance(img, dict) and isinstance(img.get("id"), int)
              and isinstance(img.get("file_name"), str)
              and isinstance(img.get("height"), int) and isinstance(img.get("width"), int)
              and img["height"] > 0 and img["width"] > 0, source,
              f"images[{i}] must have an int 'id', a 'file_name' and positive int "
              f"'height' and 'width', got {img!r}")
        _need(img["id"] not in images, source, f"image id {img['id']} appears twice")
        images[img["id"]] = img

    skipped: dict[str, int] = {}
    anns_of: dict[int, list[dict]] = {k: [] for k in images}
    ann_ids: set = set()
    for i, a in enumerate(data["annotations"]):
        where = f"annotations[{i}]" + (f" (id {a.get('id')!r})" if isinstance(a, dict) else "")
        _need(isinstance(a, dict) and "id" in a and "image_id" in a and "category_id" in a
              and "bbox" in a, source,
              f"{where} must have 'id', 'image_id', 'category_id' and 'bbox'")
        _need(a["id"] not in ann_ids, source, f"{where}: annotation id {a['id']!r} appears twice")
        ann_ids.add(a["id"])
        _need(a["image_id"] in images, source, f"{where}: unknown image_id {a['image_id']!r}")
        _need(a["category_id"] in cat_ids, source,
              f"{where}: unknown category_id {a['category_id']!r}; the categories are "
              f"{label_to_category}")
        box = a["bbox"]
        _need(isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box), source,
              f"{where}: bbox must be [x, y, w, h] numbers, got {box!r}")
        img = images[a["image_id"]]
        x, y, w, h = (float(v) for v in box)
        inside = x < img["width"] and y < img["height"] and x + w > 0 and y + h > 0
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0 or not inside:
            skipped["degenerate box"] = skipped.get("degenerate box", 0) + 1
            continue
        # COCOeval reads 'area' (the scale ranges) and 'iscrowd'; default them as COCO would
        anns_of[a["image_id"]].append({**a, "area": float(a.get("area", w * h)),
                                       "iscrowd": int(bool(a.get("iscrowd", 0)))})

    keep = []
    for img_id in images:
        anns = anns_of[img_id]
        # torchvision's reference: a training image needs an annotation with w > 1 and h > 1
        if split == "train" and not any(a["bbox"][2] > 1 and a["bbox"][3] > 1 for a in anns):
            skipped["training image without usable annotations"] = \
                skipped.get("training image without usable annotations", 0) + 1
            continue
        keep.append(img_id)

    targets = {}
    for img_id in keep:
        img = images[img_id]
        boxes, labels = [], []
        for a in anns_of[img_id]:
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            # clamp to the image, as torchvision's reference does
            x0, y0 = min(max(x, 0.0), img["width"]), min(max(y, 0.0), img["height"])
            x1, y1 = min(max(x + w, 0.0), img["width"]), min(max(y + h, 0.0), img["height"])
            boxes.append((x0, y0, x1, y1))
            labels.append(label_of[a["category_id"]])
        targets[img_id] = (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                           torch.tensor(labels, dtype=torch.int64))
    gt = {"images": [images[k] for k in keep],
          "annotations": [a for k in keep for a in anns_of[k]],
          "categories": cats}
    return CocoIndex(source, gt, keep, targets, label_to_category,
                     [cat_ids[c] for c in label_to_category], skipped)


def report_skips(index: CocoIndex) -> None:
    """Warn once about everything ``index`` skipped (nothing when nothing was)."""
    if index.skipped:
        what = "; ".join(f"{n} x {reason}" for reason, n in sorted(index.skipped.items()))
        warnings.warn(f"{index.source}: skipped {what}", stacklevel=3)


def restrict(index: CocoIndex, keep: list[int], bad: dict[int, str] | None = None) -> None:
    """Keep only the images ``keep`` of ``index`` (in place); ``bad`` (image id -> reason)
    are images dropped for a reason, which is counted in ``index.skipped``."""
    for reason in (bad or {}).values():
        index.skipped[reason] = index.skipped.get(reason, 0) + 1
    kept = set(keep)
    index.image_ids = [k for k in index.image_ids if k in kept]
    index.gt["images"] = [img for img in index.gt["images"] if img["id"] in kept]
    index.gt["annotations"] = [a for a in index.gt["annotations"] if a["image_id"] in kept]
    index.targets = {k: v for k, v in index.targets.items() if k in kept}


class CocoDetection(torch.utils.data.Dataset):
    """A detection set in the format of torchvision's detectors.

    ``ds[i]`` is ``(image, target)``: ``image`` ``3 x H x W`` float32 in [0, 1] (the
    detector's transform normalises and resizes it); ``target`` a dict with ``boxes``
    (``N x 4`` float32, ``x0, y0, x1, y1`` in pixels of this image), ``labels`` (``N``
    int64, ``1 .. num_classes``) and ``image_id`` (int, the COCO id).

    Args:
        index: the validated annotations (``index_coco``).
        read_image: ``image dict -> H x W x 3 uint8`` array.
        hflip: flip training images horizontally with probability 0.5 (torch's global RNG).
    """

    def __init__(self, index: CocoIndex, read_image: Callable[[dict], np.ndarray],
                 hflip: bool = False):
        if not index.image_ids:
            raise UsageError(f"{index.source}: no usable image")
        self.index, self.read_image, self.hflip = index, read_image, hflip
        self._images = index.images
        self.class_names = index.class_names
        self.num_classes = len(index.class_names)

    def __len__(self) -> int:
        return len(self.index.image_ids)

    def raw_image(self, i: int) -> np.ndarray:
        """``H x W x 3`` uint8, for figures."""
        return self.read_image(self._images[self.index.image_ids[i]])

    def __getitem__(self, i: int):
        image_id = self.index.image_ids[i]
        pixels = self.raw_image(i)
        image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255)
        boxes, labels = self.index.targets[image_id]
        boxes = boxes.clone()
        if self.hflip and float(torch.rand(())) < 0.5:
            image = image.flip(-1)
            boxes[:, [0, 2]] = image.shape[-1] - boxes[:, [2, 0]]
        return image, {"boxes": boxes, "labels": labels.clone(), "image_id": image_id}


def collate(batch):
    """``[(image, target), ...]`` -> ``(images, targets)``, two lists (images differ in size)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


# ---- the two sources -----------------------------------------------------------------------

def in_memory(coco: dict, pixels: np.ndarray, source: str, split: str,
              max_images: int | None = None) -> CocoDetection:
    """A ``CocoDetection`` over images held in memory: ``pixels[k]`` is the image of
    ``coco["images"][k]``."""
    index = index_coco(coco, source, split)
    if max_images is not None:
        restrict(index, index.image_ids[:max_images])
    report_skips(index)
    return CocoDetection(index, _ArrayReader(pixels, coco["images"]))


class _ArrayReader:
    """``image dict -> pixels[k]`` for the ``k``-th entry of ``images`` (picklable, for data
    loader workers)."""

    def __init__(self, pixels: np.ndarray, images: list[dict]):
        self.pixels = pixels
        self.row = {img["id"]: k for k, img in enumerate(images)}

    def __call__(self, img: dict) -> np.ndarray:
        return self.pixels[self.row[img["id"]]]


class _FileReader:
    """``image dict -> the decoded file folder/file_name`` (picklable)."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self, img: dict) -> np.ndarray:
        return _read_file(os.path.join(self.folder, img["file_name"]))


def _read_file(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read image {path}: {exc}") from exc


def _file_problem(folder: str, img: dict) -> str | None:
    """Why the file of ``img`` cannot be used (missing, unreadable, or of another size than
    the json says; only its header is read), or ``None``."""
    from PIL import Image

    path = os.path.join(folder, img["file_name"])
    if not os.path.isfile(path):
        return "missing image file"
    try:
        with Image.open(path) as im:
            size = im.size
    except (OSError, ValueError):
        return "unreadable image file"
    if size != (img["width"], img["height"]):
        return "image file of another size than its json entry"
    return None


def coco_folder(root: str, split: str, max_images: int | None = None,
                hflip: bool | None = None) -> CocoDetection:
    """The COCO 2017 layout: ``root/{train2017,val2017}/`` and
    ``root/annotations/instances_{train2017,val2017}.json``.

    Args:
        max_images: use the first this many usable images.
        hflip: random horizontal flips (default: for the training split).
    """
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"split must be one of {list(SPLIT_FOLDERS)}, got {split!r}")
    ann, folder = annotation_file(root, split), os.path.join(root, SPLIT_FOLDERS[split])
    for path, what in ((ann, "annotation file"), (folder, "image folder")):
        if not os.path.exists(path):
            raise UsageError(f"--data {root}: the COCO 2017 layout needs the {what} {path}")
    try:
        with open(ann) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{ann}, line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    index = index_coco(data, ann, split)
    good, bad = [], {}
    for img in index.gt["images"]:  # only the files that will be used are checked
        if max_images is not None and len(good) == max_images:
            break
        problem = _file_problem(folder, img)
        if problem is None:
            good.append(img["id"])
        else:
            bad[img["id"]] = problem
    restrict(index, good, bad)
    report_skips(index)
    return CocoDetection(index, _FileReader(folder),
                         hflip=split == "train" if hflip is None else hflip)
