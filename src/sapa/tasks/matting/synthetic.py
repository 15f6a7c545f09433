"""A generated matting set: soft foregrounds composited over photographs (no download).

Each sample is made in four steps (all sizes relative to the image side ``S``):

1. **Alpha**, three layers combined back to front with the "over" operator:

   - a *semi-transparent region* (half of the samples): an ellipse of constant opacity
     0.25-0.75 with a slightly blurred edge (glass, veils);
   - a *body*: a star-shaped blob (random low-frequency radius), anti-aliased and blurred
     with a random sigma of 0-1.5 px (soft, defocused edges);
   - *strands*: 4-16 hair-like quadratic Bezier curves rooted on the body's outline and
     pointing outwards, drawn 2-4 px wide at 4x resolution and box-averaged down, so they are
     0.5-1 px wide, with an opacity of 0.35-1 each (the maximum where they cross).

2. **Colours**: the body is a random crop of a foreground photograph (``FG_PHOTOS``), the
   strands one colour per sample (a darkened or brightened tone of that crop), the
   semi-transparent region a random flat colour. ``F`` is the layers' premultiplied colour
   divided by ``alpha`` (the photograph where ``alpha = 0``).
3. **Background**: a random crop of another photograph (``BG_PHOTOS``); the image is
   ``I = alpha F + (1 - alpha) B``.
4. **Trimap** from the (uint8) alpha: the pixels with ``alpha = 255`` eroded by a disk of
   radius ``r_f`` are foreground (255), those with ``alpha = 0`` eroded by ``r_b`` background
   (0), the rest unknown (128), as Deep Image Matting / A2U make training trimaps. Training
   samples draw ``r_f, r_b`` from ``1 .. max(1, S // 12)``; validation ones use
   ``max(1, S // 24)`` for both.

Alpha, ``F`` and ``B`` are stored as uint8 (as the PNGs of a real set) and the training
image is composited from them on the fly in float; validation images are stored composited
and rounded to uint8 (as Composition-1k's ``merged`` PNGs). Training samples are cut from
the top ``1 - VAL_FRACTION`` (``sapa.tasks.photos``) of every photograph and validation
samples from the bottom part. Generation is deterministic given ``seed``; sample ``i`` does
not depend on how many are drawn.
"""
from __future__ import annotations

import numpy as np
import torch

from ..photos import SPLITS, check_generate_args, load_photo, random_crop, split_rows

FG_PHOTOS = ("astronaut", "coffee", "chelsea", "immunohistochemistry", "sklearn:flower.jpg")
BG_PHOTOS = ("rocket", "sklearn:china.jpg", "brick", "grass", "gravel", "camera", "hubble_deep_field")
SUPERSAMPLE = 4


def _crop(rng, names, size, split, zoom=(1.0, 3.0)) -> np.ndarray:
    src = split_rows(load_photo(names[rng.integers(len(names))]), split)
    return random_crop(rng, src, size, zoom=rng.uniform(*zoom))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64),
                       indexing="ij")


def _coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a smooth shape from the signed distance (in px, positive
    inside) of each pixel centre to its outline."""
    return np.clip(signed_distance + 0.5, 0, 1)


def _blob(rng, size: int) -> tuple[np.ndarray, tuple]:
    """Body alpha ``S x S`` in [0, 1] and its outline ``(cy, cx, radius(theta))``."""
    from scipy import ndimage

    cy, cx = rng.uniform(0.35, 0.65, size=2) * size
    r0 = rng.uniform(0.16, 0.3) * size
    ks = np.arange(2, 6)
    amp = rng.uniform(0, 0.3, size=len(ks)) / ks
    phase = rng.uniform(0, 2 * np.pi, size=len(ks))

    def radius(theta):
        theta = np.asarray(theta, dtype=np.float64)
        waves = np.cos(np.multiply.outer(ks, theta) + phase.reshape(-1, *[1] * theta.ndim))
        return r0 * (1 + np.tensordot(amp, waves, 1))

    yy, xx = _grid(size)
    alpha = _coverage(radius(np.arctan2(yy - cy, xx - cx)) - np.hypot(yy - cy, xx - cx))
    sigma = rng.uniform(0, 1.5)
    if sigma > 0.2:
        alpha = ndimage.gaussian_filter(alpha, sigma, mode="constant")
    return np.clip(alpha, 0, 1), (cy, cx, radius)


def _strands(rng, size: int, outline) -> np.ndarray:
    """Strand alpha ``S x S`` in [0, 1]: Bezier curves from the outline outwards, drawn at
    ``SUPERSAMPLE`` x the resolution (each with its opacity; the maximum where they cross)
    and box-averaged down."""
    from skimage.draw import bezier_curve

    cy, cx, radius = outline
    s = SUPERSAMPLE
    n = size * s
    canvas = np.zeros((n, n))
    for _ in range(rng.integers(4, 17)):
        theta = rng.uniform(0, 2 * np.pi)
        r = float(radius(theta)) * rng.uniform(0.8, 0.95)
        length = rng.uniform(0.12, 0.35) * size
        direction = theta + rng.uniform(-0.6, 0.6)
        bend = rng.uniform(-0.35, 0.35) * length
        p0 = np.array([cy + r * np.sin(theta), cx + r * np.cos(theta)])
        p2 = p0 + length * np.array([np.sin(direction), np.cos(direction)])
        p1 = (p0 + p2) / 2 + bend * np.array([np.cos(direction), -np.sin(direction)])
        pts = np.round((np.stack([p0, p1, p2]) + 0.5) * s - 0.5).astype(int)
        rr, cc = bezier_curve(*pts[0], *pts[1], *pts[2], weight=1.0, shape=(n, n))
        width, opacity = rng.integers(2, 5), rng.uniform(0.35, 1.0)
        for dy in range(width):  # a width x width brush
            for dx in range(width):
                y, x = rr + dy, cc + dx
                keep = (y < n) & (x < n)
                canvas[y[keep], x[keep]] = np.maximum(canvas[y[keep], x[keep]], opacity)
    return canvas.reshape(size, s, size, s).mean(axis=(1, 3))


def _veil(rng, size: int) -> np.ndarray:
    """A semi-transparent ellipse, alpha ``S x S`` (zero for half of the samples)."""
    from scipy import ndimage

    if rng.random() < 0.5:
        return np.zeros((size, size))
    cy, cx = rng.uniform(0.2, 0.8, size=2) * size
    ry, rx = rng.uniform(0.15, 0.35, size=2) * size
    yy, xx = _grid(size)
    rho = np.hypot((yy - cy) / ry, (xx - cx) / rx)
    a = _coverage((1 - rho) * min(ry, rx))  # near enough to the distance for the edge's AA
    a = ndimage.gaussian_filter(a, rng.uniform(0.3, 1.0))
    return np.clip(a, 0, 1) * rng.uniform(0.25, 0.75)


def trimap_from_alpha(alpha: np.ndarray, fg_radius: int, bg_radius: int) -> np.ndarray:
    """``H x W`` uint8 trimap (0 / 128 / 255) of a uint8 ``alpha``: ``alpha == 255`` eroded by
    a disk of ``fg_radius`` is 255, ``alpha == 0`` eroded by ``bg_radius`` is 0, the rest 128.
    The image border does not erode (as OpenCV's ``erode``)."""
    from scipy import ndimage
    from skimage.morphology import disk

    trimap = np.full(alpha.shape, 128, dtype=np.uint8)
    trimap[ndimage.binary_erosion(alpha == 255, disk(fg_radius), border_value=1)] = 255
    trimap[ndimage.binary_erosion(alpha == 0, disk(bg_radius), border_value=1)] = 0
    return trimap


def trimap_radii(rng, size: int, split: str) -> tuple[int, int]:
    if split == "train":
        return tuple(int(r) for r in rng.integers(1, max(1, size // 12) + 1, size=2))
    r = max(1, size // 24)
    return r, r


def make_sample(rng: np.random.Generator, size: int, split: str = "train") -> dict:
    """One sample: ``"fg"``, ``"bg"`` ``S x S x 3`` and ``"alpha"``, ``"trimap"`` ``S x S``,
    all uint8."""
    veil = _veil(rng, size)
    body, outline = _blob(rng, size)
    strands = _strands(rng, size, outline)
    texture = _crop(rng, FG_PHOTOS, size, split)
    tone = texture.reshape(-1, 3).mean(0) * rng.choice([rng.uniform(0.1, 0.5), rng.uniform(1.4, 2.5)])
    strand_rgb = np.clip(tone + rng.uniform(-0.08, 0.08, size=3), 0, 1)
    veil_rgb = rng.uniform(0, 1, size=3)

    # back to front, premultiplied: veil, body, strands
    a_v, a_b, a_s = veil[..., None], body[..., None], strands[..., None]
    premult = a_v * veil_rgb
    premult = a_b * texture + (1 - a_b) * premult
    premult = a_s * strand_rgb + (1 - a_s) * premult
    alpha = 1 - (1 - a_v) * (1 - a_b) * (1 - a_s)
    fg = np.where(alpha > 1e-6, premult / np.maximum(alpha, 1e-6), texture)
    bg = _crop(rng, BG_PHOTOS, size, split, zoom=(1.0, 2.5))

    alpha8 = np.round(alpha[..., 0] * 255).astype(np.uint8)
    return {"fg": np.round(np.clip(fg, 0, 1) * 255).astype(np.uint8),
            "bg": np.round(np.clip(bg, 0, 1) * 255).astype(np.uint8),
            "alpha": alpha8,
            "trimap": trimap_from_alpha(alpha8, *trimap_radii(rng, size, split))}


def composite(alpha: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """``alpha F + (1 - alpha) B`` (float, broadcast over the channel axis)."""
    return alpha * fg + (1 - alpha) * bg



def generate(split: str, num_samples: int, size: int = 64, seed: int = 0) -> dict:
    """``num_samples`` samples of ``split`` as uint8 tensors: ``"fg"``, ``"bg"``
    ``N x 3 x S x S``; ``"alpha"``, ``"trimap"`` ``N x 1 x S x S``. Deterministic; sample ``i``
    does not depend on ``num_samples``."""
    check_generate_args(split, num_samples, size, seed)
    children = np.random.SeedSequence([seed, SPLITS.index(split), 7]).spawn(num_samples)
    out = {"fg": np.empty((num_samples, 3, size, size), np.uint8),
           "bg": np.empty((num_samples, 3, size, size), np.uint8),
           "alpha": np.empty((num_samples, 1, size, size), np.uint8),
           "trimap": np.empty((num_samples, 1, size, size), np.uint8)}
    for i, ss in enumerate(children):
        s = make_sample(np.random.default_rng(ss), size, split)
        out["fg"][i], out["bg"][i] = s["fg"].transpose(2, 0, 1), s["bg"].transpose(2, 0, 1)
        out["alpha"][i, 0], out["trimap"][i, 0] = s["alpha"], s["trimap"]
    return {k: torch.from_numpy(v) for k, v in out.items()}


class SyntheticMatting(torch.utils.data.Dataset):
    """The generated set as a map-style data set of dicts (see ``sapa.tasks.matting.data``).

    Training items: ``"image"``, ``"fg"``, ``"bg"`` ``3 x S x S`` float32 in [0, 1] (the image
    composited from the others), ``"alpha"`` ``1 x S x S`` float32 in [0, 1], ``"trimap"``
    ``1 x S x S`` uint8 (0 / 128 / 255), ``"index"``. Validation items: ``"image"`` (the
    composite rounded to uint8, then in [0, 1]), ``"alpha"``, ``"trimap"``, ``"index"``.

    Args:
        split: ``"train"`` or ``"val"``.
        num_samples: how many samples (generated up front, in memory).
        size: ``S``, height and width.
        seed: base seed; train and val draw from different streams of it.
    """

    def __init__(self, split: str = "train", num_samples: int = 512, size: int = 64, seed: int = 0):
        self.split, self.size, self.seed = split, size, seed
        data = generate(split, num_samples, size, seed)
        self.alpha, self.trimap = data["alpha"], data["trimap"]
        if split == "train":
            self.fg, self.bg = data["fg"], data["bg"]
        else:  # stored as a real test set is: the composite as uint8
            alpha = self.alpha.float() / 255
            image = composite(alpha, data["fg"].float(), data["bg"].float())
            self.image = image.round().clamp(0, 255).to(torch.uint8)

    def __len__(self) -> int:
        return len(self.alpha)

    def __getitem__(self, i: int) -> dict:
        alpha = self.alpha[i].float() / 255
        item = {"alpha": alpha, "trimap": self.trimap[i], "index": i}
        if self.split == "train":
            fg, bg = self.fg[i].float() / 255, self.bg[i].float() / 255
            item.update(image=composite(alpha, fg, bg), fg=fg, bg=bg)
        else:
            item["image"] = self.image[i].float() / 255
        return item

    def name(self, i: int) -> str:
        return f"{self.split}-{i}"
