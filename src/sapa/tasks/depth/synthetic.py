"""A generated monocular-depth set: rendered rooms with exact depth, no download.

Each sample is a random room seen by a pinhole camera (``render.py``):

- **Room**: floor, ceiling, back and side walls; 3-8 m wide, back wall 4-8.5 m away, ceiling
  2.4-3 m high. **Camera**: 1.0-1.7 m above the floor, pitched 0-15 degrees down, turned up to
  10 degrees sideways, horizontal field of view 63 degrees (NYU's Kinect: f = 518.86 px at
  640 px).
- **Objects**: 2-6 boxes (0.3-1.5 m wide, 0.3-1.8 m tall, any turn about the vertical) on the
  floor and 0-3 spheres (radius 0.15-0.6 m) resting on it or floating, 1.5 m or more in
  front of the camera.
- **Depth**: the exact z-depth (metres along the optical axis, like NYU's maps) at every pixel
  centre, by ray casting. By construction every depth lies in [0.5, 10) m. A few elliptic
  **holes** (0-3, like a Kinect's missing returns) are set to 0 = invalid.
- **Appearance**: every surface is textured with a photograph that ships in scikit-image or
  scikit-learn (``sapa.tasks.photos``), mapped in metres along the surface (so textures
  shrink with distance and slant with the surface, the cues a depth network can learn),
  grey ones tinted; Lambertian shading from a point light below the ceiling plus ambient
  light; 2 x 2 supersampling for the colours.

The split is spatial, as for the generated segmentation set: training scenes are textured
from the top 75% of every photograph, validation scenes from the bottom 25%
(``photos.split_rows``), and the two splits draw their scenes from different seed streams.
Generation is deterministic given ``seed`` (``numpy.random.SeedSequence``); sample ``i`` does
not depend on how many are drawn.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..photos import MEAN, SPLITS, STD, check_generate_args, load_photo, split_rows
from .render import Box, Camera, Plane, Sphere, cast

# photographs for the room's surfaces and for the objects (grey ones get a random tint)
ROOM_PHOTOS = ("brick", "gravel", "grass", "page", "moon", "text", "coins")
OBJECT_PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry",
                 "camera", "hubble_deep_field", "sklearn:china.jpg", "sklearn:flower.jpg")
# horizontal field of view of NYU's Kinect colour camera: 2 atan(320 / 518.8579)
FOV = 2 * np.arctan(320 / 518.8579)
MIN_DEPTH, MAX_DEPTH = 0.5, 10.0
# 2 x 2 supersampling offsets (pixels) for the colours
_SUBPIXELS = ((-0.25, -0.25), (-0.25, 0.25), (0.25, -0.25), (0.25, 0.25))


def _room(rng):
    width, far, ceiling = rng.uniform(3, 8), rng.uniform(4, 8.5), rng.uniform(2.4, 3.0)
    half = width / 2
    surfaces = [
        Plane((0, 1, 0), 0.0, (1, 0, 0), (0, 0, 1)),  # floor
        Plane((0, -1, 0), -ceiling, (1, 0, 0), (0, 0, 1)),  # ceiling
        Plane((0, 0, -1), -far, (1, 0, 0), (0, 1, 0)),  # back wall
        Plane((1, 0, 0), -half, (0, 0, 1), (0, 1, 0)),  # left wall
        Plane((-1, 0, 0), -half, (0, 0, 1), (0, 1, 0)),  # right wall
    ]
    return surfaces, half, far, ceiling


def _objects(rng, half, far):
    out = []
    for _ in range(rng.integers(2, 7)):
        hx, hy, hz = rng.uniform(0.15, 0.75), rng.uniform(0.15, 0.9), rng.uniform(0.15, 0.75)
        x = rng.uniform(-half + 0.3, half - 0.3)
        z = rng.uniform(1.5 + max(hx, hz), max(far - 0.3, 1.6 + max(hx, hz)))
        out.append(Box((x, hy, z), (hx, hy, hz), rng.uniform(0, np.pi)))
    for _ in range(rng.integers(0, 4)):
        r = rng.uniform(0.15, 0.6)
        y = r if rng.random() < 0.5 else rng.uniform(r, 2.0)
        x = rng.uniform(-half + 0.3, half - 0.3)
        z = rng.uniform(1.5 + r, max(far - 0.3, 1.6 + r))
        out.append(Sphere((x, y, z), r))
    return out


def _camera(rng, half, size):
    focal = size / (2 * np.tan(FOV / 2))
    x = rng.uniform(-max(half - 1.0, 0.0), max(half - 1.0, 0.0))
    return Camera((x, rng.uniform(1.0, 1.7), 0.0), np.deg2rad(rng.uniform(0, 15)),
                  np.deg2rad(rng.uniform(-10, 10)), focal, size, size)


@functools.cache
def _is_grey(photo: str) -> bool:
    img = load_photo(photo)
    return bool(np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))


def _material(rng, photo: str, split: str, focal: float):
    """What a surface looks like: a photograph region, a scale (photo pixels per metre,
    tied to the camera's focal length so the texture's detail is resolution-independent), an
    offset and a colour gain."""
    img = split_rows(load_photo(photo), split)
    gain = rng.uniform(0.3, 1.0, size=3) if _is_grey(photo) else rng.uniform(0.8, 1.2, size=3)
    return {"img": img, "scale": rng.uniform(0.4, 1.0) * focal,
            "offset": rng.uniform(0, 1000, size=2), "gain": gain.astype(np.float32)}


def _shade(hit, materials, light, ambient) -> np.ndarray:
    from scipy import ndimage

    rgb = np.zeros(hit["t"].shape + (3,), dtype=np.float32)
    for i, m in enumerate(materials):
        sel = hit["id"] == i
        if not sel.any():
            continue
        coords = hit["uv"][sel] * m["scale"] + m["offset"]
        tex = np.stack([ndimage.map_coordinates(m["img"][..., c], [coords[:, 1], coords[:, 0]],
                                                order=1, mode="mirror") for c in range(3)], -1)
        to_light = light - hit["point"][sel]
        to_light /= np.linalg.norm(to_light, axis=-1, keepdims=True)
        lambert = np.clip(np.einsum("ni,ni->n", hit["normal"][sel], to_light), 0, 1)
        rgb[sel] = tex * m["gain"] * (ambient + (1 - ambient) * lambert)[:, None]
    return rgb


def _holes(rng, depth: np.ndarray) -> None:
    size = depth.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(0, 4)):
        cy, cx = rng.uniform(0, size, size=2)
        ry, rx = rng.uniform(0.02, 0.08, size=2) * size
        depth[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 0


def render_scene(rng: np.random.Generator, size: int, split: str = "train"):
    """One ``(image, depth)``: ``size x size x 3`` float32 in [0, 1] and ``size x size``
    float32 metres (0 where invalid)."""
    surfaces, half, far, _ = _room(rng)
    surfaces += _objects(rng, half, far)
    cam = _camera(rng, half, size)
    materials = [_material(rng, ROOM_PHOTOS[rng.integers(len(ROOM_PHOTOS))] if i < 5
                           else OBJECT_PHOTOS[rng.integers(len(OBJECT_PHOTOS))], split, cam.focal)
                 for i in range(len(surfaces))]
    light = np.array([rng.uniform(-half, half), 2.3, rng.uniform(0.5, far)])
    ambient = rng.uniform(0.3, 0.5)

    # one cast for the pixel centres (depth) and the 2 x 2 subpixels (colour)
    rays = np.stack([cam.rays(), *(cam.rays(s) for s in _SUBPIXELS)])
    hit = cast(cam.position, rays, surfaces)
    if not np.isfinite(hit["t"]).all():
        raise RuntimeError("a camera ray left the room (a bug in the scene sampler)")
    depth = hit["t"][0].astype(np.float32)
    if depth.min() < MIN_DEPTH or depth.max() >= MAX_DEPTH:
        raise RuntimeError(f"depth outside [{MIN_DEPTH}, {MAX_DEPTH}): {depth.min()}..{depth.max()}")
    sub = {k: v[1:] for k, v in hit.items()}
    image = _shade(sub, materials, light, ambient).mean(axis=0)
    _holes(rng, depth)
    return np.clip(image, 0, 1).astype(np.float32), depth



def generate(split: str, num_samples: int, size: int = 64, seed: int = 0):
    """``num_samples`` scenes of ``split``.

    Returns:
        ``(images, depths)``: ``N x 3 x size x size`` uint8 and ``N x 1 x size x size``
        float32 metres (0 = invalid). Deterministic for a given argument tuple; sample ``i``
        does not depend on ``num_samples``.
    """
    check_generate_args(split, num_samples, size, seed)
    children = np.random.SeedSequence([seed, SPLITS.index(split), 0xDE97]).spawn(num_samples)
    images = np.empty((num_samples, 3, size, size), dtype=np.uint8)
    depths = np.empty((num_samples, 1, size, size), dtype=np.float32)
    for i, ss in enumerate(children):
        img, depth = render_scene(np.random.default_rng(ss), size, split)
        images[i] = np.round(img.transpose(2, 0, 1) * 255)
        depths[i, 0] = depth
    return torch.from_numpy(images), torch.from_numpy(depths)


class SyntheticDepth(torch.utils.data.Dataset):
    """The generated set as a map-style data set of dicts:

    - ``"image"``: ``3 x size x size`` float32, normalised with ImageNet's ``MEAN`` / ``STD``;
    - ``"depth"``: ``1 x size x size`` float32 metres, 0 where invalid;
    - ``"index"``: the sample's index (the depth meter keys its per-image values by it).

    Args:
        split: ``"train"`` or ``"val"``.
        num_samples: how many scenes (all rendered up front, in memory).
        size: height and width.
        seed: base seed; train and val draw from different streams of it.
    """

    max_depth = MAX_DEPTH
    crop = None  # no Eigen crop: rendered frames have no registration border

    def __init__(self, split: str = "train", num_samples: int = 512, size: int = 64, seed: int = 0):
        self.split, self.size, self.seed = split, size, seed
        self.images, self.depths = generate(split, num_samples, size, seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        img = self.images[i].float().div_(255)
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return {"image": (img - mean) / std, "depth": self.depths[i].clone(), "index": i}

    def raw_image(self, i: int) -> np.ndarray:
        """``size x size x 3`` uint8, for figures."""
        return self.images[i].permute(1, 2, 0).numpy()
