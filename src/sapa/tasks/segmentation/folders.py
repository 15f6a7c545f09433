"""Real segmentation data sets on disk, in the ADE20K and Pascal VOC folder layouts.

ADE20K (the ``ADEChallengeData2016`` release)::

    ROOT/images/training/*.jpg        ROOT/annotations/training/*.png
    ROOT/images/validation/*.jpg      ROOT/annotations/validation/*.png

150 classes; annotation value 0 ("other") is ignored and the others are shifted down by one.

Pascal VOC (``VOC2012`` or ``VOCdevkit/VOC2012``)::

    ROOT/JPEGImages/<id>.jpg   ROOT/SegmentationClass/<id>.png (palette PNG)
    ROOT/ImageSets/Segmentation/{train,val}.txt

21 classes (background included); 255 (object outlines) is ignored.

Checks. Before training, every image and label file is opened (its header only) to check that
it is readable and that image and label have the same size, and every validation label is
read to check its values (classes of the layout, or the ignore value) and that the split has
labelled pixels at all; training labels are checked the same way as each sample is read.
Every failure is a ``UsageError`` naming the file.

Every sample is ``(image, label)``: ``3 x S x S`` float32 normalised with the ImageNet
statistics and ``S x S`` int64, ``S = crop_size``. Training samples are randomly rescaled
(0.5-2x), cropped (padding the label with the ignore index) and flipped; validation samples are
resized so that the shorter side is ``S`` and centre-cropped, so every model is evaluated on
the same ``S x S`` pixels.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import UsageError
from .synthetic import IGNORE_INDEX, MEAN, STD

LAYOUTS = ("ade20k", "voc")
SPLITS = ("train", "val")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
ADE20K_NUM_CLASSES = 150


def _ade_root(root: str) -> str | None:
    for cand in (root, os.path.join(root, "ADEChallengeData2016")):
        if os.path.isdir(os.path.join(cand, "images", "training")) and \
                os.path.isdir(os.path.join(cand, "annotations", "training")):
            return cand
    return None


def _voc_root(root: str) -> str | None:
    for cand in (root, os.path.join(root, "VOC2012"), os.path.join(root, "VOCdevkit", "VOC2012")):
        if all(os.path.isdir(os.path.join(cand, d))
               for d in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation"))):
            return cand
    return None


def detect_layout(root: str) -> tuple[str, str]:
    """``(layout, data_root)`` of the data set under ``root``: ``"ade20k"`` or ``"voc"``."""
    if not os.path.isdir(root):
        raise UsageError(f"--data {root!r} is not a directory")
    ade, voc = _ade_root(root), _voc_root(root)
    if ade:
        return "ade20k", ade
    if voc:
        return "voc", voc
    raise UsageError(
        f"--data {root!r} is neither in the ADE20K layout (images/training, annotations/training, "
        "images/validation, annotations/validation) nor in the Pascal VOC layout (JPEGImages, "
        "SegmentationClass, ImageSets/Segmentation/{train,val}.txt)")


def _ade_pairs(root: str, split: str):
    sub = "training" if split == "train" else "validation"
    img_dir, ann_dir = os.path.join(root, "images", sub), os.path.join(root, "annotations", sub)
    if not os.path.isdir(img_dir) or not os.path.isdir(ann_dir):
        raise UsageError(f"ADE20K split {split!r} needs {img_dir} and {ann_dir}")
    pairs = []
    for name in sorted(os.listdir(img_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        ann = os.path.join(ann_dir, stem + ".png")
        if not os.path.isfile(ann):
            raise UsageError(f"ADE20K image {name} has no annotation {ann}")
        pairs.append((os.path.join(img_dir, name), ann))
    return pairs


def _voc_pairs(root: str, split: str):
    listing = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    if not os.path.isfile(listing):
        raise UsageError(f"Pascal VOC split {split!r} needs {listing}")
    with open(listing) as f:
        ids = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    pairs = []
    for n, i in ids:
        img = os.path.join(root, "JPEGImages", i + ".jpg")
        ann = os.path.join(root, "SegmentationClass", i + ".png")
        for p in (img, ann):
            if not os.path.isfile(p):
                raise UsageError(f"{listing}, line {n}: lists {i!r} but {p} does not exist")
        pairs.append((img, ann))
    return pairs


# what PIL raises for a file it cannot decode (unknown format, truncated or corrupt data)
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError)
# raw label values of each layout: classes, and the value that is ignored
RAW_CLASSES = {"voc": (0, len(VOC_CLASSES) - 1, IGNORE_INDEX), "ade20k": (0, ADE20K_NUM_CLASSES, None)}


def _unreadable(path: str, what: str, exc: BaseException) -> UsageError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return UsageError(f"{path}: cannot read this {what} ({detail}); replace or remove the file")


def _header(path: str, what: str) -> tuple[tuple[int, int], str]:
    """``((width, height), mode)`` of an image file, reading its header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except _UNREADABLE as exc:
        raise _unreadable(path, what, exc) from None


def check_pair_headers(img_path: str, lab_path: str, layout: str) -> None:
    """``UsageError`` naming the file unless both files open as images of the same size (and
    a Pascal VOC label is a palette PNG)."""
    img_size, _ = _header(img_path, "image")
    lab_size, mode = _header(lab_path, "label")
    if layout == "voc" and mode != "P":
        raise UsageError(f"{lab_path}: Pascal VOC labels are palette PNGs of class indices, "
                         f"got mode {mode}")
    if img_size != lab_size:
        raise UsageError(f"{img_path} is {img_size[0]}x{img_size[1]} (width x height) but its "
                         f"label {lab_path} is {lab_size[0]}x{lab_size[1]}")


def _read_raw_label(path: str, layout: str) -> np.ndarray:
    """The label file's values as stored, checked against the layout's classes."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode, lab = im.mode, np.array(im)
    except _UNREADABLE as exc:
        raise _unreadable(path, "label", exc) from None
    if layout == "voc" and mode != "P":
        raise UsageError(f"{path}: Pascal VOC labels are palette PNGs of class indices, "
                         f"got mode {mode}")
    if lab.ndim != 2:
        raise UsageError(f"{path}: a label image must be single-channel, got shape {lab.shape}")
    lo, hi, ignore = RAW_CLASSES[layout]
    bad = (lab < lo) | (lab > hi)
    if ignore is not None:
        bad &= lab != ignore
    if bad.any():
        values = np.unique(lab[bad])
        shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        allowed = f"{lo}..{hi}" + (f" or {ignore} (ignored)" if ignore is not None else "")
        raise UsageError(f"{path}: label values {shown} are not classes of the "
                         f"{'Pascal VOC' if layout == 'voc' else 'ADE20K'} layout "
                         f"(expected {allowed}); fix or remove the file")
    return lab


def _read_label(path: str, layout: str) -> np.ndarray:
    """``H x W`` int64 class indices in ``[0, num_classes)`` or ``IGNORE_INDEX``."""
    lab = _read_raw_label(path, layout).astype(np.int64)
    if layout == "ade20k":  # 0 = other -> ignore, 1..150 -> 0..149
        lab -= 1
        lab[lab < 0] = IGNORE_INDEX
    return lab


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except _UNREADABLE as exc:
        raise _unreadable(path, "image", exc) from None


class FolderSegmentation(torch.utils.data.Dataset):
    """A segmentation data set read from ``root`` (ADE20K or Pascal VOC layout, detected).

    Args:
        root: the data set folder (or its parent).
        split: ``"train"`` or ``"val"``.
        crop_size: side ``S`` of every sample; a multiple of the model's stride.
        max_samples: keep only the first ``max_samples`` files (``None``: all).
        check: run ``check`` now (headers of every file; labels too for ``"val"``); every
            sample's label values are checked when it is read in any case.
    """

    ignore_index = IGNORE_INDEX

    def __init__(self, root: str, split: str = "train", crop_size: int = 512,
                 max_samples: int | None = None, check: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 16:
            raise ValueError(f"crop_size must be an int >= 16, got {crop_size!r}")
        self.layout, self.root = detect_layout(root)
        self.split, self.crop_size = split, crop_size
        pairs = (_ade_pairs if self.layout == "ade20k" else _voc_pairs)(self.root, split)
        if max_samples is not None:
            pairs = pairs[:max_samples]
        if not pairs:
            raise UsageError(f"no {split} samples found under {self.root}")
        self.pairs = pairs
        if self.layout == "voc":
            self.class_names, self.num_classes = VOC_CLASSES, len(VOC_CLASSES)
        else:
            self.num_classes = ADE20K_NUM_CLASSES
            self.class_names = tuple(f"class{i}" for i in range(ADE20K_NUM_CLASSES))
        if check:
            self.check(labels=split == "val")

    def check(self, labels: bool = True) -> None:
        """Open every file's header (readable, image and label of one size) and, with
        ``labels``, read every label (values in range, at least one labelled pixel);
        ``UsageError`` naming the first bad file."""
        labelled = 0
        for img_path, lab_path in self.pairs:
            check_pair_headers(img_path, lab_path, self.layout)
            if labels:
                labelled += int((_read_label(lab_path, self.layout) != IGNORE_INDEX).sum())
        if labels and not labelled:
            ignored = "0, 'other'" if self.layout == "ade20k" else "255"
            raise UsageError(f"every pixel of the {len(self.pairs)} {self.split} label(s) under "
                             f"{self.root} is ignored ({ignored}): there is nothing to evaluate")

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, i):
        img_path, lab_path = self.pairs[i]
        img, lab = _read_image(img_path), _read_label(lab_path, self.layout)
        if img.shape[:2] != lab.shape:
            raise UsageError(f"{img_path} is {img.shape[:2]} but its label {lab_path} is {lab.shape}")
        img = torch.from_numpy(img).permute(2, 0, 1).float().div_(255)
        return img, torch.from_numpy(lab)

    def raw_image(self, i) -> np.ndarray:
        """The validation view of sample ``i`` as ``S x S x 3`` uint8, for figures."""
        img, _ = _center(*self._load(i), self.crop_size)
        return (img.permute(1, 2, 0) * 255).round().byte().numpy()

    def __getitem__(self, i):
        img, lab = self._load(i)
        if self.split == "train":
            img, lab = _random_scale_crop_flip(img, lab, self.crop_size)
        else:
            img, lab = _center(img, lab, self.crop_size)
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return (img - mean) / std, lab.long()


def _resize(img, lab, h, w):
    img = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    lab = F.interpolate(lab[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0].long()
    return img, lab


def _center(img, lab, size):
    h, w = img.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    img, lab = _resize(img, lab, nh, nw)
    y, x = (nh - size) // 2, (nw - size) // 2
    return img[:, y : y + size, x : x + size], lab[y : y + size, x : x + size]


def _random_scale_crop_flip(img, lab, size):
    h, w = img.shape[-2:]
    s = random.uniform(0.5, 2.0) * size / min(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img, lab = _resize(img, lab, nh, nw)
    ph, pw = max(0, size - nh), max(0, size - nw)
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph))
        lab = F.pad(lab, (0, pw, 0, ph), value=IGNORE_INDEX)
    y = random.randint(0, img.shape[1] - size)
    x = random.randint(0, img.shape[2] - size)
    img, lab = img[:, y : y + size, x : x + size], lab[y : y + size, x : x + size]
    if random.random() < 0.5:
        img, lab = img.flip(-1), lab.flip(-1)
    return img, lab
