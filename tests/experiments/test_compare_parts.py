"""Parts of ``sapa compare``: atomic results, the summary table, the resumable batch stream,
the training loop's exact resumption, and argument checks before any work."""
import json
import math
import os

import pytest
import torch
from compare_cli import parse_options

from sapa.errors import UsageError
from sapa.experiments import compare, files, results, stats
from sapa.experiments import distributed as D
from sapa.experiments.trainer import StreamBatchSampler, TrainConfig, lr_factor, train_run
from sapa.models import SegNet
from sapa.tasks.base import Column
from sapa.tasks.segmentation import TASK as SEGMENTATION
from sapa.tasks.segmentation import SyntheticSegmentation

PCT = (Column("miou", "mIoU (%)", 100.0, 2), Column("biou", "boundary IoU (%)", 100.0, 2))


def test_atomic_write_leaves_the_old_file_on_failure_and_no_temporaries(tmp_path):
    path = str(tmp_path / "results.json")
    files.atomic_write_json(path, {"rows": [1]})
    with pytest.raises(TypeError):
        files.atomic_write_json(path, {"rows": [object()]})  # not serialisable
    with open(path) as f:
        assert json.load(f) == {"rows": [1]}
    assert os.listdir(tmp_path) == ["results.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # like any new file, not private


def test_load_results_rejects_other_json(tmp_path):
    path = tmp_path / "results.json"
    assert results.load_results(str(path)) is None
    path.write_text('{"table": []}')
    with pytest.raises(UsageError, match="rows"):
        results.load_results(str(path))
    path.write_text('{"rows": [\n  {"upsampler": "a",}\n]}')
    with pytest.raises(UsageError, match=r"results.json, line 2 column 21: not valid JSON"):
        results.load_results(str(path))


def _row(u, seed, miou, biou=0.1, train_s=10.0):
    return {"upsampler": u, "seed": seed, "miou": miou, "biou": biou, "acc": 0.5,
            "params": 1000, "flops": 2e9, "train_s": train_s}


def test_summary_mean_and_sample_std_over_seeds():
    rows = [_row("a", 0, 0.2), _row("b", 0, 0.5), _row("a", 1, 0.4), _row("a", 2, 0.6)]
    s = stats.summarize(rows, ["miou", "biou"], order=["b", "a"])["upsamplers"]
    assert list(s) == ["b", "a"]
    a = s["a"]["miou"]
    assert a["n"] == 3 and a["mean"] == pytest.approx(0.4)
    assert a["std"] == pytest.approx(0.2)  # sample std of 0.2, 0.4, 0.6
    assert s["b"]["miou"]["std"] == 0.0  # one seed
    table = results.markdown_table(rows, PCT, order=["a", "b"])
    assert table.splitlines()[0] == ("| upsampler | seeds | mIoU (%) | boundary IoU (%) | params "
                                     "| GFLOPs | train s / run |")
    assert "| a | 3 | 40.00 ± 20.00 | **10.00** ± 0.00 |" in table
    assert "| b | 1 | **50.00** ± 0.00 | **10.00** ± 0.00 |" in table  # a tie: both bold
    assert table.index("| a |") < table.index("| b |")
    assert "2.000" in table  # GFLOPs


def test_table_marks_the_best_mean_in_each_columns_direction_and_escapes_pipes():
    cols = (Column("err", "err", digits=1, lower_is_better=True), Column("acc", "acc", digits=1))
    rows = [{"upsampler": "x:a=1|2", "seed": 0, "err": 1.0, "acc": 0.5, "params": 1, "flops": 0, "train_s": 1},
            {"upsampler": "y", "seed": 0, "err": 2.0, "acc": 0.7, "params": 1, "flops": 0, "train_s": 1}]
    lines = results.markdown_table(rows, cols).splitlines()
    assert lines[2].startswith("| x:a=1\\|2 | 1 | **1.0** ± 0.0 | 0.5 ± 0.0 |")
    assert lines[3].startswith("| y | 1 | 2.0 ± 0.0 | **0.7** ± 0.0 |")
    one = results.markdown_table(rows[1:2], cols)
    assert "**" not in one  # nothing to compare with


def test_batch_stream_is_deterministic_resumable_and_split_across_ranks():
    full = list(StreamBatchSampler(10, 4, seed=3, start=0, stop=7))
    assert all(len(b) == 4 for b in full)
    # every epoch is a permutation: the first 20 positions cover 0..9 twice
    flat = [i for b in full for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert list(StreamBatchSampler(10, 4, seed=3, start=4, stop=7)) == full[4:]
    assert list(StreamBatchSampler(10, 4, seed=4, start=0, stop=7)) != full
    r0 = list(StreamBatchSampler(10, 4, seed=3, start=0, stop=7, rank=0, world_size=2))
    r1 = list(StreamBatchSampler(10, 4, seed=3, start=0, stop=7, rank=1, world_size=2))
    assert [a + b for a, b in zip(r0, r1)] == full
    with pytest.raises(ValueError, match="divisible"):
        StreamBatchSampler(10, 3, seed=0, start=0, stop=1, world_size=2)


def test_learning_rate_schedule():
    assert lr_factor(0, 100) == pytest.approx(0.2)  # warm-up over 5 steps
    assert lr_factor(4, 100) == pytest.approx(1.0)
    assert lr_factor(5, 100) == pytest.approx(1.0)
    assert lr_factor(99, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 94 / 95)))


def test_train_config_checks():
    with pytest.raises(UsageError, match="--iters"):
        TrainConfig(iters=0, batch_size=2)
    with pytest.raises(UsageError, match="--lr"):
        TrainConfig(iters=1, batch_size=2, lr=float("nan"))
    with pytest.raises(UsageError, match="--eval-batch-size"):
        TrainConfig(iters=1, batch_size=2, eval_batch_size=0)


def test_a_resumed_run_computes_what_the_uninterrupted_run_computes(tmp_path, monkeypatch,
                                                                     one_thread):
    train = SyntheticSegmentation("train", 8, 32, seed=0)
    val = SyntheticSegmentation("val", 4, 32, seed=0)
    cfg = TrainConfig(iters=6, batch_size=4, eval_every=3, ckpt_every=3)
    saved = []
    monkeypatch.setattr("sapa.experiments.trainer.atomic_torch_save",
                        lambda path, obj: saved.append(torch.load(_roundtrip(tmp_path, obj),
                                                                  weights_only=False)))

    def fresh():
        torch.manual_seed(0)
        return SegNet(7, "sapa-b", widths=(4, 8))

    kw = dict(seed=0, ckpt_path=str(tmp_path / "ck.pt"))
    full = train_run(SEGMENTATION, fresh(), train, val, {}, cfg, D.DistContext(), **kw)
    mid = saved[0]
    assert mid["iter"] == 3 and "metrics" not in mid
    resumed = train_run(SEGMENTATION, fresh(), train, val, {}, cfg, D.DistContext(),
                        checkpoint=mid, **kw)
    assert resumed["iter"] == full["iter"] == 6
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert resumed["curves"]["loss"] == full["curves"]["loss"]
    assert resumed["curves"]["val_iters"] == [3, 6]
    assert resumed["metrics"] == full["metrics"]


def _roundtrip(tmp_path, obj):
    path = tmp_path / "roundtrip.pt"
    torch.save(obj, path)  # a real save/load, as a checkpoint on disk
    return path


def test_presets_and_explicit_arguments():
    s = compare.resolve(parse_options(quick=True, iters=7))
    assert s["task"] is SEGMENTATION and s["config"]["task"] == "segmentation"
    assert s["upsamplers"] == ["bilinear", "sapa-b"] and s["seeds"] == [0]
    assert s["train"].iters == 7 and s["config"]["num_train"] == 256
    d = compare.resolve(parse_options())
    assert d["upsamplers"] == ["bilinear", "sapa-b", "sapa-g"] and d["baseline"] == "bilinear"
    assert d["seeds"] == [0, 1, 2, 3, 4] and d["config"]["widths"] == [16, 32, 64, 128]
    assert d["train"].iters == 500
    assert d["config"]["lr"] == 2e-3 and d["config"]["eval_batch_size"] == 16
    assert d["config"]["data"] == "synthetic" and d["config"]["image_size"] == 64


def test_upsamplers_are_space_separated_and_the_comma_list_still_works():
    new = compare.resolve(parse_options(upsamplers=["bilinear", "sapa-b", "carafe"]))
    old = compare.resolve(parse_options(upsamplers="bilinear,sapa-b,carafe"))
    assert new["upsamplers"] == old["upsamplers"] == ["bilinear", "sapa-b", "carafe"]


def test_folder_data_defaults(tmp_path):
    s = compare.resolve(parse_options(data=str(tmp_path)))
    assert s["config"]["data"] == str(tmp_path) and s["config"]["image_size"] == 256
    assert s["config"]["num_train"] is None and s["config"]["num_val"] is None
    s = compare.resolve(parse_options(data=str(tmp_path), image_size=128, num_val=5))
    assert s["config"]["image_size"] == 128 and s["config"]["num_val"] == 5


@pytest.mark.parametrize("kw, match", [
    ({"upsamplers": "bilinear,nope"}, "unknown upsampler .nope."),
    ({"upsamplers": "bilinear,bilinear"}, "twice"),
    ({"upsamplers": ["bilinear", "bilinear"]}, "twice"),
    ({"seeds": [0, 0]}, "distinct"),
    ({"image_size": 40}, "multiple of 16"),
    ({"widths": "8,x"}, "widths"),
    ({"data": "/no/such/folder"}, "existing folder"),
    ({"num_train": 0}, "num-train"),
    ({"iters": 0}, "--iters"),
    ({"lr": -1}, "--lr"),
    ({"threads": 0}, "--threads"),
    ({"baseline": "carafe"}, "--baseline 'carafe' is not one of --upsamplers"),
    ({"channels": 0}, "--channels"),
])
def test_bad_arguments_fail_before_any_work(kw, match, tmp_path, capsys):
    args = parse_options(out=str(tmp_path / "out"), **kw)
    with pytest.raises(UsageError, match=match):
        compare.resolve(args)
    assert compare.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sapa compare: error: ") and err.count("\n") == 1
    assert match.split()[0] in err
    assert not (tmp_path / "out").exists()


def test_a_bad_data_folder_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    (root / "ImageSets/Segmentation/train.txt").write_text("a\n\nb\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("a\n")
    for name in ("JPEGImages/a.jpg", "SegmentationClass/a.png"):
        (root / name).write_bytes(b"")
    out = tmp_path / "out"
    args = parse_options(data=str(root), out=str(out), image_size=32, no_figures=True)
    assert compare.main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"sapa compare: error: {root}/ImageSets/Segmentation/train.txt, line 3: lists "
                   f"'b' but {root}/JPEGImages/b.jpg does not exist\n")
