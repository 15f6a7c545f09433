"""``sapa compare`` runs a task that is nothing like segmentation (``fake_task.py``: list
batches of mixed-size images, a custom collate, evaluation batch 1, a gathered median, a
lower-is-better primary metric): results, table, figures, resume, DDP and error handling."""
import json
import os
import re
import subprocess
import sys

import fake_task
import pytest
import torch

from sapa.errors import UsageError
from sapa.experiments import compare
from sapa.experiments import distributed as D
from sapa.experiments.trainer import evaluate
from sapa.tasks import register_task, unregister_task

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def fake():
    task = fake_task.FakeTask()
    register_task(task)
    yield task
    unregister_task(task.name)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _main(*argv):
    return compare.main(compare.parse_args(list(argv)))


def _data(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_fake_task_rows_table_and_figures(tmp_path, fake, one_thread):
    out = str(tmp_path / "o")
    assert _main("--task", "fake", "--fake-scale", "2", "--out", out) == 0
    data = _data(out)
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
    assert _main(*argv, "--out", ref) == 0

    class Killed(BaseException):
        pass

    save = compare.train_run.__globals__["atomic_torch_save"]

    def save_then_die(path, obj):
        save(path, obj)
        if obj["iter"] == 2 and "metrics" not in obj:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr("sapa.experiments.trainer.atomic_torch_save", save_then_die)
        with pytest.raises(Killed):
            _main(*argv, "--out", out)
    assert _data(out)["rows"] == []
    assert _main(*argv, "--out", out, "--resume") == 0
    [a], [b] = _data(ref)["rows"], _data(out)["rows"]
    for k in ("median_err", "mean_err", "errors", "params", "flops", "iters", "checkpoint"):
        assert a[k] == b[k], k
    ca, cb = (torch.load(os.path.join(d, a["checkpoint"]), weights_only=False) for d in (ref, out))
    assert ca["curves"] == {**cb["curves"]}


def test_fake_task_under_two_gloo_processes(tmp_path):
    """The meter gathers the per-image errors of both processes (7 images, 4 + 3): the DDP
    row equals the saved model evaluated in one process, exactly."""
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(HERE, "fake_task.py"), "compare", "--task", "fake", "--quick",
           "--device", "cpu", "--no-figures", "--out", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.count("sapa compare: done") == 1
    data = _data(out)
    [row] = data["rows"]
    assert row["world_size"] == 2 and row["num_images"] == 7.0

    task = fake_task.FakeTask()
    _, val_set = task.build_datasets(data["config"])
    model = task.build_model(data["config"], "nearest", None)
    model.load_state_dict(torch.load(os.path.join(out, row["checkpoint"]), weights_only=False)["model"])
    m = evaluate(task, model, val_set, data["config"], D.DistContext(), batch_size=1)
    for k in ("median_err", "mean_err", "errors"):
        assert m[k] == row[k], k


def test_usage_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, fake, monkeypatch,
                                                                  capsys, one_thread):
    out = str(tmp_path / "o")
    assert _main("--task", "fake", "--fake-scale", "-1", "--out", out) == 2
    assert capsys.readouterr().err == "sapa compare: error: --fake-scale must be > 0, got -1.0\n"

    def bad_file(config):
        raise UsageError("/data/list.txt, line 3: expected 3 fields, got 2")

    monkeypatch.setattr(fake, "build_datasets", bad_file)
    assert _main("--task", "fake", "--quick", "--out", out) == 2
    err = capsys.readouterr().err
    assert err == "sapa compare: error: /data/list.txt, line 3: expected 3 fields, got 2\n"

    def bug(config):
        raise ValueError("a bug in the task")

    monkeypatch.setattr(fake, "build_datasets", bug)
    with pytest.raises(ValueError, match="a bug in the task"):
        _main("--task", "fake", "--quick", "--out", str(tmp_path / "o2"))

    def bad_loss(model, batch):
        raise ZeroDivisionError("in the loss")

    monkeypatch.undo()
    register_task(fake)
    monkeypatch.setattr(fake, "loss", bad_loss)
    with pytest.raises(ZeroDivisionError):
        _main("--task", "fake", "--quick", "--out", str(tmp_path / "o3"))


def test_task_options_and_presets_in_help(fake, capsys):
    with pytest.raises(SystemExit) as exc:
        compare.parse_args(["--task", "fake", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--fake-scale" in text and "--widths" not in text  # the fake's group, not segmentation's
    assert re.search(r"--iters ITERS\s+training steps per run \(default: 4\)", text)
    s = compare.resolve(compare.parse_args(["--task", "fake"]))
    assert s["upsamplers"] == ["nearest", "bilinear"] and s["seeds"] == [0, 1]
    assert s["config"]["lr"] == 1e-2 and s["train"].eval_batch_size == 1
    # segmentation's options belong to segmentation
    with pytest.raises(SystemExit):
        compare.parse_args(["--task", "fake", "--widths", "8,16"])
