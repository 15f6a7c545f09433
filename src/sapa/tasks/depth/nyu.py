"""NYU Depth V2 as BTS distributes it (cleinc/bts, ``README``, ``train_test_inputs/``).

Layout of ``--data ROOT``::

    ROOT/nyudepthv2_train_files_with_gt.txt   (or ROOT/train_test_inputs/...)
    ROOT/nyudepthv2_test_files_with_gt.txt
    ROOT/sync/<scene>/rgb_00045.jpg            training frames (BTS's sync.zip)
    ROOT/sync/<scene>/sync_depth_00045.png
    ROOT/official_splits/test/<scene>/rgb_00045.jpg   the 654 test frames
    ROOT/official_splits/test/<scene>/sync_depth_00045.png

Each list line is ``rgb_path depth_path focal`` (paths relative to ``sync/`` for training,
``official_splits/test/`` for testing; BTS's training list starts them with ``/``). Depth PNGs
are 16-bit, millimetres, 0 = no measurement (``utils/extract_official_train_test_set_from_mat.py``
writes ``uint16(depth * 1000)``); frames are 480 x 640.

Everything that can be checked cheaply is checked when the data set is built, before any
training: every line has three fields and a positive focal length, every file a line names
exists, every depth PNG is 16-bit and has its RGB frame's size (PNG/JPEG headers only), the
frames leave room for the training crop. Errors are ``sapa.errors.UsageError`` (a
``ValueError``) naming the list file and line.

Preprocessing follows BTS, at a chosen resolution (``height``: 480 is BTS's):

- **training**: the frame is resized to ``height x round(height * 4 / 3)`` (bilinear,
  antialiased; depth nearest), cut to BTS's registration crop (pixels 43:608 x 45:472 of
  640 x 480, scaled), randomly rotated by up to 2.5 degrees (depth: nearest, 0 fill), randomly
  cropped to ``crop_size(height)`` (416 x 544 at 480, BTS's), flipped with p = 0.5, and with
  p = 0.5 gamma (0.9-1.1), brightness (0.75-1.25) and colour (0.9-1.1 per channel) jittered.
- **testing**: the whole frame resized to the same size as input; the ground truth stays at
  its full resolution, so the metrics are taken against the original depth map with the exact
  Eigen crop (the prediction is resized to it, see ``DepthTask.predict``).

Random draws use torch's generator, so a run is reproducible and resumes identically.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import UsageError
from ..photos import MEAN, STD

LISTS = {"train": "nyudepthv2_train_files_with_gt.txt", "test": "nyudepthv2_test_files_with_gt.txt"}
FOLDERS = {"train": "sync", "test": os.path.join("official_splits", "test")}
LIST_DIRS = ("", "train_test_inputs")
FRAME = (480, 640)
# BTS's training crop on NYU: PIL box (left, upper, right, lower) "to avoid blank boundaries"
BTS_CROP = (43, 45, 608, 472)
BTS_TRAIN_SIZE = (416, 544)
# Pillow's modes for a 16-bit greyscale PNG (old versions open it as 32-bit "I")
_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I")
MAX_DEPTH = 10.0
ROTATE_DEGREES = 2.5
# the smallest --image-size whose training crop (crop_size) fits in BTS's registration crop
MIN_HEIGHT = 64


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise UsageError("reading NYU Depth V2 needs Pillow: pip install 'sapa[experiments]'") from exc
    return Image


def is_nyu_root(root: str) -> bool:
    """Whether ``root`` holds BTS's NYU file lists (at its top or in ``train_test_inputs/``)."""
    return any(os.path.isfile(os.path.join(root, d, LISTS["test"])) for d in LIST_DIRS)


def find_list(root: str, split: str) -> str:
    for d in LIST_DIRS:
        path = os.path.join(root, d, LISTS[split])
        if os.path.isfile(path):
            return path
    raise UsageError(f"--data {root}: no {LISTS[split]} in it or in its train_test_inputs/ "
                     f"(NYU Depth V2 as BTS distributes it)")


def read_list(path: str) -> list[tuple[int, str, str, float]]:
    """``(line number, rgb path, depth path, focal)`` for every non-blank line of a BTS list."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise UsageError(f"{path} line {n}: expected 3 fields 'rgb_path depth_path "
                                 f"focal', got {len(fields)}: {line.strip()!r}")
            try:
                focal = float(fields[2])
            except ValueError:
                focal = float("nan")
            if not math.isfinite(focal) or focal <= 0:
                raise UsageError(f"{path} line {n}: the focal length must be a positive number, "
                                 f"got {fields[2]!r}")
            out.append((n, fields[0], fields[1], focal))
    if not out:
        raise UsageError(f"{path}: the list is empty")
    return out


def crop_size(height: int) -> tuple[int, int]:
    """Training crop ``(h, w)`` for frames resized to ``height`` rows: BTS's 416 x 544 scaled
    by ``height / 480``, rounded down to multiples of 32 (at least 32)."""
    s = height / FRAME[0]
    return tuple(max(32, int(v * s) // 32 * 32) for v in BTS_TRAIN_SIZE)


def _subset(n: int, limit: int | None) -> list[int]:
    """``limit`` evenly spaced positions of ``range(n)`` (all when ``limit`` is None)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, limit).round()})


class NYUDepthV2(torch.utils.data.Dataset):
    """BTS's NYU Depth V2 split as a data set of dicts ``{"image", "depth", "index"}``.

    - ``"image"``: ``3 x h x w`` float32, ImageNet-normalised (training: a random crop of
      ``crop_size(height)``; testing: the frame at ``height x round(height * W / H)``);
    - ``"depth"``: ``1 x h x w`` float32 metres, 0 = invalid (testing: the frame's full
      resolution);
    - ``"index"``: the position in this data set.

    Args:
        root: the folder of the layout above.
        split: ``"train"`` or ``"test"``.
        height: rows the frames are resized to (480: no resizing, as BTS).
        limit: use at most this many list entries, evenly spaced through the list.
    """

    max_depth = MAX_DEPTH
    crop = "eigen"

    def __init__(self, root: str, split: str = "train", height: int = 480,
                 limit: int | None = None):
        if split not in LISTS:
            raise ValueError(f"split must be one of {list(LISTS)}, got {split!r}")
        if isinstance(height, bool) or not isinstance(height, int) or height < MIN_HEIGHT:
            raise ValueError(f"height must be an int >= {MIN_HEIGHT} (the training crop must fit "
                             f"in BTS's registration crop), got {height!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        if not os.path.isdir(root):
            raise UsageError(f"--data {root!r} is not a folder")
        self.root, self.split, self.height = root, split, height
        self.list_path = find_list(root, split)
        entries = read_list(self.list_path)
        folder = os.path.join(root, FOLDERS[split])
        self.samples = []
        for i in _subset(len(entries), limit):
            n, rgb, depth, focal = entries[i]
            self.samples.append(self._check(n, os.path.join(folder, rgb.lstrip("/")),
                                            os.path.join(folder, depth.lstrip("/")), focal))

    def _check(self, n: int, rgb: str, depth: str, focal: float) -> dict:
        Image = _pil()
        where = f"{self.list_path} line {n}"
        for kind, path in (("RGB image", rgb), ("depth map", depth)):
            if not os.path.isfile(path):
                raise UsageError(f"{where}: the {kind} {path} does not exist")
        try:
            with Image.open(depth) as im:
                mode, dsize, fmt = im.mode, im.size, im.format
            with Image.open(rgb) as im:
                rsize = im.size
        except OSError as exc:
            raise UsageError(f"{where}: cannot read {rgb} or {depth}: {exc}") from exc
        if fmt != "PNG" or mode not in _DEPTH_MODES:
            raise UsageError(f"{where}: the depth map {depth} must be a 16-bit PNG (millimetres), "
                             f"got a {fmt} of mode {mode}")
        if rsize != dsize:
            raise UsageError(f"{where}: {rgb} is {rsize[0]}x{rsize[1]} but its depth map {depth} "
                             f"is {dsize[0]}x{dsize[1]} (width x height)")
        if self.split == "train":
            region = self._region(self.input_size(dsize[::-1]))
            need = crop_size(self.height)
            if region[0] < need[0] or region[1] < need[1]:
                raise UsageError(f"{where}: {rgb} is {rsize[0]}x{rsize[1]}; resized to "
                                 f"{self.height} rows and cut to BTS's registration crop it "
                                 f"leaves {region[0]}x{region[1]}, less than the training crop "
                                 f"{need[0]}x{need[1]} (NYU frames are 640x480)")
        return {"rgb": rgb, "depth": depth, "focal": focal, "line": n, "size": dsize[::-1]}

    @staticmethod
    def _box(size: tuple[int, int]) -> tuple[int, int, int, int]:
        """BTS's registration crop ``(left, top, right, bottom)`` scaled to ``size = (h, w)``."""
        fx, fy = size[1] / FRAME[1], size[0] / FRAME[0]
        return (round(BTS_CROP[0] * fx), round(BTS_CROP[1] * fy), round(BTS_CROP[2] * fx),
                round(BTS_CROP[3] * fy))

    def _region(self, size: tuple[int, int]) -> tuple[int, int]:
        left, top, right, bottom = self._box(size)
        return bottom - top, right - left

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``3 x H x W`` float in [0, 1] and ``1 x H x W`` metres, at the frame's resolution."""
        Image = _pil()
        s = self.samples[i]
        with Image.open(s["rgb"]) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        with Image.open(s["depth"]) as im:
            depth = np.asarray(im, dtype=np.float32) / 1000.0
        return torch.from_numpy(rgb).permute(2, 0, 1), torch.from_numpy(depth)[None]

    def input_size(self, frame: tuple[int, int]) -> tuple[int, int]:
        """The network input size for a frame of ``(H, W)``: ``height x round(height W / H)``."""
        return self.height, round(self.height * frame[1] / frame[0])

    def __getitem__(self, i: int) -> dict:
        rgb, depth = self._load(i)
        size = self.input_size(tuple(rgb.shape[-2:]))
        image = F.interpolate(rgb[None], size=size, mode="bilinear", align_corners=False,
                              antialias=True)[0] if size != tuple(rgb.shape[-2:]) else rgb
        if self.split == "train":
            small = F.interpolate(depth[None], size=size, mode="nearest")[0]
            image, depth = self._train_transform(image, small)
        image = (image - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        return {"image": image.contiguous(), "depth": depth.contiguous(), "index": i}

    def raw_image(self, i: int) -> np.ndarray:
        """The network's input of sample ``i`` (without augmentation) as ``h x w x 3`` uint8."""
        rgb, _ = self._load(i)
        size = self.input_size(tuple(rgb.shape[-2:]))
        rgb = F.interpolate(rgb[None], size=size, mode="bilinear", align_corners=False,
                            antialias=True)[0]
        return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()

    def _train_transform(self, image: torch.Tensor, depth: torch.Tensor):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.functional import rotate

        left, top, right, bottom = self._box(tuple(image.shape[-2:]))
        image, depth = image[:, top:bottom, left:right], depth[:, top:bottom, left:right]
        angle = float(torch.rand(()) * 2 - 1) * ROTATE_DEGREES
        image = rotate(image, angle, InterpolationMode.BILINEAR)
        depth = rotate(depth, angle, InterpolationMode.NEAREST)
        ch, cw = crop_size(self.height)  # fits: checked in __init__
        y = int(torch.randint(0, image.shape[1] - ch + 1, ()))
        x = int(torch.randint(0, image.shape[2] - cw + 1, ()))
        image, depth = image[:, y : y + ch, x : x + cw], depth[:, y : y + ch, x : x + cw]
        if torch.rand(()) < 0.5:
            image, depth = image.flip(-1), depth.flip(-1)
        if torch.rand(()) < 0.5:  # BTS's augment_image for NYU
            gamma = 0.9 + 0.2 * float(torch.rand(()))
            brightness = 0.75 + 0.5 * float(torch.rand(()))
            colors = 0.9 + 0.2 * torch.rand(3)
            image = (image ** gamma * brightness * colors.view(3, 1, 1)).clamp(0, 1)
        return image, depth
