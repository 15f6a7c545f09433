"""The generated depth set: exact ray-cast depth, determinism, split, well-formed items."""
import math

import numpy as np
import pytest
import torch

from sapa.tasks.depth.render import Box, Camera, Plane, Sphere, cast
from sapa.tasks.depth.synthetic import MAX_DEPTH, MIN_DEPTH, SyntheticDepth, generate


def _camera(size=16, focal=10.0, height=1.0, pitch=0.0, yaw=0.0):
    return Camera((0.0, height, 0.0), pitch, yaw, focal, size, size)


def test_wall_facing_the_camera_is_at_constant_z_depth():
    cam = _camera()
    wall = Plane((0, 0, -1), -5.0, (1, 0, 0), (0, 1, 0))
    hit = cast(cam.position, cam.rays(), [wall])
    assert np.allclose(hit["t"], 5.0) and (hit["id"] == 0).all()
    # a camera turned by 0.3 rad sees it along its optical axis at z-depth 5 / cos(0.3)
    cam = _camera(yaw=0.3, pitch=0.0)
    axis = cam.rotation() @ np.array([0, 0, 1.0])
    assert axis == pytest.approx([-math.sin(0.3), 0, math.cos(0.3)])  # turned to the left
    assert cast(cam.position, axis[None], [wall])["t"][0] == pytest.approx(5.0 / math.cos(0.3))
    # pitched down, the optical axis points below the horizon
    assert (_camera(pitch=0.2).rotation() @ np.array([0, 0, 1.0]))[1] == pytest.approx(-math.sin(0.2))


def test_floor_depth_matches_the_pinhole_formula():
    cam = _camera(size=20, focal=10.0, height=1.5)
    floor = Plane((0, 1, 0), 0.0, (1, 0, 0), (0, 0, 1))
    t = cast(cam.position, cam.rays(), [floor])["t"]
    for row in range(10, 20):  # below the horizon: y_cam = (row + 0.5 - 10) / f
        assert t[row, 3] == pytest.approx(1.5 * 10.0 / (row + 0.5 - 10))
    assert np.isinf(t[:10]).all()  # above the horizon nothing is hit


def test_sphere_and_box_fronts():
    cam = _camera(size=2, focal=1e4, height=0.0)  # near-parallel rays around the axis
    sphere = Sphere((0.0, 0.0, 4.0), 1.0)
    box = Box((0.0, 0.0, 2.5), (0.5, 0.5, 0.5), 0.0)
    hit = cast(cam.position, cam.rays(), [sphere])
    assert np.allclose(hit["t"], 3.0, atol=1e-3)
    assert np.allclose(hit["normal"][..., 2], -1.0, atol=1e-3)
    hit = cast(cam.position, cam.rays(), [sphere, box])
    assert np.allclose(hit["t"], 2.0, atol=1e-6) and (hit["id"] == 1).all()
    assert np.allclose(hit["normal"], [0, 0, -1.0])
    # turned by 45 degrees the box shows an edge at distance 2.5 - 0.5 * sqrt(2)
    turned = Box((0.0, 0.0, 2.5), (0.5, 0.5, 0.5), math.pi / 4)
    t = cast(cam.position, cam.rays(), [turned])["t"]
    assert np.allclose(t, 2.5 - 0.5 * math.sqrt(2), atol=1e-3)


@pytest.fixture(scope="module")
def train8():
    return generate("train", 8, 32, seed=0)


def test_same_arguments_give_the_same_data_and_sample_i_is_stable(train8):
    images, depths = generate("train", 3, 32, seed=0)
    assert torch.equal(images, train8[0][:3]) and torch.equal(depths, train8[1][:3])


def test_other_seed_and_other_split_give_other_data(train8):
    for images, depths in (generate("train", 2, 32, seed=1), generate("val", 2, 32, seed=0)):
        assert not torch.equal(images, train8[0][:2])
        assert not torch.equal(depths, train8[1][:2])


def test_shapes_ranges_and_holes(train8):
    images, depths = train8
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert depths.shape == (8, 1, 32, 32) and depths.dtype == torch.float32
    valid = depths[depths > 0]
    assert MIN_DEPTH <= float(valid.min()) and float(valid.max()) < MAX_DEPTH
    holes = (depths == 0).float().mean()
    assert 0 < holes < 0.1  # a few holes, mostly valid
    assert float(valid.std()) > 0.5  # near and far things
    assert images.float().std() > 15  # textured, not flat


def test_dataset_items():
    ds = SyntheticDepth("val", 3, 32, seed=0)
    item = ds[1]
    assert set(item) == {"image", "depth", "index"} and item["index"] == 1
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -3 < float(item["image"].min()) and float(item["image"].max()) < 3
    assert item["depth"].shape == (1, 32, 32)
    assert torch.equal(item["depth"], ds.depths[1])
    assert ds.raw_image(1).shape == (32, 32, 3) and ds.raw_image(1).dtype == np.uint8
    assert len(ds) == 3 and ds.crop is None


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "test"}, "split"),
    ({"num_samples": 0}, "num_samples"),
    ({"size": 8}, "size"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments(kwargs, match):
    args = {"split": "train", "num_samples": 2, "size": 32, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(**args)
