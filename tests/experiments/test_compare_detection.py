"""``sapa compare --task detection`` end to end: the quick pipeline, ``--data`` in the COCO 2017
layout, and (slow) ``--resume`` after SIGKILL and 2-process DDP (gloo) against one process.
Their fast counterparts in the default run: the meter's simulated 2-process gather
(tests/tasks/test_detection_eval.py) and the harness's own resume tests."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from compare_cli import (
    evaluate_saved,
    kill_when_exists,
    read_results,
    read_rows,
    resume_and_rerun,
    run,
    torchrun,
    with_out,
)

from sapa.tasks.detection.evaluation import STATS
from sapa.tasks.detection.synthetic import write_coco_layout

# tiny runs: 64 px generated images, a few steps of batch 2
TINY = ["--task", "detection", "--quick", "--image-size", "64", "--num-train", "8",
        "--num-val", "4", "--batch-size", "2", "--eval-batch-size", "1", "--channels", "16"]


def test_quick_pipeline_writes_rows_table_and_figures(tmp_path, one_thread):
    out = str(tmp_path / "quick")
    argv = [*TINY, "--iters", "2", "--eval-every", "2", "--out", out]
    assert run(*argv) == 0
    data = read_results(out)
    assert data["config"]["task"] == "detection" and data["config"]["data"] == "synthetic"
    assert [(r["upsampler"], r["seed"]) for r in data["rows"]] == [("nearest", 0), ("sapa-b", 0)]
    for row in data["rows"]:
        assert row["task"] == "detection"
        for k in STATS:
            # None: undefined on these images (an area range without objects)
            assert row[k] is None or (isinstance(row[k], float) and 0 <= row[k] <= 1), k
        assert set(row["ap_per_category"]) == {"disc", "box", "triangle", "horse", "star"}
        assert row["params"] > 0 and row["flops"] > 0 and row["iters"] == 2
    # the upsampler is the only difference: SAPA-B adds its parameters
    assert data["rows"][1]["params"] > data["rows"][0]["params"]
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    for header in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "COCO box AP"):
        assert header in md, header
    for png in ("curves.png", "detections.png"):
        assert os.path.getsize(os.path.join(out, png)) > 10_000, png


def test_data_in_coco_layout(tmp_path, one_thread):
    root = write_coco_layout(str(tmp_path / "coco"), 6, 3, size=64, seed=5)
    # an image with a crowd region and one without any annotation, as in COCO
    path = os.path.join(root, "annotations", "instances_val2017.json")
    with open(path) as f:
        ann = json.load(f)
    ann["annotations"].append({"id": 999, "image_id": 1, "category_id": 5, "bbox": [0, 0, 30, 30],
                               "area": 900.0, "iscrowd": 1})
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] != 3]
    with open(path, "w") as f:
        json.dump(ann, f)
    out = str(tmp_path / "run")
    argv = ["--task", "detection", "--data", root, "--image-size", "64", "--iters", "2",
            "--eval-every", "2", "--batch-size", "2", "--channels", "16", "--seeds", "0",
            "--upsamplers", "sapa-b", "--no-figures", "--out", out]
    assert run(*argv) == 0
    data = read_results(out)
    assert data["config"]["data"] == root and data["config"]["num_val"] is None
    [row] = data["rows"]
    assert row["task"] == "detection" and all(k in row for k in STATS)

    # a broken layout is refused before any work, naming the file
    ann["annotations"].append({"id": 1000, "image_id": 2, "category_id": 77, "bbox": [1, 1, 5, 5]})
    with open(path, "w") as f:
        json.dump(ann, f)
    bad = str(tmp_path / "bad")
    assert run(*with_out(argv, bad)) == 2
    assert not os.path.exists(os.path.join(bad, "runs"))


@pytest.mark.slow  # ~35 s (2-core machine, load 4): a subprocess, resnet18 checkpoints every step
def test_resume_after_sigkill_gives_the_same_rows(tmp_path, one_thread):
    out = str(tmp_path / "killed")
    argv = [*TINY, "--iters", "8", "--eval-every", "4", "--ckpt-every", "1", "--no-figures",
            "--out", out]
    second = os.path.join(out, "runs", "sapa-b-seed0", "checkpoint.pt")
    # the first run is finished, the second under way
    assert kill_when_exists(argv, second, timeout=240) == -signal.SIGKILL
    before = read_rows(out)
    assert [r["upsampler"] for r in before] == ["nearest"]
    ck = torch.load(second, weights_only=False)
    assert 1 <= ck["iter"] < 8 and "metrics" not in ck

    ref = str(tmp_path / "uninterrupted")
    after, [ref_row] = resume_and_rerun(argv, [*with_out(argv, ref), "--upsamplers", "sapa-b"])
    assert after[0] == before[0]
    for k in (*STATS, "ap_per_category", "params", "flops", "iters"):
        assert after[1][k] == ref_row[k] or (after[1][k] != after[1][k] and ref_row[k] != ref_row[k]), k


@pytest.mark.slow  # ~26 s (load 4): two processes import torchvision and build Faster R-CNN
def test_two_cpu_processes_match_one(tmp_path):
    out = str(tmp_path / "ddp")
    proc = torchrun(*TINY, "--upsamplers", "sapa-b", "--iters", "2", "--eval-every", "2",
                    "--num-val", "5", "--no-figures", "--device", "cpu", "--out", out,
                    timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.count("sapa compare: done") == 1
    data = read_results(out)
    [row] = data["rows"]
    assert row["world_size"] == 2

    # 5 validation images split 3 + 2 over the ranks, detections gathered: the same metrics as
    # the saved model evaluated in one process
    m = evaluate_saved(out, row, "sapa-b", batch_size=1)
    for k in (*STATS, "ap_per_category"):
        # results.json writes an undefined (nan) metric as null
        assert m[k] == row[k] or (m[k] != m[k] and row[k] is None), (k, m[k], row[k])
