"""``sapa compare`` under hostile use (issue 16, items 4-6): one process per ``--out`` (a lock);
a failed start that blocks nothing; and user mistakes that end with one line naming the
argument or the file (exit 2) while bugs keep their traceback: a bad ``--out``, ``--device
cuda`` without a GPU, a full disk, unreadable checkpoints, hand-edited rows, Ctrl-C (exit 130
and how to resume), errors raised in data-loader workers, nothing to evaluate, a diverged loss.

Most tests use the fake task (``fake_task.py``: a few milliseconds per run)."""
import io
import json
import os
import resource
import signal
import subprocess
import sys

import fake_task
import pytest
import torch
from compare_cli import (
    one_thread_env,
    read_rows,
    run,
    run_cli,
    run_killed_after_checkpoint,
    start_cli,
    wait_for_file,
)

from sapa.errors import UsageError
from sapa.experiments import files

FAKE = ["--task", "fake", "--quick", "--no-figures"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("sapa compare: error: ") and err.count("\n") == 1, err
    return err


# ---- item 5: one process per --out --------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from sapa.experiments.files import OutLock
lock = OutLock(sys.argv[1])
lock.acquire("a sapa compare holding the lock")
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_process_on_the_same_out_is_refused_and_a_stale_lock_is_taken_over(
        tmp_path, fake, capsys):
    out = str(tmp_path / "o")
    os.makedirs(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, out], stdout=subprocess.PIPE,
                              text=True, env=one_thread_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run(*FAKE, "--out", out) == 2
        err = _one_line_error(capsys)
        lock = os.path.join(out, files.LOCK_NAME)
        assert f"--out {out} is in use by another sapa compare (PID {holder.pid} on " in err
        assert f"lock file {lock}" in err and "choose another --out" in err
        assert os.listdir(out) == [files.LOCK_NAME]  # nothing written, the holder's lock kept
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's lock file stays behind, but its lock died with it
    assert os.path.exists(os.path.join(out, files.LOCK_NAME))
    assert run(*FAKE, "--out", out) == 0
    text = capsys.readouterr().out
    assert f"took over the stale lock {os.path.join(out, files.LOCK_NAME)} of PID {holder.pid}" in text
    assert len(read_rows(out)) == 1
    assert not os.path.exists(os.path.join(out, files.LOCK_NAME))  # released at the end


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    a, b = files.OutLock(str(tmp_path)), files.OutLock(str(tmp_path))
    a.acquire("first")
    try:
        with pytest.raises(UsageError, match=f"PID {os.getpid()} on "):
            b.acquire("second")
    finally:
        a.release()
    b.acquire("second")  # free again
    assert b.took_over is None  # a released lock is removed, not stale
    b.release()


# ---- item 4: a failed start blocks nothing ------------------------------------------------------

def test_a_start_that_fails_before_its_first_row_leaves_nothing_behind(tmp_path, fake, capsys,
                                                                        monkeypatch):
    out = str(tmp_path / "o")

    def needs_timm(config, upsampler, train_set):
        raise UsageError("--model fpn needs timm, which is not installed: pip install 'sapa[timm]'")

    with monkeypatch.context() as m:
        m.setattr(fake, "build_model", needs_timm)
        assert run(*FAKE, "--out", out) == 2
    assert "needs timm" in _one_line_error(capsys)
    assert not os.path.exists(out)  # it created --out, and removed it again

    # a bad sample in the first batch (after results.json was written) does not block either
    os.makedirs(out)
    original = fake_task.RandomImages.__getitem__

    def bad_sample(self, i):
        if i == 5:
            raise UsageError("/data/sample5.png: cannot read this image")
        return original(self, i)

    with monkeypatch.context() as m:
        m.setattr(fake_task.RandomImages, "__getitem__", bad_sample)
        assert run(*FAKE, "--out", out) == 2
    assert "sample5.png" in _one_line_error(capsys)
    assert os.listdir(out) == []  # a folder the user made stays, empty

    # the corrected command runs, with --resume too and with other settings
    assert run(*FAKE, "--out", out, "--resume", "--fake-scale", "3") == 0
    assert len(read_rows(out)) == 1


def test_an_unfinished_start_with_checkpoints_asks_for_resume(tmp_path, fake, capsys,
                                                              monkeypatch):
    out = str(tmp_path / "o")

    def interrupt_at_step_3(model, batch, calls=[]):  # noqa: B006 - counts calls
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return fake_task.FakeTask.loss(fake, model, batch)

    with monkeypatch.context() as m:
        m.setattr(fake, "loss", interrupt_at_step_3)
        assert run(*FAKE, "--out", out) == 130  # Ctrl-C
    err = capsys.readouterr().err
    assert "interrupted (0 run(s) finished, checkpoints kept in" in err
    assert err.rstrip().endswith(f"--out {out} --resume") or "--resume" in err.splitlines()[-1]
    assert os.path.exists(os.path.join(out, "runs", "nearest-seed0", "checkpoint.pt"))
    assert not os.path.exists(os.path.join(out, files.LOCK_NAME))

    assert run(*FAKE, "--out", out) == 2
    assert "checkpoints of unfinished runs" in _one_line_error(capsys)
    assert run(*FAKE, "--out", out, "--resume", "--fake-scale", "3") == 2  # other settings
    err = _one_line_error(capsys)
    assert "checkpoint.pt was written with other settings (fake_scale: 1.0 there, 3.0 now)" in err
    assert run(*FAKE, "--out", out, "--resume") == 0
    assert "resuming at step 2" in capsys.readouterr().out


def test_ctrl_c_before_anything_was_saved(tmp_path, fake, capsys, monkeypatch):
    def interrupt(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(fake, "build_datasets", interrupt)
    out = str(tmp_path / "o")
    assert run(*FAKE, "--out", out) == 130
    assert "interrupted before anything was saved" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_ctrl_c_in_a_real_process_prints_how_to_resume(tmp_path):
    out = str(tmp_path / "o")
    proc = start_cli(*FAKE, "--iters", "100000", "--out", out, script=fake_task.__file__)
    ckpt = os.path.join(out, "runs", "nearest-seed0", "checkpoint.pt")
    try:
        wait_for_file(proc, ckpt, 120, poll=0.01)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1].strip().endswith(f"--out {out} --resume")


# ---- item 6: one line for user mistakes ---------------------------------------------------------

def test_bad_out_folders(tmp_path, fake, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, match in (("", "--out must name a folder, got ''"),
                       ("  ", "--out must name a folder"),
                       (str(a_file), f"--out {a_file} is a file, not a folder"),
                       (str(a_file / "sub" / "o"), f"lies under {a_file}, which is a file")):
        assert run(*FAKE, "--out", out) == 2
        assert match in _one_line_error(capsys)
    assert os.listdir(tmp_path) == ["file"]

    # a folder that cannot be written: root ignores permissions, so simulate the refusal there
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        def refuse(path):
            raise PermissionError(13, "Permission denied", path)
        monkeypatch.setattr(files, "_open_lock_file", refuse)
    else:
        ro.chmod(0o555)
    try:
        assert run(*FAKE, "--out", str(ro)) == 2
        assert f"--out {ro} is not writable (permission denied" in _one_line_error(capsys)
        assert run(*FAKE, "--out", str(ro / "new")) == 2
        assert "permission denied" in _one_line_error(capsys)
    finally:
        ro.chmod(0o755)


def test_device_cuda_without_a_gpu(tmp_path, fake, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    assert run(*FAKE, "--device", "cuda", "--out", str(tmp_path / "o")) == 2
    assert "--device cuda was asked for but torch.cuda.is_available() is False" in \
        _one_line_error(capsys)


def _limit_file_size(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    """A file-size limit makes ``torch.save`` of the first checkpoint fail as on a full disk
    ("enforce fail at inline_container.cc"), while results.json still fits."""
    out = str(tmp_path / "o")
    proc = run_cli(*FAKE, "--out", out, script=fake_task.__file__, timeout=240,
                   preexec_fn=_limit_file_size(8000))
    assert proc.returncode == 2, proc.stderr[-3000:]
    ckpt = os.path.join(out, "runs", "nearest-seed0", "checkpoint.pt")
    assert proc.stderr.startswith(f"sapa compare: error: cannot write {ckpt}: torch.save failed "
                                  "([enforce fail at inline_container.cc")
    assert "is the disk full?" in proc.stderr and proc.stderr.count("\n") == 1
    assert not os.path.exists(out)  # nothing finished: nothing left, not even a temporary file


def test_write_errors_name_the_file():
    with pytest.raises(UsageError, match=r"cannot write /x/results.json: no space left on the "
                                         r"device \(\[Errno 28\]\); free some space"), \
            files.write_errors("/x/results.json"):
        raise OSError(28, "No space left on device")
    # not the user's disk: a bug, unchanged
    with pytest.raises(FileNotFoundError), files.write_errors("/x/results.json"):
        raise FileNotFoundError(2, "No such file or directory")
    with pytest.raises(RuntimeError, match="something else"), files.write_errors("/x/c.pt"):
        raise RuntimeError("something else")


def _interrupted_run(out, fake, monkeypatch):
    """A comparison killed after its checkpoint at step 2 (of 4), before its row."""
    run_killed_after_checkpoint(monkeypatch, [*FAKE, "--out", out], step=2)
    return os.path.join(out, "runs", "nearest-seed0", "checkpoint.pt")


def test_unreadable_checkpoints_on_resume_name_the_file(tmp_path, fake, capsys, monkeypatch):
    out = str(tmp_path / "o")
    ckpt = _interrupted_run(out, fake, monkeypatch)
    with open(ckpt, "rb") as f:
        good = f.read()
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    cases = ((b"", "cannot be read"), (good[: len(good) // 2], "cannot be read"),
             (b'{"rows": []}', "cannot be read"),
             (foreign.read_bytes(), "is not a sapa compare checkpoint (no iter, model, optimizer"))
    for content, match in cases:
        with open(ckpt, "wb") as f:
            f.write(content)
        assert run(*FAKE, "--out", out, "--resume") == 2
        err = _one_line_error(capsys)
        assert ckpt in err and match in err and "delete it to restart this run" in err
    # another run's checkpoint in this run's folder
    other = torch.load(io.BytesIO(good), weights_only=False)
    other["seed"] = 7
    torch.save(other, ckpt)
    assert run(*FAKE, "--out", out, "--resume") == 2
    assert "is of seed 7, not 0" in _one_line_error(capsys)
    with open(ckpt, "wb") as f:
        f.write(good)
    assert run(*FAKE, "--out", out, "--resume") == 0


def test_hand_edited_rows_name_the_row(tmp_path, fake, capsys):
    out = str(tmp_path / "o")
    assert run(*FAKE, "--out", out) == 0
    path = os.path.join(out, "results.json")
    with open(path) as f:
        good = json.load(f)
    edits = (
        (lambda r: r.update(median_err="0.26x"), "row 1 (nearest seed 0): 'median_err' must be "
                                                 "a finite number, got '0.26x'"),
        (lambda r: r.pop("seed"), "row 1: 'seed' must be an int >= 0, got None"),
        (lambda r: r.update(params=-3), "'params' must be an int >= 0, got -3"),
        (lambda r: r.update(mean_err=float("nan")), "'mean_err' must be a finite number, got nan"),
    )
    for edit, match in edits:
        data = json.loads(json.dumps(good))
        edit(data["rows"][0])
        with open(path, "w") as f:
            json.dump(data, f)
        assert run(*FAKE, "--out", out, "--resume") == 2
        err = _one_line_error(capsys)
        assert f"{path}: {match}" in err or match in err, err
    data = json.loads(json.dumps(good))
    data["rows"].append(dict(data["rows"][0]))
    with open(path, "w") as f:
        json.dump(data, f)
    assert run(*FAKE, "--out", out, "--resume") == 2
    assert "row 2 (nearest seed 0): a second row for nearest seed 0" in _one_line_error(capsys)
    with open(path, "w") as f:
        f.write(json.dumps(good)[:-5])
    assert run(*FAKE, "--out", out, "--resume") == 2
    assert f"{path}, line 1 column" in _one_line_error(capsys)


def test_a_usage_error_in_a_data_loader_worker_is_one_line(tmp_path, fake, capsys, monkeypatch):
    original = fake_task.RandomImages.__getitem__

    def bad_sample(self, i):
        if i == 5:
            raise UsageError("/data/sample5.png: cannot read this image (truncated)")
        return original(self, i)

    monkeypatch.setattr(fake_task.RandomImages, "__getitem__", bad_sample)
    assert run(*FAKE, "--workers", "1", "--out", str(tmp_path / "o")) == 2
    assert _one_line_error(capsys) == ("sapa compare: error: /data/sample5.png: cannot read this "
                                       "image (truncated)\n")


class _NothingMeter(fake_task.MedianErrorMeter):
    def compute(self):
        raise ValueError("no validation image was evaluated")


class _NanSecondMeter(fake_task.MedianErrorMeter):
    def compute(self):
        return {**super().compute(), "mean_err": float("nan")}


class _NanMeter(fake_task.MedianErrorMeter):
    def compute(self):
        return {**super().compute(), "median_err": float("nan")}


def test_nothing_to_evaluate_and_undefined_metrics_are_errors_not_nan(tmp_path, fake, capsys,
                                                                      monkeypatch):
    monkeypatch.setattr(fake, "make_meter", lambda config, val_set: _NothingMeter())
    assert run(*FAKE, "--out", str(tmp_path / "a")) == 2
    err = _one_line_error(capsys)
    assert "the validation set gives nothing to evaluate (no validation image was evaluated)" in err
    monkeypatch.setattr(fake, "make_meter", lambda config, val_set: _NanMeter())
    assert run(*FAKE, "--out", str(tmp_path / "b")) == 2
    assert "the validation metric median_err=nan is undefined" in _one_line_error(capsys)
    # another column than the primary may be undefined on the data: null in the row, — in
    # the table, left out of its statistics
    monkeypatch.setattr(fake, "make_meter", lambda config, val_set: _NanSecondMeter())
    assert run("--task", "fake", "--no-figures", "--out", str(tmp_path / "c")) == 0
    rows = read_rows(str(tmp_path / "c"))
    assert all(r["mean_err"] is None and r["median_err"] > 0 for r in rows)
    md = (tmp_path / "c" / "results.md").read_text()
    assert "| nearest | 2 | " in md and " | — | " in md
    assert "mean err. (lower is better)" not in md  # no difference to conclude on
    for out in (tmp_path / "a", tmp_path / "b"):  # the checkpoints (step 1) are kept, no lock
        assert sorted(os.listdir(out)) == ["results.json", "results.md", "runs"]
        assert read_rows(str(out)) == []


def test_a_diverged_loss_stops_with_one_line(tmp_path, fake, capsys, monkeypatch):
    monkeypatch.setattr(fake, "loss", lambda model, batch: sum(
        p.sum() for p in model.parameters()) * float("inf"))
    assert run(*FAKE, "--out", str(tmp_path / "o")) == 2
    err = _one_line_error(capsys)
    assert "nearest s0: the training loss is" in err and "at step 1" in err and "--lr" in err


def test_bugs_keep_their_traceback(tmp_path, fake, monkeypatch):
    def bug(model, batch):
        raise IndexError("Target 253 is out of bounds.")

    monkeypatch.setattr(fake, "loss", bug)
    with pytest.raises(IndexError, match="Target 253"):
        run(*FAKE, "--out", str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o")  # a failed start, cleaned up all the same


def test_a_refused_command_touches_nothing(tmp_path, fake, capsys):
    """Refused because --out holds another comparison: its files stay, even without
    checkpoints."""
    out = str(tmp_path / "o")
    assert run(*FAKE, "--out", out) == 0
    for ckpt in (tmp_path / "o" / "runs").glob("*/checkpoint.pt"):
        ckpt.unlink()
    before = sorted(os.listdir(out))
    assert run(*FAKE, "--out", out) == 2
    assert "holds an earlier comparison (1 finished run(s))" in _one_line_error(capsys)
    assert sorted(os.listdir(out)) == before and len(read_rows(out)) == 1
