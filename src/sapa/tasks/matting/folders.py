"""The Adobe Deep Image Matting data set on disk: training foregrounds composited on the fly
over a background folder, and the Composition-1k test set.

Layout (``--data PATH``; the ``Combined_Dataset`` folder of the Adobe release)::

    PATH/Training_set/fg/<name>.{png,jpg}        foregrounds (431 in the release)
    PATH/Training_set/alpha/<name>.{png,jpg}     their alpha mattes, same names and sizes
    PATH/Training_set/bg/*.{png,jpg}             backgrounds (A2U: COCO train2014); --bg-dir
    PATH/Test_set/merged/<fg>_<k>.png            Composition-1k images (1000)
    PATH/Test_set/trimaps/<fg>_<k>.png           their trimaps (0 / 128 / 255)
    PATH/Test_set/alpha/<fg>.png                 ground truth, one per foreground (50)

Training follows A2U's generator (``scripts/data_generator.py``) in what decides the
numbers: sample ``i`` takes foreground ``i mod F`` and background ``i mod B`` (the set has
``max(F, B)`` samples), scales the foreground and its alpha by a random factor in
``[0.8, 1.25]`` (bilinear), flips it half of the time, makes the trimap by eroding
``alpha = 255`` and ``alpha = 0`` with disks of random radii 0-14 (A2U's elliptic kernels of
1-29 px), crops ``size x size`` centred on a random unknown pixel, and composites it over the
background (upscaled, bicubic, when it is smaller than the foreground; its top-left part, as
Adobe's ``Composition_code.py``). Every random draw comes from a generator seeded with
``(seed, i)``, so a sample is the same in every epoch and every process (resumable runs see
the same batches); A2U's colour jitter, rotation, shear and two-foreground mixing are left out.

Testing follows A2U's ``validate``: whole images at their own size (batches of different
sizes are collated as lists), alpha and trimap read as single-channel images (of an RGB
alpha the first channel, as the MATLAB script takes ``alpha(:,:,1)``).
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import UsageError
from .synthetic import composite, trimap_from_alpha

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
TRIMAP_VALUES = (0, 128, 255)
COMPOSITES_SCALE = (0.8, 1.25)
TRAIN_TRIMAP_RADII = (0, 14)


def _images(folder: str) -> dict[str, str]:
    """``stem -> path`` of the images in ``folder``; raises if it is missing or has none."""
    if not os.path.isdir(folder):
        raise UsageError(f"{folder}: folder not found")
    out = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS:
            if stem in out:
                raise UsageError(f"{folder}: two images named {stem!r} "
                                 f"({os.path.basename(out[stem])}, {name})")
            out[stem] = os.path.join(folder, name)
    if not out:
        raise UsageError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return out


def _size(path: str) -> tuple[int, int]:
    """``(H, W)`` from the file's header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the image: {exc}") from None


def read_rgb(path: str) -> np.ndarray:
    """``H x W x 3`` uint8; a grey image is repeated to three channels."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("RGB", "L"):
            raise UsageError(f"{path}: expected an RGB (or grey) image, got mode {im.mode}")
        a = np.array(im)
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a


def read_gray(path: str, what: str) -> np.ndarray:
    """``H x W`` uint8: an 8-bit grey image, or the first channel of an RGB one."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "RGB"):
            raise UsageError(f"{path}: expected an 8-bit grey (or RGB) {what}, got mode {im.mode}")
        a = np.array(im)
    return a[..., 0] if a.ndim == 3 else a


def check_layout(root: str) -> None:
    """Raise ``ValueError`` naming what is missing if ``root`` is not the Adobe layout."""
    need = [os.path.join(root, *p) for p in (("Training_set", "fg"), ("Training_set", "alpha"),
                                             ("Test_set", "merged"), ("Test_set", "trimaps"),
                                             ("Test_set", "alpha"))]
    missing = [p for p in need if not os.path.isdir(p)]
    if missing:
        raise UsageError(f"--data {root}: not the Adobe Deep Image Matting layout "
                         f"(Training_set/{{fg,alpha}}, Test_set/{{merged,trimaps,alpha}}); missing: "
                         + ", ".join(missing))


class AdobeTrain(torch.utils.data.Dataset):
    """Training composites (see the module doc); items as ``SyntheticMatting``'s training ones.

    Args:
        root: the ``Combined_Dataset`` folder.
        bg_dir: background images (default ``root/Training_set/bg``).
        size: side of the square crops, a multiple of 16.
        seed: seeds every sample's random draws with ``(seed, i)``.
        num_samples: use the first ``num_samples`` of the ``max(F, B)`` samples.
    """

    def __init__(self, root: str, bg_dir: str | None = None, size: int = 512, seed: int = 0,
                 num_samples: int | None = None):
        fg_dir = os.path.join(root, "Training_set", "fg")
        alpha_dir = os.path.join(root, "Training_set", "alpha")
        fgs, alphas = _images(fg_dir), _images(alpha_dir)
        for stem, path in fgs.items():
            if stem not in alphas:
                raise UsageError(f"{path}: no alpha matte {os.path.join(alpha_dir, stem)}.* for "
                                 "this foreground")
            if _size(path) != _size(alphas[stem]):
                raise UsageError(f"{path} is {_size(path)} but its alpha {alphas[stem]} is "
                                 f"{_size(alphas[stem])} (H, W): they must be the same size")
        for stem, path in alphas.items():
            if stem not in fgs:
                raise UsageError(f"{path}: no foreground {os.path.join(fg_dir, stem)}.* for this alpha")
        self.fg_paths = list(fgs.values())
        self.alpha_paths = [alphas[s] for s in fgs]
        self.bg_paths = list(_images(bg_dir or os.path.join(root, "Training_set", "bg")).values())
        self.size, self.seed = size, seed
        n = max(len(self.fg_paths), len(self.bg_paths))
        self.length = n if num_samples is None else min(n, num_samples)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        k = i % len(self.fg_paths)
        fg = torch.from_numpy(read_rgb(self.fg_paths[k])).permute(2, 0, 1).float() / 255
        alpha = torch.from_numpy(read_gray(self.alpha_paths[k], "alpha")).float()[None] / 255
        bg = torch.from_numpy(read_rgb(self.bg_paths[i % len(self.bg_paths)])).permute(2, 0, 1)
        bg = bg.float() / 255

        h, w = fg.shape[-2:]
        scale = rng.uniform(*COMPOSITES_SCALE)
        scale = max(scale, (self.size + 1) / min(h, w))  # crops must fit (A2U upscales too)
        hw = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        fg, alpha = _resize(fg, hw, "bilinear"), _resize(alpha, hw, "bilinear").clamp(0, 1)
        if rng.random() < 0.5:
            fg, alpha = fg.flip(-1), alpha.flip(-1)
        alpha8 = (alpha[0] * 255).round().to(torch.uint8).numpy()
        radii = rng.integers(TRAIN_TRIMAP_RADII[0], TRAIN_TRIMAP_RADII[1] + 1, size=2)
        trimap = trimap_from_alpha(alpha8, int(radii[0]), int(radii[1]))

        y, x = _crop_origin(rng, trimap, self.size)
        win = (slice(y, y + self.size), slice(x, x + self.size))
        ratio = max(hw[0] / bg.shape[1], hw[1] / bg.shape[2])
        if ratio > 1:
            bg = _resize(bg, (math.ceil(bg.shape[1] * ratio), math.ceil(bg.shape[2] * ratio)), "bicubic")
        fg, bg = fg[:, win[0], win[1]], bg[:, : hw[0], : hw[1]][:, win[0], win[1]].clamp(0, 1)
        alpha = torch.from_numpy(alpha8[win]).float()[None] / 255
        return {"image": composite(alpha, fg, bg), "fg": fg, "bg": bg, "alpha": alpha,
                "trimap": torch.from_numpy(np.ascontiguousarray(trimap[win]))[None], "index": i}


def _resize(t: torch.Tensor, hw: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    shrink = hw[0] < t.shape[-2]
    return F.interpolate(t[None], size=hw, mode=mode, align_corners=False, antialias=shrink)[0]


def _crop_origin(rng, trimap: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of a ``size`` crop centred (as far as the borders allow) on a random
    unknown pixel; anywhere if there is none."""
    h, w = trimap.shape
    ys, xs = np.nonzero(trimap == 128)
    if len(ys):
        k = rng.integers(len(ys))
        y, x = ys[k] - size // 2, xs[k] - size // 2
    else:
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return int(np.clip(y, 0, h - size)), int(np.clip(x, 0, w - size))


class CompositionTest(torch.utils.data.Dataset):
    """Composition-1k: ``Test_set/merged/<fg>_<k>.png`` with ``trimaps/<fg>_<k>.png`` and
    ``alpha/<fg>.png``, whole images. Items: ``"image"`` ``3 x H x W`` float32 in [0, 1],
    ``"alpha"`` ``1 x H x W`` float32 in [0, 1], ``"trimap"`` ``1 x H x W`` uint8, ``"index"``.

    Checked up front (``ValueError`` naming the file): a trimap or alpha missing, sizes that
    differ between image, trimap and alpha, trimap values other than 0 / 128 / 255, and a
    trimap without unknown (128) pixels, where the errors are undefined. A trimap that is
    unknown everywhere (Composition-1k's ``girl-1467820_1280_12.png``, see
    poppinace/indexnet_matting#3) gives a warning and the image is kept: the official MATLAB
    script evaluates all 1000 images, that one included.

    Args:
        root: the ``Combined_Dataset`` folder.
        num_samples: use the first ``num_samples`` images (sorted by name).
    """

    def __init__(self, root: str, num_samples: int | None = None):
        test = os.path.join(root, "Test_set")
        merged = _images(os.path.join(test, "merged"))
        alphas = _images(os.path.join(test, "alpha"))
        stems = list(merged)[:num_samples]
        self.items = []
        for stem in stems:
            image_path = merged[stem]
            trimap_path = os.path.join(test, "trimaps", stem + ".png")
            fg = stem.rsplit("_", 1)[0]
            if "_" not in stem or fg not in alphas:
                raise UsageError(f"{image_path}: no ground truth {os.path.join(test, 'alpha', fg)}.png "
                                 "(Composition-1k names images <fg>_<k>.png after alpha/<fg>.png)")
            if not os.path.isfile(trimap_path):
                raise UsageError(f"{image_path}: its trimap {trimap_path} is missing")
            sizes = {p: _size(p) for p in (image_path, trimap_path, alphas[fg])}
            if len(set(sizes.values())) > 1:
                raise UsageError("image, trimap and alpha differ in size (H, W): "
                                 + ", ".join(f"{p} {s}" for p, s in sizes.items()))
            _check_trimap(trimap_path, read_gray(trimap_path, "trimap"))
            self.items.append((image_path, alphas[fg], trimap_path))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image_path, alpha_path, trimap_path = self.items[i]
        image = torch.from_numpy(read_rgb(image_path)).permute(2, 0, 1).float() / 255
        alpha = torch.from_numpy(read_gray(alpha_path, "alpha")).float()[None] / 255
        trimap = torch.from_numpy(read_gray(trimap_path, "trimap"))[None]
        return {"image": image, "alpha": alpha, "trimap": trimap, "index": i}

    def name(self, i: int) -> str:
        return os.path.basename(self.items[i][0])


def _check_trimap(path: str, trimap: np.ndarray) -> None:
    values = np.unique(trimap)
    bad = [int(v) for v in values if v not in TRIMAP_VALUES]
    if bad:
        raise UsageError(f"{path}: trimap values must be 0, 128 or 255, found {bad[:8]}")
    if 128 not in values:
        raise UsageError(f"{path}: the trimap has no unknown (128) pixels, so the matting errors "
                         "are undefined for this image")
    if len(values) == 1:
        warnings.warn(f"{path}: the trimap is unknown (128) everywhere; the image is evaluated "
                      "like every other (as the official script does)", stacklevel=3)
