"""``sapa compare --task depth`` end to end: outputs and figures, NYU-layout data, ``--resume``
after SIGKILL, and two gloo processes under torchrun.

Every run is ``--quick`` shrunk further (32-pixel scenes, a 32-wide decoder, a few steps) to
keep the suite fast; ``-m slow`` runs the real ``--quick``.
"""
import math
import os

import pytest
import torch
from compare_cli import (
    evaluate_saved,
    kill_when_exists,
    read_results,
    read_rows,
    resume_and_rerun,
    run_cli,
    torchrun,
    with_out,
)
from nyu_layout import write_nyu_layout
from PIL import Image

from sapa.tasks.depth.metrics import METRICS

TINY = ["--task", "depth", "--quick", "--image-size", "32", "--bts-size", "32",
        "--num-train", "8", "--num-val", "5"]
TABLE = [c for c in METRICS if c != "silog"]


def test_quick_depth_comparison_writes_rows_table_and_figures(tmp_path):
    out = str(tmp_path / "quick")
    proc = run_cli(*TINY, "--iters", "3", "--eval-every", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = read_results(out)
    assert data["config"]["task"] == "depth" and data["config"]["data"] == "synthetic"
    rows = data["rows"]
    assert [(r["upsampler"], r["seed"]) for r in rows] == [("nearest", 0), ("sapa-b", 0)]
    for r in rows:
        assert r["task"] == "depth" and r["iters"] == 3 and r["num_images"] == 5
        for k in ("delta1", "delta2", "delta3"):
            assert 0 <= r[k] <= 1
        for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
            assert r[k] > 0 and math.isfinite(r[k])
        assert os.path.exists(os.path.join(out, r["checkpoint"]))
    assert rows[1]["params"] > rows[0]["params"] and rows[1]["flops"] > rows[0]["flops"]
    md = open(os.path.join(out, "results.md")).read()
    assert md.startswith("# sapa compare --task depth")
    assert "| δ<1.25 | δ<1.25² | δ<1.25³ | AbsRel | SqRel | RMS | RMSlog | log10 |" in md
    assert "| nearest | 1 |" in md and "| sapa-b | 1 |" in md
    for name in ("depth_predictions.png", "curves.png"):
        with Image.open(os.path.join(out, name)) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_nyu_layout_through_data(tmp_path):
    root = write_nyu_layout(str(tmp_path / "nyu"), num_train=4, num_test=3)
    out = str(tmp_path / "nyu-run")
    proc = run_cli("--task", "depth", "--quick", "--data", root, "--image-size", "64",
                   "--bts-size", "32", "--iters", "2", "--upsamplers", "sapa-b", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = read_results(out)
    assert data["config"]["data"] == os.path.abspath(root)
    assert data["config"]["num_train"] is None and data["config"]["num_val"] is None  # all
    [row] = data["rows"]
    assert row["num_images"] == 3 and 0 <= row["delta1"] <= 1 and row["rmse"] > 0
    assert os.path.exists(os.path.join(out, "depth_predictions.png"))


def test_bad_nyu_data_fails_before_training_naming_file_and_line(tmp_path):
    root = write_nyu_layout(str(tmp_path / "nyu"), num_train=3, num_test=2)
    os.remove(os.path.join(root, "sync", "kitchen_0000", "sync_depth_00001.png"))
    out = str(tmp_path / "bad")
    proc = run_cli("--task", "depth", "--quick", "--data", root, "--image-size", "64",
                   "--out", out)
    assert proc.returncode == 2
    assert ("nyudepthv2_train_files_with_gt.txt line 2: the depth map" in proc.stderr
            and "does not exist" in proc.stderr), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(out, "runs"))


def test_bad_option_is_a_one_line_error(tmp_path):
    proc = run_cli("--task", "depth", "--quick", "--bts-size", "40", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--bts-size must be a multiple of 16" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_after_sigkill_gives_the_uninterrupted_rows(tmp_path):
    out = str(tmp_path / "killed")
    argv = [*TINY, "--iters", "12", "--eval-every", "6", "--ckpt-every", "2", "--no-figures",
            "--out", out]
    second = os.path.join(out, "runs", "sapa-b-seed0", "checkpoint.pt")
    # the first run is finished, the second under way
    kill_when_exists(argv, second, timeout=240)
    before = read_rows(out)
    assert [(r["upsampler"], r["seed"]) for r in before] == [("nearest", 0)]
    assert 2 <= torch.load(second, weights_only=False)["iter"] < 12

    after, reference = resume_and_rerun(argv, with_out(argv, str(tmp_path / "uninterrupted")))
    assert after[0] == before[0]
    for got, want in zip(after, reference):
        for k in (*METRICS, "params", "flops", "iters", "num_images"):
            assert got[k] == want[k], (got["upsampler"], k)


def test_two_gloo_processes_give_the_single_process_metrics(tmp_path):
    out = str(tmp_path / "ddp")
    proc = torchrun(*TINY, "--upsamplers", "sapa-b", "--iters", "3", "--eval-every", "3",
                    "--num-val", "7", "--no-figures", "--device", "cpu", "--out", out,
                    timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.count("sapa compare: done") == 1
    [row] = read_rows(out)
    assert row["world_size"] == 2 and row["num_images"] == 7  # 4 + 3 images, gathered

    # the saved model evaluated in one process gives the same per-image-averaged metrics
    single = evaluate_saved(out, row, "sapa-b")
    for k in METRICS:
        # the same images, but batched 4 + 3 instead of 7: float32 convolutions may round the
        # last bits differently, nothing more
        assert single[k] == pytest.approx(row[k], rel=1e-5, abs=1e-7), k


@pytest.mark.slow
def test_real_quick_preset(tmp_path):
    out = str(tmp_path / "quick")
    proc = run_cli("--task", "depth", "--quick", "--out", out, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out)
    assert [(r["upsampler"], r["iters"], r["num_images"]) for r in rows] == [
        ("nearest", 100, 64), ("sapa-b", 100, 64)]
    # a constant depth map (the training mean) scores RMS 1.42 on these 64 validation scenes
    assert all(r["rmse"] < 1.3 for r in rows)
