"""A generated COCO-format detection set built from photographs that ship inside scikit-image
and scikit-learn: no download, fixed seeds, a train/val split, real COCO json.

Each ``size x size`` image is made in three steps:

1. **Background**: a random crop (zoom 1-2.5x, flips) of one of ``BACKGROUNDS`` (real
   photographs: people, animals, objects, landscapes), with 0-3 **distractors** on top:
   irregular blobs filled with the objects' textures but not annotated, so a texture alone
   does not make an object.
2. **Objects** (2-6 per image): each of ``CATEGORIES`` has its own silhouette (disc, box,
   triangle, the scikit-image horse, star: random aspect, rotation and flips) and its own
   texture (a crop of a scikit-image photograph, tinted, with jittered contrast, brightness and
   channel gains). Silhouette areas are drawn per **scale** with COCO's area thresholds in
   pixels (``SCALES``: small < 32², medium 32²-96², large > 96², at most one large object per
   image), so that AP_S, AP_M and AP_L all mean something at the default image size (160 px;
   a large object then covers much of the image, as large COCO objects do).
3. **Occlusion**: objects are pasted one after the other; a placement is kept only if every
   object stays at least ``MIN_VISIBLE`` visible (half of it; 80% for a large one, so that it
   stays large; the image border counts as an occluder), else it is retried elsewhere (and
   dropped after ``PLACEMENT_TRIES``).

Annotations are COCO's: ``bbox`` ``[x, y, w, h]`` and ``area`` of the *visible* mask
(``pycocotools.mask.toBbox`` / ``area``), its ``segmentation`` as compressed RLE,
``iscrowd = 0``; category ids are non-contiguous (``CATEGORIES``), as COCO's are. Training
images are cut from the top three quarters of every photograph and validation images from the
bottom quarter (``sapa.tasks.photos``). Generation is deterministic in ``seed``; image ``i``
does not depend on how many images are drawn.
"""
from __future__ import annotations

import numpy as np

from ..photos import SPLITS, check_generate_args, load_photo, random_crop, split_rows

# (COCO category id, name, silhouette, texture photograph, tint or None for the photo's colours)
CATEGORIES = (
    (2, "disc", "ellipse", "brick", (0.95, 0.45, 0.35)),
    (5, "box", "rectangle", "grass", (0.45, 0.9, 0.35)),
    (7, "triangle", "triangle", "gravel", (0.5, 0.6, 1.0)),
    (13, "horse", "horse", "immunohistochemistry", None),
    (21, "star", "star", "coins", (1.0, 0.85, 0.3)),
)
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field",
               "sklearn:china.jpg", "sklearn:flower.jpg")
# visible-area ranges in pixels per COCO scale (COCO: small < 32^2 <= medium < 96^2 <= large)
SCALES = {"small": (80, 900), "medium": (1200, 8000), "large": (12000, 22000)}
SCALE_P = {"small": 0.5, "medium": 0.3, "large": 0.2}
OBJECTS_PER_IMAGE = (2, 6)
# the least visible share of an object (a large one must stay large)
MIN_VISIBLE = {"small": 0.5, "medium": 0.5, "large": 0.8}
PLACEMENT_TRIES = 20
MAX_SIDE = 0.95  # of the image side


def _need_pycocotools() -> ImportError:
    return ImportError("the detection task needs pycocotools: pip install 'sapa[detection]'")


def _regular_polygon(n: int, radii) -> np.ndarray:
    """``n x 2`` (row, col) vertices of a polygon around 0 with alternating ``radii``."""
    angles = 2 * np.pi * np.arange(n) / n
    r = np.resize(np.asarray(radii, dtype=float), n)
    return np.stack([-r * np.cos(angles), r * np.sin(angles)], axis=1)


def _unit_polygon(rng, shape: str) -> np.ndarray:
    """Vertices of one random instance of ``shape`` (any scale)."""
    if shape == "ellipse":
        pts = _regular_polygon(48, 1.0)
        pts[:, 0] *= rng.uniform(0.6, 1.0)
    elif shape == "rectangle":
        h = rng.uniform(0.5, 1.0)
        pts = np.array([[-h, -1.0], [-h, 1.0], [h, 1.0], [h, -1.0]])
    elif shape == "triangle":
        apex = rng.uniform(-0.6, 0.6)
        pts = np.array([[-1.0, apex], [1.0, 1.0], [1.0, -1.0]]) * [rng.uniform(0.7, 1.0), 1.0]
    elif shape == "star":
        pts = _regular_polygon(10, (1.0, rng.uniform(0.42, 0.55)))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    a = rng.uniform(-np.pi / 6, np.pi / 6) if shape == "rectangle" else rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T


def _polygon_area(pts: np.ndarray) -> float:
    r, c = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(r, np.roll(c, 1)) - np.dot(c, np.roll(r, 1))))


def _horse_mask() -> np.ndarray:
    """The scikit-image horse silhouette, cropped to its bounding box (bool)."""
    horse = ~np.asarray(load_photo("horse")[..., 0] > 0.5)
    rows, cols = np.nonzero(horse)
    return horse[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _silhouette(rng, shape: str, area: float, max_side: int) -> np.ndarray:
    """A bool mask of ``shape`` whose area is about ``area`` px (less if it would not fit in
    ``max_side``), cropped to its bounding box."""
    from skimage.draw import polygon
    from skimage.transform import resize

    if shape == "horse":
        base = _horse_mask()
        if rng.random() < 0.5:
            base = base[:, ::-1]
        aspect = base.shape[0] / base.shape[1] * rng.uniform(0.8, 1.25)
        fill = float(base.mean())
        w = np.sqrt(area / (fill * aspect))
        h = aspect * w
        s = min(1.0, max_side / max(h, w))
        h, w = max(2, int(round(h * s))), max(2, int(round(w * s)))
        return resize(base.astype(np.float32), (h, w), order=1, anti_aliasing=True) > 0.5
    pts = _unit_polygon(rng, shape)
    scale = np.sqrt(area / _polygon_area(pts))
    extent = (pts.max(0) - pts.min(0)).max()
    scale = min(scale, max_side / extent)
    pts = (pts - pts.min(0)) * scale
    h, w = int(np.ceil(pts[:, 0].max())) + 1, int(np.ceil(pts[:, 1].max())) + 1
    mask = np.zeros((h, w), dtype=bool)
    rr, cc = polygon(pts[:, 0], pts[:, 1], shape=(h, w))
    mask[rr, cc] = True
    rows, cols = np.nonzero(mask)
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _texture(rng, name: str, tint, size: int, split: str) -> np.ndarray:
    """``size x size x 3`` crop of photograph ``name`` (tinted grey when ``tint`` is given),
    with jittered contrast, brightness and channel gains."""
    tex = random_crop(rng, split_rows(load_photo(name), split), size, zoom=rng.uniform(0.75, 1.5))
    if tint is not None:
        tex = tex.mean(-1, keepdims=True) * np.asarray(tint, dtype=np.float32) / 0.7
    tex = (tex - tex.mean()) * rng.uniform(0.7, 1.3) + tex.mean() * rng.uniform(0.85, 1.15)
    return tex * rng.uniform(0.9, 1.1, size=3).astype(np.float32)


def _blob(rng, size: int) -> np.ndarray:
    """An irregular star-convex distractor blob (bool ``size x size`` mask)."""
    from skimage.draw import polygon

    n = int(rng.integers(7, 13))
    radii = rng.uniform(0.35, 1.0, size=n) * rng.uniform(0.08, 0.3) * size
    angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
    cy, cx = rng.uniform(0, size, size=2)
    rr, cc = polygon(cy + radii * np.cos(angles), cx + radii * np.sin(angles), shape=(size, size))
    mask = np.zeros((size, size), dtype=bool)
    mask[rr, cc] = True
    return mask


def _scale_names(rng) -> list[str]:
    n = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    names = list(SCALE_P)
    scales = list(rng.choice(names, size=n, p=[SCALE_P[k] for k in names]))
    while scales.count("large") > 1:
        scales[scales.index("large")] = "medium"
    # the large object goes first: smaller ones may then sit in front of it
    return sorted(scales, key=lambda s: names.index(s), reverse=True)


def make_image(rng: np.random.Generator, size: int, split: str = "train"):
    """One image and its objects.

    Returns:
        ``(image, objects)``: ``size x size x 3`` float32 in [0, 1]; a list of
        ``(category index into CATEGORIES, visible bool mask size x size)``.
    """
    background = load_photo(BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    image = random_crop(rng, split_rows(background, split), size, zoom=rng.uniform(1.0, 2.5))
    for _ in range(int(rng.integers(0, 4))):  # distractors: textures without a silhouette
        _, _, _, tex, tint = CATEGORIES[rng.integers(len(CATEGORIES))]
        m = _blob(rng, size)
        rows, cols = np.nonzero(m)
        if len(rows) == 0:
            continue
        y0, x0, y1, x1 = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
        patch = _texture(rng, tex, tint, max(y1 - y0, x1 - x0), split)[: y1 - y0, : x1 - x0]
        image[y0:y1, x0:x1][m[y0:y1, x0:x1]] = patch[m[y0:y1, x0:x1]]
    owner = np.full((size, size), -1, dtype=np.int64)  # which object each pixel shows
    full_area: list[int] = []
    min_visible: list[float] = []
    cats: list[int] = []
    for scale in _scale_names(rng):
        c = int(rng.integers(len(CATEGORIES)))
        _, _, shape, tex, tint = CATEGORIES[c]
        mask = _silhouette(rng, shape, rng.uniform(*SCALES[scale]), int(MAX_SIDE * size))
        h, w = mask.shape
        k = len(full_area)
        out = 10 if scale == "large" else 4  # up to 1/out of its side may lie outside
        for _ in range(PLACEMENT_TRIES):
            y = int(rng.integers(-(h // out), size - h + h // out + 1))
            x = int(rng.integers(-(w // out), size - w + w // out + 1))
            y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, size), min(x + w, size)
            if y1 <= y0 or x1 <= x0:
                continue
            placed = np.zeros((size, size), dtype=bool)
            placed[y0:y1, x0:x1] = mask[y0 - y : y1 - y, x0 - x : x1 - x]
            trial = np.where(placed, k, owner)
            visible = np.bincount(trial[trial >= 0], minlength=k + 1)
            need = zip([*full_area, int(mask.sum())], [*min_visible, MIN_VISIBLE[scale]])
            if all(visible[j] >= v * a for j, (a, v) in enumerate(need)):
                break
        else:
            continue  # no room for it: drop this object
        owner = trial
        full_area.append(int(mask.sum()))
        min_visible.append(MIN_VISIBLE[scale])
        cats.append(c)
        patch = _texture(rng, tex, tint, max(y1 - y0, x1 - x0), split)[: y1 - y0, : x1 - x0]
        image[y0:y1, x0:x1][placed[y0:y1, x0:x1]] = patch[placed[y0:y1, x0:x1]]
    objects = [(c, owner == k) for k, c in enumerate(cats)]
    return np.clip(image, 0, 1).astype(np.float32), objects



def categories() -> list[dict]:
    """COCO ``categories`` of the generated set (non-contiguous ids)."""
    return [{"id": cid, "name": name, "supercategory": "shape"} for cid, name, *_ in CATEGORIES]


def generate(split: str, num_images: int, size: int = 160, seed: int = 0):
    """``num_images`` images of ``split`` and their COCO annotations.

    Returns:
        ``(coco, images)``: a COCO instances dict (``images``, ``annotations``,
        ``categories``; image ``i`` has id ``i + 1`` and file name ``f"{i + 1:012d}.png"``)
        and ``images``, ``num_images x size x size x 3`` uint8. Deterministic for a given
        argument tuple; image ``i`` does not depend on ``num_images``.
    """
    check_generate_args(split, num_images, size, seed, count_name="num_images", min_size=64)
    try:
        from pycocotools import mask as mask_utils
    except ImportError as exc:
        raise _need_pycocotools() from exc
    children = np.random.SeedSequence([seed, SPLITS.index(split), 7]).spawn(num_images)
    pixels = np.empty((num_images, size, size, 3), dtype=np.uint8)
    coco_images, annotations = [], []
    for i, ss in enumerate(children):
        img, objects = make_image(np.random.default_rng(ss), size, split)
        pixels[i] = np.round(img * 255)
        image_id = i + 1
        coco_images.append({"id": image_id, "file_name": f"{image_id:012d}.png",
                            "height": size, "width": size})
        for c, mask in objects:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": CATEGORIES[c][0], "bbox": bbox,
                "area": float(mask_utils.area(rle)), "iscrowd": 0,
                "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")},
            })
    coco = {
        "info": {"description": f"sapa generated detection set ({split}, {size} px, seed {seed})"},
        "licenses": [],
        "images": coco_images,
        "annotations": annotations,
        "categories": categories(),
    }
    return coco, pixels


def write_coco_layout(root: str, num_train: int, num_val: int, size: int = 160,
                      seed: int = 0) -> str:
    """Write the generated set to ``root`` in the COCO 2017 layout (``train2017/``,
    ``val2017/`` PNGs and ``annotations/instances_{train,val}2017.json``), the layout
    ``sapa compare --task detection --data`` reads; returns ``root``."""
    import json
    import os

    from PIL import Image

    for split, n in (("train", num_train), ("val", num_val)):
        coco, pixels = generate(split, n, size, seed)
        folder = os.path.join(root, f"{split}2017")
        os.makedirs(folder, exist_ok=True)
        for img, px in zip(coco["images"], pixels):
            Image.fromarray(px).save(os.path.join(folder, img["file_name"]))
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        with open(os.path.join(root, "annotations", f"instances_{split}2017.json"), "w") as f:
            json.dump(coco, f)
    return root
