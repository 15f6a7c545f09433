"""The Adobe Deep Image Matting / Composition-1k folders: reading, compositing, and clear errors
naming the file for bad data."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from sapa.tasks.matting.folders import AdobeTrain, CompositionTest, check_layout


def test_composition_test_set_reads_every_image_with_its_trimap_and_alpha(matting_layout):
    ds = CompositionTest(str(matting_layout))
    assert len(ds) == 4
    assert [ds.name(i) for i in range(4)] == ["cat-1_1920_0.png", "cat-1_1920_1.png", "hair_2_0.png", "hair_2_1.png"]
    item = ds[2]
    assert item["image"].shape == (3, 40, 40) and item["image"].dtype == torch.float32
    assert item["alpha"].shape == (1, 40, 40) and item["trimap"].shape == (1, 40, 40)
    assert item["trimap"].dtype == torch.uint8 and item["index"] == 2
    gt = np.array(Image.open(matting_layout / "Test_set/alpha/hair_2.png"))
    assert torch.equal((item["alpha"][0] * 255).round().to(torch.uint8), torch.from_numpy(gt))
    assert len(CompositionTest(str(matting_layout), num_samples=3)) == 3


def test_adobe_training_composites_are_deterministic_crops_with_unknown_pixels(matting_layout):
    ds = AdobeTrain(str(matting_layout), size=32, seed=0)
    assert len(ds) == 4  # max(3 foregrounds, 4 backgrounds)
    for i in range(len(ds)):
        item = ds[i]
        for k in ("image", "fg", "bg"):
            assert item[k].shape == (3, 32, 32) and 0 <= item[k].min() and item[k].max() <= 1
        assert item["alpha"].shape == item["trimap"].shape == (1, 32, 32)
        assert set(item["trimap"].unique().tolist()) <= {0, 128, 255}
        assert (item["trimap"] == 128).any()
        # I = alpha F + (1 - alpha) B
        a = item["alpha"]
        assert torch.allclose(item["image"], a * item["fg"] + (1 - a) * item["bg"])
        again = ds[i]
        assert all(torch.equal(item[k], again[k]) for k in ("image", "alpha", "trimap"))
    assert not torch.equal(AdobeTrain(str(matting_layout), size=32, seed=1)[0]["image"], ds[0]["image"])
    assert len(AdobeTrain(str(matting_layout), size=32, num_samples=2)) == 2


def test_rgb_alpha_reads_its_first_channel_as_the_matlab_script(matting_layout):
    path = matting_layout / "Test_set/alpha/hair_2.png"
    gt = np.array(Image.open(path))
    Image.fromarray(np.stack([gt, gt // 2, gt // 3], -1)).save(path)
    item = CompositionTest(str(matting_layout))[3]
    assert torch.equal((item["alpha"][0] * 255).round().to(torch.uint8), torch.from_numpy(gt))


def test_bg_dir_option_and_a_grey_background(matting_layout, tmp_path):
    bg = tmp_path / "bgs"
    bg.mkdir()
    Image.fromarray(np.full((20, 30), 200, np.uint8)).save(bg / "grey.png")  # small and grey
    ds = AdobeTrain(str(matting_layout), bg_dir=str(bg), size=48, seed=0)
    assert len(ds) == 3
    item = ds[1]
    assert torch.allclose(item["bg"], torch.full_like(item["bg"], 200 / 255), atol=2 / 255)


def test_layout_check_names_what_is_missing(tmp_path, matting_layout):
    check_layout(str(matting_layout))
    os.rename(matting_layout / "Test_set/merged", matting_layout / "Test_set/elsewhere")
    with pytest.raises(ValueError, match=r"not the Adobe Deep Image Matting layout.*missing: .*merged"):
        check_layout(str(matting_layout))


def test_missing_alpha_names_the_foreground(matting_layout):
    os.remove(matting_layout / "Training_set/alpha/fg1.jpg")
    with pytest.raises(ValueError, match=r"fg1\.jpg: no alpha matte"):
        AdobeTrain(str(matting_layout))


def test_training_size_mismatch_names_both_files(matting_layout):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(matting_layout / "Training_set/alpha/fg2.jpg")
    with pytest.raises(ValueError, match=r"fg2\.jpg is \(80, 80\) but its alpha .*fg2\.jpg is \(10, 10\)"):
        AdobeTrain(str(matting_layout))


def test_missing_test_alpha_or_trimap_names_the_image(matting_layout):
    os.remove(matting_layout / "Test_set/trimaps/hair_2_1.png")
    with pytest.raises(ValueError, match=r"hair_2_1\.png: its trimap .* is missing"):
        CompositionTest(str(matting_layout))
    os.remove(matting_layout / "Test_set/alpha/cat-1_1920.png")
    with pytest.raises(ValueError, match=r"cat-1_1920_0\.png: no ground truth .*cat-1_1920\.png"):
        CompositionTest(str(matting_layout))


def test_test_size_mismatch_names_the_files(matting_layout):
    Image.fromarray(np.full((41, 40), 128, np.uint8)).save(matting_layout / "Test_set/trimaps/hair_2_0.png")
    with pytest.raises(ValueError, match=r"differ in size.*hair_2_0\.png \(40, 40\).*hair_2_0\.png \(41, 40\)"):
        CompositionTest(str(matting_layout))


def test_trimap_without_unknown_pixels_or_with_other_values_is_an_error(matting_layout):
    path = matting_layout / "Test_set/trimaps/hair_2_0.png"
    Image.fromarray(np.where(np.eye(40, dtype=bool), 255, 0).astype(np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"hair_2_0\.png: the trimap has no unknown \(128\) pixels"):
        CompositionTest(str(matting_layout))
    Image.fromarray(np.full((40, 40), 100, np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"hair_2_0\.png: trimap values must be 0, 128 or 255, found \[100\]"):
        CompositionTest(str(matting_layout))


def test_all_grey_trimap_warns_and_is_kept(matting_layout):
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(matting_layout / "Test_set/trimaps/hair_2_1.png")
    with pytest.warns(UserWarning, match=r"hair_2_1\.png: the trimap is unknown \(128\) everywhere"):
        ds = CompositionTest(str(matting_layout))
    assert len(ds) == 4


def test_other_image_modes_are_refused_naming_the_file(matting_layout):
    Image.fromarray(np.zeros((48, 48, 4), np.uint8)).save(matting_layout / "Test_set/merged/cat-1_1920_0.png")
    ds = CompositionTest(str(matting_layout))
    with pytest.raises(ValueError, match=r"cat-1_1920_0\.png: expected an RGB \(or grey\) image, got mode RGBA"):
        ds[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CompositionTest(str(matting_layout), num_samples=1)  # no warning for ordinary trimaps
