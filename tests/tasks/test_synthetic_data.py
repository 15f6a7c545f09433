"""The generated segmentation set: deterministic, split, well-formed; every generated set's
argument checks."""
import importlib

import numpy as np
import pytest
import torch

from sapa.tasks import photos
from sapa.tasks.segmentation import synthetic
from sapa.tasks.segmentation.synthetic import CLASS_NAMES, SyntheticSegmentation, generate


@pytest.fixture(scope="module")
def train16():
    return generate("train", 16, 32, seed=0)


def test_same_arguments_give_the_same_data(train16):
    images, labels = generate("train", 16, 32, seed=0)
    assert torch.equal(images, train16[0]) and torch.equal(labels, train16[1])


def test_sample_i_does_not_depend_on_how_many_are_drawn(train16):
    images, labels = generate("train", 5, 32, seed=0)
    assert torch.equal(images, train16[0][:5]) and torch.equal(labels, train16[1][:5])


def test_other_seed_and_other_split_give_other_data(train16):
    other_seed = generate("train", 4, 32, seed=1)
    val = generate("val", 4, 32, seed=0)
    for images, labels in (other_seed, val):
        assert not torch.equal(images, train16[0][:4])
        assert not torch.equal(labels, train16[1][:4])


def test_shapes_ranges_and_classes(train16):
    images, labels = train16
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (16, 32, 32) and labels.dtype == torch.uint8
    assert int(labels.max()) < len(CLASS_NAMES)
    counts = torch.bincount(labels.reshape(-1).long(), minlength=len(CLASS_NAMES))
    assert (counts > 0).all(), f"every class should occur in 16 samples, got {counts.tolist()}"
    # thin structures are thin: a small share of the pixels
    assert counts[synthetic.THIN] < 0.1 * labels.numel()
    # images are not flat: textures and ramps, not constant colours
    assert images.float().std() > 20


def test_train_and_val_come_from_disjoint_rows_of_each_photograph():
    img = np.arange(100)[:, None].repeat(3, 1)
    tr, va = photos.split_rows(img, "train"), photos.split_rows(img, "val")
    assert len(tr) + len(va) == 100 and set(tr[:, 0]).isdisjoint(va[:, 0])


def test_dataset_items_are_normalised_tensors():
    ds = SyntheticSegmentation("val", 3, 32, seed=0)
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32, 32) and y.dtype == torch.int64
    assert -3 < float(x.min()) and float(x.max()) < 3
    assert ds.raw_image(1).shape == (32, 32, 3) and ds.raw_image(1).dtype == np.uint8
    assert len(ds) == 3 and ds.num_classes == len(CLASS_NAMES)


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


@pytest.mark.parametrize("task, count_name, min_size", [
    ("segmentation", "num_samples", 16), ("depth", "num_samples", 16),
    ("matting", "num_samples", 16), ("detection", "num_images", 64)])
@pytest.mark.parametrize("which, value, match", [
    ("split", "test", r"split must be one of \['train', 'val'\]"),
    ("count", 0, "{count} must be an int >= 1"), ("count", 2.0, "{count} must be an int >= 1"),
    ("size", "min-1", "size must be an int >= {min_size}"), ("size", True, "size must be an int"),
    ("seed", -1, "seed must be an int >= 0")])
def test_every_generated_set_rejects_bad_arguments(task, count_name, min_size, which, value,
                                                   match):
    generate_set = importlib.import_module(f"sapa.tasks.{task}.synthetic").generate
    args = dict(split="train", count=1, size=min_size, seed=0)
    args[which] = min_size - 1 if value == "min-1" else value
    with pytest.raises(ValueError, match=match.format(count=count_name, min_size=min_size)):
        generate_set(args["split"], args["count"], args["size"], args["seed"])
