"""ADE20K and Pascal VOC folder readers, on tiny data sets written here."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sapa.errors import UsageError
from sapa.tasks.segmentation import FolderSegmentation, detect_layout


def _jpg(path, h, w, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _png(path, lab, palette=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(lab.astype(np.uint8))
    if palette:
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


@pytest.fixture
def ade(tmp_path):
    root = tmp_path / "ade" / "ADEChallengeData2016"
    for split, sub, n in (("train", "training", 3), ("val", "validation", 2)):
        for i in range(n):
            _jpg(str(root / "images" / sub / f"ADE_{sub}_{i}.jpg"), 40, 60, i)
            lab = np.zeros((40, 60), dtype=np.uint8)  # 0 = "other" -> ignored
            lab[:, 20:40] = 1
            lab[:, 40:] = 150
            _png(str(root / "annotations" / sub / f"ADE_{sub}_{i}.png"), lab)
    return tmp_path / "ade"


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    ids = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]}
    for split, names in ids.items():
        for i, name in enumerate(names):
            _jpg(str(root / "JPEGImages" / f"{name}.jpg"), 30, 50, i)
            lab = np.zeros((30, 50), dtype=np.uint8)
            lab[10:20, 10:40] = 15  # person
            lab[9, 10:40] = 255  # outline: ignored
            _png(str(root / "SegmentationClass" / f"{name}.png"), lab, palette=True)
        os.makedirs(root / "ImageSets" / "Segmentation", exist_ok=True)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return tmp_path / "voc"


def test_layouts_are_detected_from_the_root_or_its_parent(ade, voc, tmp_path):
    assert detect_layout(str(ade))[0] == "ade20k"
    assert detect_layout(str(ade / "ADEChallengeData2016"))[0] == "ade20k"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="ADE20K layout"):
        detect_layout(str(empty))
    with pytest.raises(ValueError, match="not a directory"):
        detect_layout(str(tmp_path / "missing"))


def test_voc_layout(voc):
    layout, root = detect_layout(str(voc))
    assert layout == "voc" and root.endswith(os.path.join("VOCdevkit", "VOC2012"))


def test_ade20k_labels_are_shifted_and_zero_is_ignored(ade):
    ds = FolderSegmentation(str(ade), "val", crop_size=32)
    assert len(ds) == 2 and ds.num_classes == 150 and ds.ignore_index == 255
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32, 32) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) == {255, 0, 149}


def test_voc_labels_keep_255_as_ignore(voc):
    ds = FolderSegmentation(str(voc), "val", crop_size=32)
    assert len(ds) == 1 and ds.num_classes == 21 and ds.class_names[15] == "person"
    _, y = ds[0]
    assert set(torch.unique(y).tolist()) <= {0, 15, 255} and (y == 15).any()
    assert ds.raw_image(0).shape == (32, 32, 3)


def test_training_samples_are_cropped_to_size_and_padded_with_ignore(voc):
    ds = FolderSegmentation(str(voc), "train", crop_size=64)  # larger than the 30 x 50 images
    seen_pad = False
    for i in range(10):
        x, y = ds[i % len(ds)]
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        seen_pad |= bool((y == 255).sum() > 30)
    assert seen_pad  # at scales below 64 / 30 the crop runs past the image


def test_max_samples_and_missing_files(ade, voc):
    assert len(FolderSegmentation(str(ade), "train", 32, max_samples=2)) == 2
    os.remove(voc / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000003.png")
    with pytest.raises(ValueError, match="2007_000003"):
        FolderSegmentation(str(voc), "val", 32)
    with pytest.raises(ValueError, match="split"):
        FolderSegmentation(str(ade), "test", 32)
    with pytest.raises(ValueError, match="crop_size"):
        FolderSegmentation(str(ade), "train", 8)


# ---- bad data is named before training, or when it is read (issue 16, item 3) ------------------

def _voc_root(voc):
    return voc / "VOCdevkit" / "VOC2012"


def test_out_of_range_voc_labels_name_the_file(voc):
    bad = _voc_root(voc) / "SegmentationClass" / "2007_000003.png"  # the val image
    lab = np.zeros((30, 50), dtype=np.uint8)
    lab[5:10, 5:10] = 253
    lab[0, 0] = 21
    _png(str(bad), lab, palette=True)
    with pytest.raises(UsageError, match=rf"{bad}: label values 21, 253 are not classes of the "
                                         r"Pascal VOC layout \(expected 0..20 or 255 \(ignored\)\)"):
        FolderSegmentation(str(voc), "val", 32)  # validation labels are checked up front


def test_out_of_range_training_labels_name_the_file_when_read(ade):
    bad = ade / "ADEChallengeData2016" / "annotations" / "training" / "ADE_training_1.png"
    lab = np.full((40, 60), 200, dtype=np.uint8)
    _png(str(bad), lab)
    ds = FolderSegmentation(str(ade), "train", 32)  # training labels: read with their sample
    ds[0]
    with pytest.raises(UsageError, match=rf"{bad}: label values 200 are not classes of the "
                                         r"ADE20K layout \(expected 0..150\)"):
        ds[1]


def test_a_validation_split_without_labelled_pixels_is_refused(voc):
    lab = np.full((30, 50), 255, dtype=np.uint8)
    _png(str(_voc_root(voc) / "SegmentationClass" / "2007_000003.png"), lab, palette=True)
    with pytest.raises(UsageError, match=r"every pixel of the 1 val label\(s\) under .* is ignored "
                                         r"\(255\): there is nothing to evaluate"):
        FolderSegmentation(str(voc), "val", 32)


def test_unreadable_and_mismatched_files_are_named_before_training(voc):
    root = _voc_root(voc)
    img = root / "JPEGImages" / "2007_000001.jpg"
    img.write_bytes(b"not a jpeg at all")
    with pytest.raises(UsageError, match=rf"{img}: cannot read this image \(cannot identify"):
        FolderSegmentation(str(voc), "train", 32)
    _jpg(str(img), 31, 50, 0)  # one row more than its label
    with pytest.raises(UsageError, match=rf"{img} is 50x31 \(width x height\) but its label "
                                         rf"{root / 'SegmentationClass' / '2007_000001.png'} is 50x30"):
        FolderSegmentation(str(voc), "train", 32)


def test_a_truncated_image_is_named_when_read(voc):
    img = _voc_root(voc) / "JPEGImages" / "2007_000002.jpg"
    _jpg(str(img), 30, 50, 1)
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])  # the header is intact: the check up front passes
    ds = FolderSegmentation(str(voc), "train", 32)
    with pytest.raises(UsageError, match=rf"{img}: cannot read this image \(image file is truncated"):
        ds[1]


def test_sapa_compare_names_a_bad_label_in_one_line(voc, tmp_path, capsys):
    from compare_cli import run

    lab = np.zeros((30, 50), dtype=np.uint8)
    lab[3, 3] = 253
    bad = _voc_root(voc) / "SegmentationClass" / "2007_000002.png"  # a training label
    _png(str(bad), lab, palette=True)
    argv = ["--data", str(voc), "--image-size", "32", "--widths", "4,8", "--iters", "3",
            "--batch-size", "2", "--upsamplers", "bilinear", "--seeds", "0", "--no-figures",
            "--out", str(tmp_path / "o")]
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sapa compare: error: {bad}: label values 253 are not classes")
    assert err.count("\n") == 1
    assert not (tmp_path / "o").exists()
