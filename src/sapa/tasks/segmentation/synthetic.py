"""A procedurally generated semantic-segmentation set built from photographs that ship inside
scikit-image and scikit-learn: no download, fixed seeds, a train/val split.

Each sample is made in three steps:

1. **Layout** from a real photograph: a random crop of one of ``LAYOUT_PHOTOS`` (random zoom
   and flips) is cut into superpixels with Felzenszwalb's graph segmentation, so region
   boundaries have the irregular shapes of real object contours.
2. **Classes**: every superpixel gets a class: the largest one is ``smooth`` half of the time,
   any other one with probability 0.1, the rest are one of the five textures. Zero to three
   thin curves (1-2 px wide) of the class ``thin`` are drawn on top.
3. **Appearance**: each texture class is rendered from its own photograph (``TEXTURES``): a
   random crop, scaled, with jittered contrast, brightness and channel gains; the grey ones
   (brick, grass, gravel) are tinted with their class's colour (``TINTS``). ``smooth`` regions
   are colour ramps in random colours; ``thin`` curves are flat near-black or near-white
   strokes.

So a class is recognised by its texture and colour over several pixels (which needs context,
i.e. the low-resolution decoder features) while its exact boundary, and the thin strokes, are
only visible at full resolution (the encoder features): the situation in which the paper says
the upsampler matters.

The split is spatial: training samples are cut from the top ``1 - VAL_FRACTION`` (``sapa.tasks.photos``) of every
source photograph and validation samples from the bottom part, so no source pixel is shared.
Generation is deterministic given ``seed`` (``numpy.random.SeedSequence``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..photos import MEAN, SPLITS, STD, check_generate_args, load_photo, random_crop, split_rows

CLASS_NAMES = ("smooth", "brick", "grass", "gravel", "cells", "stars", "thin")
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255
SMOOTH, THIN = 0, CLASS_NAMES.index("thin")
# textured class -> the scikit-image sample photograph it is cut from
TEXTURES = {
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
    "cells": "immunohistochemistry",
    "stars": "hubble_deep_field",
}
# colours of the grey textures (the others keep their photograph's colours)
TINTS = {"brick": (0.9, 0.45, 0.35), "grass": (0.45, 0.85, 0.35), "gravel": (0.55, 0.6, 0.9)}
LAYOUT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse",
                 "sklearn:china.jpg", "sklearn:flower.jpg")


def _layout(rng, size: int, split: str) -> np.ndarray:
    """``size x size`` int superpixel ids from a random crop of a real photograph."""
    from skimage.segmentation import felzenszwalb

    photo = split_rows(load_photo(LAYOUT_PHOTOS[rng.integers(len(LAYOUT_PHOTOS))]), split)
    crop = random_crop(rng, photo, size, zoom=rng.uniform(1.0, 3.0))
    scale = rng.uniform(0.5, 2.0) * size * size / 16
    return felzenszwalb(crop, scale=scale, sigma=0.5, min_size=max(4, size * size // 128))


def _assign_classes(rng, segments: np.ndarray) -> np.ndarray:
    ids, counts = np.unique(segments, return_counts=True)
    classes = rng.integers(1, THIN, size=ids.max() + 1)  # textures only
    if rng.random() < 0.5:
        classes[ids[np.argmax(counts)]] = SMOOTH
    classes[ids[rng.random(len(ids)) < 0.1]] = SMOOTH
    return classes[segments].astype(np.int64)


def _thin_curves(rng, size: int) -> np.ndarray:
    """Bool mask of 0-3 random Bezier strokes, 1 or 2 px wide."""
    from scipy import ndimage
    from skimage.draw import bezier_curve

    mask = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(0, 4)):
        r0, c0, r1, c1, r2, c2 = rng.integers(-size // 4, size + size // 4, size=6)
        rr, cc = bezier_curve(r0, c0, r1, c1, r2, c2, weight=rng.uniform(0.5, 3.0),
                              shape=(size, size))
        stroke = np.zeros_like(mask)
        stroke[rr, cc] = True
        if rng.random() < 0.5:
            stroke = ndimage.binary_dilation(stroke, structure=np.ones((2, 2), dtype=bool))
        mask |= stroke
    return mask


def _texture(rng, name: str, size: int, split: str) -> np.ndarray:
    src = split_rows(load_photo(TEXTURES[name]), split)
    tex = random_crop(rng, src, size, zoom=rng.uniform(0.75, 1.5))
    if name in TINTS:  # a grey texture: give it its class's colour
        tex = tex.mean(-1, keepdims=True) * np.asarray(TINTS[name], dtype=np.float32) / 0.8
    # jitter contrast, brightness and each channel's gain a little
    tex = (tex - tex.mean()) * rng.uniform(0.7, 1.3) + tex.mean() * rng.uniform(0.8, 1.2)
    return tex * rng.uniform(0.85, 1.15, size=3).astype(np.float32)


def _smooth(rng, size: int) -> np.ndarray:
    a, b = rng.uniform(0.1, 0.9, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) + 0.5
    t = np.clip(t, 0, 1)[..., None]
    return (1 - t) * a + t * b


def make_sample(rng: np.random.Generator, size: int, split: str = "train"):
    """One ``(image, label)``: ``size x size x 3`` float32 in [0, 1] and ``size x size`` int64."""
    label = _assign_classes(rng, _layout(rng, size, split))
    thin = _thin_curves(rng, size)
    label[thin] = THIN
    image = _smooth(rng, size)
    for c in np.unique(label):
        name = CLASS_NAMES[c]
        if name in TEXTURES:
            m = label == c
            image[m] = _texture(rng, name, size, split)[m]
    if thin.any():
        stroke = rng.choice([rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)])
        image[thin] = stroke + rng.uniform(-0.05, 0.05, size=3)
    return np.clip(image, 0, 1).astype(np.float32), label



def generate(split: str, num_samples: int, size: int = 64, seed: int = 0):
    """``num_samples`` samples of ``split``.

    Returns:
        ``(images, labels)``: ``N x 3 x size x size`` uint8 and ``N x size x size`` uint8
        (class indices, see ``CLASS_NAMES``). Deterministic for a given argument tuple; sample
        ``i`` does not depend on ``num_samples``.
    """
    check_generate_args(split, num_samples, size, seed)
    children = np.random.SeedSequence([seed, SPLITS.index(split)]).spawn(num_samples)
    images = np.empty((num_samples, 3, size, size), dtype=np.uint8)
    labels = np.empty((num_samples, size, size), dtype=np.uint8)
    for i, ss in enumerate(children):
        img, lab = make_sample(np.random.default_rng(ss), size, split)
        images[i] = np.round(img.transpose(2, 0, 1) * 255)
        labels[i] = lab
    return torch.from_numpy(images), torch.from_numpy(labels)


class SyntheticSegmentation(torch.utils.data.Dataset):
    """The generated set as a map-style data set of ``(image, label)``.

    ``image``: ``3 x size x size`` float32, normalised with ``MEAN`` / ``STD``;
    ``label``: ``size x size`` int64.

    Args:
        split: ``"train"`` or ``"val"``.
        num_samples: how many samples (all generated up front, in memory).
        size: height and width.
        seed: base seed; train and val draw from different streams of it.
    """

    class_names = CLASS_NAMES
    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(self, split: str = "train", num_samples: int = 512, size: int = 64, seed: int = 0):
        self.split, self.size, self.seed = split, size, seed
        self.images, self.labels = generate(split, num_samples, size, seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i].float().div_(255)
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return (img - mean) / std, self.labels[i].long()

    def raw_image(self, i) -> np.ndarray:
        """``size x size x 3`` uint8, for figures."""
        return self.images[i].permute(1, 2, 0).numpy()
