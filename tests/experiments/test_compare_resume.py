"""``--resume``: a comparison killed with SIGKILL in the middle of a run continues from the
run's checkpoint, keeps the finished runs untouched and ends where an uninterrupted
comparison ends; and ``--out`` is never silently overwritten or mixed with other settings."""
import json
import os
import signal

import fake_task
import torch
from compare_cli import kill_when_exists, read_results, read_rows, resume_and_rerun, run, with_out

# tiny runs: 32 x 32 images, three-stage SegNet, 16 training samples
TINY = ["--quick", "--image-size", "32", "--widths", "8,16,32", "--num-train", "16",
        "--num-val", "6", "--no-figures"]


def test_resume_after_sigkill(tmp_path, one_thread):
    out = str(tmp_path / "killed")
    argv = [*TINY, "--iters", "30", "--eval-every", "15", "--ckpt-every", "2", "--out", out,
            "--upsamplers", "bilinear", "sapa-b"]
    second = os.path.join(out, "runs", "sapa-b-seed0", "checkpoint.pt")
    # the first run is finished, the second under way
    assert kill_when_exists(argv, second, timeout=240) == -signal.SIGKILL

    # what the killed process left is whole: one finished row, a loadable checkpoint
    before = read_rows(out)
    assert [(r["upsampler"], r["seed"]) for r in before] == [("bilinear", 0)]
    ck = torch.load(second, weights_only=False)
    assert 2 <= ck["iter"] < 30 and "metrics" not in ck
    first_ckpt = os.path.join(out, before[0]["checkpoint"])
    first_mtime = os.stat(first_ckpt).st_mtime_ns

    ref = str(tmp_path / "uninterrupted")
    ref_argv = [a for a in with_out(argv, ref) if a != "bilinear"]
    after, [ref_row] = resume_and_rerun(argv, ref_argv)
    assert after[0] == before[0]  # the finished run is neither redone nor rewritten
    assert os.stat(first_ckpt).st_mtime_ns == first_mtime
    assert [(r["upsampler"], r["seed"]) for r in after] == [("bilinear", 0), ("sapa-b", 0)]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]

    # the resumed run ends exactly where an uninterrupted one does
    for k in ("miou", "biou", "acc", "iou_per_class", "params", "flops", "iters"):
        assert after[1][k] == ref_row[k], k


def test_out_is_not_overwritten_without_resume(tmp_path, capsys, one_thread):
    out = str(tmp_path / "o")
    argv = [*TINY, "--upsamplers", "bilinear", "--iters", "2", "--out", out]
    assert run(*argv) == 0
    rows = read_rows(out)
    assert run(*argv) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert read_rows(out) == rows


def test_resume_refuses_other_settings_and_adds_new_runs(tmp_path, capsys, one_thread):
    out = str(tmp_path / "o")
    base = [*TINY, "--iters", "2", "--out", out]
    assert run(*base, "--upsamplers", "bilinear") == 0
    first = read_rows(out)

    assert run(*TINY, "--iters", "3", "--out", out, "--resume") == 2
    err = capsys.readouterr().err
    assert "iters: 2 there, 3 now" in err
    assert read_rows(out) == first

    # other upsamplers / seeds are other runs, not other settings: only the new ones run
    assert run(*base, "--upsamplers", "bilinear,sapa-i", "--resume") == 0  # old syntax
    rows = read_rows(out)
    assert rows[0] == first[0]
    assert [(r["upsampler"], r["seed"]) for r in rows] == [("bilinear", 0), ("sapa-i", 0)]
    assert "1 run(s) to do, 1 finished" in capsys.readouterr().out


def test_resume_refuses_another_task(tmp_path, capsys, one_thread):
    out = str(tmp_path / "o")
    assert run(*TINY, "--iters", "1", "--upsamplers", "bilinear", "--out", out) == 0
    with fake_task.registered():
        assert run("--task", "fake", "--quick", "--out", out, "--resume") == 2
    assert "task: 'segmentation' there, 'fake' now" in capsys.readouterr().err

    # a comparison written before --task existed has no task in its configuration: segmentation
    data = read_results(out)
    del data["config"]["task"]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(data, f)
    argv = [*TINY, "--iters", "1", "--upsamplers", "bilinear", "--out", out, "--resume"]
    assert run(*argv) == 0
    assert "0 run(s) to do, 1 finished" in capsys.readouterr().out
