"""NYU Depth V2 in BTS's layout: reading, preprocessing, and bad data named by file and line."""
import os

import numpy as np
import pytest
import torch
from nyu_layout import write_nyu_layout
from PIL import Image

from sapa.errors import UsageError
from sapa.tasks.depth.nyu import NYUDepthV2, crop_size, is_nyu_root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_nyu_layout(str(tmp_path_factory.mktemp("nyu")), num_train=4, num_test=3)


def test_reads_the_layout(root):
    assert is_nyu_root(root)
    train, test = NYUDepthV2(root, "train", 96), NYUDepthV2(root, "test", 96)
    assert len(train) == 4 and len(test) == 3
    item = test[0]
    assert set(item) == {"image", "depth", "index"} and item["index"] == 0
    # test: the input is the frame resized to 96 x 128, the ground truth stays at 120 x 160
    assert item["image"].shape == (3, 96, 128) and item["depth"].shape == (1, 120, 160)
    png = np.asarray(Image.open(test.samples[0]["depth"]), dtype=np.float32)
    assert torch.equal(item["depth"][0], torch.from_numpy(png / 1000.0))  # millimetres
    assert float(item["depth"].max()) < 5.1 and float(item["depth"].min()) == 0.0
    assert test.raw_image(0).shape == (96, 128, 3)
    assert test.samples[0]["focal"] == pytest.approx(518.8579)


def test_training_items_are_btss_random_crops(root):
    ds = NYUDepthV2(root, "train", 96)
    assert crop_size(96) == (64, 96) and crop_size(480) == (416, 544)
    torch.manual_seed(0)
    a = ds[1]
    assert a["image"].shape == (3, 64, 96) and a["depth"].shape == (1, 64, 96)
    torch.manual_seed(0)
    b = ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    c = [ds[1]["image"] for _ in range(4)]
    assert any(not torch.equal(a["image"], x) for x in c)  # random otherwise
    valid = a["depth"][a["depth"] > 0]
    assert 0.9 < float(valid.min()) and float(valid.max()) < 5.1


def test_lists_may_sit_in_train_test_inputs_and_limit_takes_evenly_spaced_entries(tmp_path):
    root = write_nyu_layout(str(tmp_path), num_train=2, num_test=5, lists_dir="train_test_inputs")
    ds = NYUDepthV2(root, "test", 64, limit=3)
    assert [s["line"] for s in ds.samples] == [1, 3, 5]


def _edit_list(root, split, edit):
    name = f"nyudepthv2_{split}_files_with_gt.txt"
    path = os.path.join(root, name)
    with open(path) as f:
        lines = f.read().splitlines()
    edit(lines)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return name


def test_a_line_with_the_wrong_number_of_fields(tmp_path):
    root = write_nyu_layout(str(tmp_path))
    name = _edit_list(root, "test", lambda lines: lines.__setitem__(1, lines[1].rsplit(" ", 1)[0]))
    with pytest.raises(UsageError, match=rf"{name} line 2: expected 3 fields"):
        NYUDepthV2(root, "test", 64)


def test_a_bad_focal_length(tmp_path):
    root = write_nyu_layout(str(tmp_path))
    name = _edit_list(root, "train", lambda lines: lines.__setitem__(2, lines[2].replace("518.8579", "f")))
    with pytest.raises(UsageError, match=rf"{name} line 3: the focal length"):
        NYUDepthV2(root, "train", 64)


def test_a_missing_file(tmp_path):
    root = write_nyu_layout(str(tmp_path))
    ds = NYUDepthV2(root, "train", 64)
    os.remove(ds.samples[3]["rgb"])
    with pytest.raises(UsageError, match=r"train_files_with_gt.txt line 4: the RGB image .*rgb_00003.jpg does not exist"):
        NYUDepthV2(root, "train", 64)


def test_a_depth_png_that_is_not_16_bit(tmp_path):
    root = write_nyu_layout(str(tmp_path))
    path = NYUDepthV2(root, "test", 64).samples[2]["depth"]
    Image.fromarray(np.zeros((120, 160), dtype=np.uint8)).save(path)
    with pytest.raises(UsageError, match=r"test_files_with_gt.txt line 3: the depth map .* must be a 16-bit PNG"):
        NYUDepthV2(root, "test", 64)


def test_image_and_depth_of_different_sizes(tmp_path):
    root = write_nyu_layout(str(tmp_path))
    path = NYUDepthV2(root, "test", 64).samples[0]["depth"]
    Image.fromarray(np.zeros((60, 80), dtype=np.uint16)).save(path)
    with pytest.raises(UsageError, match=r"line 1: .* is 160x120 but its depth map"):
        NYUDepthV2(root, "test", 64)


def test_frames_too_narrow_for_the_training_crop(tmp_path):
    root = write_nyu_layout(str(tmp_path), size=(160, 120))  # portrait: not NYU's 4:3
    with pytest.raises(UsageError, match="line 1: .* less than the training crop"):
        NYUDepthV2(root, "train", 96)


def test_bad_arguments(tmp_path, root):
    with pytest.raises(UsageError, match="no nyudepthv2_test_files_with_gt.txt"):
        NYUDepthV2(str(tmp_path), "test", 64)
    with pytest.raises(ValueError, match="height must be an int >= 64"):
        NYUDepthV2(root, "test", 32)
    with pytest.raises(ValueError, match="split"):
        NYUDepthV2(root, "val", 64)
    with pytest.raises(UsageError, match="is not a folder"):
        NYUDepthV2(str(tmp_path / "nope"), "test", 64)
