"""``sapa compare`` runs a task that is nothing like segmentation (``fake_task.py``: list
batches of mixed-size images, a custom collate, evaluation batch 1, a gathered median, a
lower-is-better primary metric): results, table, figures, resume, DDP and error handling."""
import os
import re

import fake_task
import pytest
import torch
from compare_cli import (
    evaluate_saved,
    parse,
    read_results,
    read_rows,
    run,
    run_killed_after_checkpoint,
    torchrun,
)

from sapa.errors import UsageError
from sapa.experiments import compare
from sapa.tasks import register_task


def test_fake_task_rows_table_and_figures(tmp_path, fake, one_thread):
    out = str(tmp_path / "o")
    assert run("--task", "fake", "--fake-scale", "2", "--out", out) == 0
    data = read_results(out)
    assert data["config"]["task"] == "fake" and data["config"]["fake_scale"] == 2.0
    assert data["config"]["eval_batch_size"] == 1 and data["config"]["data"] == "random"
    rows = data["rows"]
    assert [(r["upsampler"], r["seed"]) for r in rows] == [
        ("nearest", 0), ("nearest", 1), ("bilinear", 0), ("bilinear", 1)]
    for r in rows:
        assert r["task"] == "fake" and r["iters"] == 4
        assert isinstance(r["median_err"], float) and r["median_err"] > 0
        assert r["num_images"] == 7.0 and len(r["errors"]) == 7  # every image, once
        assert r["median_err"] == sorted(r["errors"])[3]
        assert r["params"] == 3 * 3 * 3 + 1 and r["flops"] > 0  # 3x3 conv 3 -> 1 with bias
        assert os.path.exists(os.path.join(out, r["checkpoint"]))
    ck = torch.load(os.path.join(out, rows[0]["checkpoint"]), weights_only=False)
    assert ck["curves"]["val_iters"] == [2, 4] and len(ck["curves"]["val_median_err"]) == 2

    md = open(os.path.join(out, "results.md")).read()
    assert md.startswith("# sapa compare --task fake")
    assert "| upsampler | seeds | median err. | mean err. | params | GFLOPs | train s / run |" in md
    assert "Per-image mean absolute error" in md
    # the best (lowest) mean of each column is bold, and only it
    bold = 0
    for col, scale, digits in (("median_err", 1, 4), ("mean_err", 1000, 1)):
        means = {u: round(sum(r[col] for r in rows if r["upsampler"] == u) / 2 * scale, digits)
                 for u in ("nearest", "bilinear")}
        for u, mean in means.items():
            line = next(x for x in md.splitlines() if x.startswith(f"| {u} |"))
            is_bold = f"**{mean:.{digits}f}** ±" in line
            assert is_bold == (mean == min(means.values())), (col, line)
            bold += is_bold
    assert md.count("**") == 2 * bold >= 4
    for name in ("curves.png", "fake.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000


def test_fake_task_resumes_where_it_was_killed(tmp_path, fake, monkeypatch, one_thread):
    ref, out = str(tmp_path / "ref"), str(tmp_path / "o")
    argv = ["--task", "fake", "--quick", "--no-figures"]
    assert run(*argv, "--out", ref) == 0
    run_killed_after_checkpoint(monkeypatch, [*argv, "--out", out], step=2)
    assert read_rows(out) == []
    assert run(*argv, "--out", out, "--resume") == 0
    [a], [b] = read_rows(ref), read_rows(out)
    for k in ("median_err", "mean_err", "errors", "params", "flops", "iters", "checkpoint"):
        assert a[k] == b[k], k
    ca, cb = (torch.load(os.path.join(d, a["checkpoint"]), weights_only=False) for d in (ref, out))
    assert ca["curves"] == {**cb["curves"]}


def test_fake_task_under_two_gloo_processes(tmp_path):
    """The meter gathers the per-image errors of both processes (7 images, 4 + 3): the DDP
    row equals the saved model evaluated in one process, exactly."""
    out = str(tmp_path / "ddp")
    proc = torchrun("--task", "fake", "--quick", "--device", "cpu", "--no-figures", "--out", out,
                    script=fake_task.__file__, timeout=240)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.count("sapa compare: done") == 1
    data = read_results(out)
    [row] = data["rows"]
    assert row["world_size"] == 2 and row["num_images"] == 7.0

    m = evaluate_saved(out, row, "nearest", task=fake_task.FakeTask(), batch_size=1)
    for k in ("median_err", "mean_err", "errors"):
        assert m[k] == row[k], k


def test_usage_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, fake, monkeypatch,
                                                                  capsys, one_thread):
    out = str(tmp_path / "o")
    assert run("--task", "fake", "--fake-scale", "-1", "--out", out) == 2
    assert capsys.readouterr().err == "sapa compare: error: --fake-scale must be > 0, got -1.0\n"

    def bad_file(config):
        raise UsageError("/data/list.txt, line 3: expected 3 fields, got 2")

    monkeypatch.setattr(fake, "build_datasets", bad_file)
    assert run("--task", "fake", "--quick", "--out", out) == 2
    err = capsys.readouterr().err
    assert err == "sapa compare: error: /data/list.txt, line 3: expected 3 fields, got 2\n"

    def bug(config):
        raise ValueError("a bug in the task")

    monkeypatch.setattr(fake, "build_datasets", bug)
    with pytest.raises(ValueError, match="a bug in the task"):
        run("--task", "fake", "--quick", "--out", str(tmp_path / "o2"))

    def bad_loss(model, batch):
        raise ZeroDivisionError("in the loss")

    monkeypatch.undo()
    register_task(fake)
    monkeypatch.setattr(fake, "loss", bad_loss)
    with pytest.raises(ZeroDivisionError):
        run("--task", "fake", "--quick", "--out", str(tmp_path / "o3"))


def test_task_options_and_presets_in_help(fake, capsys):
    with pytest.raises(SystemExit) as exc:
        parse("--task", "fake", "--help")
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--fake-scale" in text and "--widths" not in text  # the fake's group, not segmentation's
    assert re.search(r"--iters ITERS\s+training steps per run \(default: 4\)", text)
    s = compare.resolve(parse("--task", "fake"))
    assert s["upsamplers"] == ["nearest", "bilinear"] and s["seeds"] == [0, 1]
    assert s["config"]["lr"] == 1e-2 and s["train"].eval_batch_size == 1
    # segmentation's options belong to segmentation
    with pytest.raises(SystemExit):
        parse("--task", "fake", "--widths", "8,16")
