"""Photographs that ship inside scikit-image and scikit-learn: the raw material of the generated
data sets (segmentation textures and layouts, depth-scene textures, matting foregrounds and
backgrounds), with no download; and the ImageNet input normalisation.

A name is a ``skimage.data`` function (``"brick"``, ``"astronaut"``) or ``"sklearn:<file>"``
for ``sklearn.datasets.load_sample_image`` (``"sklearn:china.jpg"``). Generated sets split
their source photographs by rows (``split_rows``) so that no source pixel is shared between
training and validation.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

VAL_FRACTION = 0.25
SPLITS = ("train", "val")
# ImageNet statistics: the usual input normalisation (and what pretrained backbones expect)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def need_experiments_extra() -> ImportError:
    return ImportError("the generated data sets need scikit-image and scikit-learn: "
                       "pip install 'sapa[experiments]'")


def check_generate_args(split: str, count: int, size: int, seed: int, *,
                        count_name: str = "num_samples", min_size: int = 16) -> None:
    """The arguments every generated set's ``generate`` takes: ``split`` one of ``SPLITS``,
    ``count`` (called ``count_name``) an int >= 1, ``size`` an int >= ``min_size``, ``seed`` an
    int >= 0; ``ValueError`` naming the argument otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    for name, val, low in ((count_name, count, 1), ("size", size, min_size), ("seed", seed, 0)):
        if isinstance(val, bool) or not isinstance(val, int) or val < low:
            raise ValueError(f"{name} must be an int >= {low}, got {val!r}")


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """The photograph ``name`` as ``H x W x 3`` float32 in [0, 1] (grey ones as RGB).

    The array is cached and shared: do not write into it."""
    try:
        from skimage import color, data
        from sklearn.datasets import load_sample_image
    except ImportError as exc:
        raise need_experiments_extra() from exc
    img = load_sample_image(name.split(":", 1)[1]) if name.startswith("sklearn:") else getattr(data, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = color.gray2rgb(img)
    img = img[..., :3]
    return (img / 255.0 if img.dtype == np.uint8 else img).astype(np.float32)


def split_rows(img: np.ndarray, split: str, val_fraction: float = VAL_FRACTION) -> np.ndarray:
    """The top ``1 - val_fraction`` of ``img``'s rows for ``"train"``, the rest for ``"val"``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    cut = int(round(img.shape[0] * (1 - val_fraction)))
    return img[:cut] if split == "train" else img[cut:]


def random_crop(rng: np.random.Generator, img: np.ndarray, size: int, zoom: float) -> np.ndarray:
    """A ``size x size`` view of a ``zoom * size`` square crop of ``img`` (random flips),
    resized bilinearly (antialiased when shrinking): ``size x size x 3`` float32."""
    side = min(int(round(size * zoom)), img.shape[0], img.shape[1])
    y = rng.integers(0, img.shape[0] - side + 1)
    x = rng.integers(0, img.shape[1] - side + 1)
    crop = img[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)).permute(2, 0, 1)[None]
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear",
                                        align_corners=False, antialias=side > size)
    return t[0].permute(1, 2, 0).numpy()


def normalize(image: torch.Tensor) -> torch.Tensor:
    """``(image - MEAN) / STD`` over the channel axis of ``... x 3 x H x W`` values in [0, 1]."""
    mean = torch.tensor(MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - mean) / std
