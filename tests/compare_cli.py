"""Plumbing shared by the ``sapa compare`` tests: parse and run a command in this process, read
what it wrote to ``--out``, run it as a user does (a subprocess, 2 processes under ``torchrun``,
SIGKILLed once a file appears), stop it in this process after a checkpoint, and evaluate a saved
model in one process.

Subprocesses run with ``OMP_NUM_THREADS=1``: the tiny models gain nothing from more threads,
and on a shared machine OpenMP threads waiting for each other can make them many times slower.
``script``: a Python file to run instead of ``-m sapa`` (``fake_task.py``, which is ``sapa``
with the fake task registered)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import pytest
import torch

from sapa.experiments import compare, files
from sapa.experiments import distributed as D
from sapa.experiments.trainer import evaluate
from sapa.tasks import get_task
from sapa.tasks.base import Task


def parse(*argv: str) -> argparse.Namespace:
    """``sapa compare argv``'s arguments, as the command line parses them."""
    return compare.parse_args(list(argv))


def parse_options(**options) -> argparse.Namespace:
    """``parse`` of ``options`` given as keywords: ``image_size=48`` is ``--image-size 48``,
    ``quick=True`` is ``--quick``, a list gives its items after the flag."""
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return parse(*argv)


def run(*argv: str) -> int:
    """Runs ``sapa compare argv`` in this process; returns its exit status."""
    return compare.main(parse(*argv))


def read_results(out: str) -> dict:
    """The ``results.json`` a comparison wrote to ``out``."""
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def read_rows(out: str) -> list[dict]:
    """The rows of ``out``'s ``results.json``, one per finished run."""
    return read_results(out)["rows"]


def out_of(argv: Sequence[str]) -> str:
    """The value of ``argv``'s ``--out``."""
    return argv[list(argv).index("--out") + 1]


def with_out(argv: Sequence[str], out: str) -> list[str]:
    """``argv`` with the value of its ``--out`` replaced by ``out``."""
    i = list(argv).index("--out") + 1
    return [*argv[:i], out, *argv[i + 1:]]


def one_thread_env() -> dict[str, str]:
    """This process's environment, with one OpenMP thread."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(argv: Sequence[str], script: str | None) -> list[str]:
    return [*(["-m", "sapa"] if script is None else [script]), "compare", *argv]


def run_cli(*argv: str, timeout: float = 300, script: str | None = None,
            **kwargs) -> subprocess.CompletedProcess:
    """Runs ``python -m sapa compare argv`` to its end (``kwargs``: more of
    ``subprocess.run``'s); stdout and stderr are captured as text."""
    return subprocess.run([sys.executable, *_command(argv, script)], capture_output=True,
                          text=True, timeout=timeout, env=one_thread_env(), **kwargs)


def torchrun(*argv: str, nproc: int = 2, timeout: float = 300,
             script: str | None = None) -> subprocess.CompletedProcess:
    """Runs ``torchrun --standalone --nproc_per_node nproc -m sapa compare argv`` to its end;
    stdout and stderr are captured as text."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), *_command(argv, script)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=one_thread_env())


def _terminal_signals() -> None:
    # Ctrl-C as at a terminal: a shell without job control starts background commands with
    # SIGINT ignored, and a child inherits that (then Python installs no KeyboardInterrupt)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(*argv: str, script: str | None = None) -> subprocess.Popen:
    """Starts ``python -m sapa compare argv`` and returns at once; stdout and stderr are
    pipes (text); SIGINT is a KeyboardInterrupt in it even when this process ignores SIGINT."""
    return subprocess.Popen([sys.executable, *_command(argv, script)], env=one_thread_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_terminal_signals)


def wait_for_file(proc: subprocess.Popen, path: str, timeout: float,
                  poll: float = 0.005) -> None:
    """Waits until ``path`` exists; fails if ``proc`` ends first (showing its stderr) or after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before writing "
                                 f"{path}:\n{proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"{path} was not written within {timeout} s"
        time.sleep(poll)


def kill_when_exists(argv: Sequence[str], path: str, timeout: float,
                     poll: float = 0.005) -> int:
    """Starts ``python -m sapa compare argv`` and SIGKILLs it as soon as ``path`` exists (a
    checkpoint, typically), as a crash or an out-of-memory kill would; returns its exit status
    (``-signal.SIGKILL`` unless it ended on its own first)."""
    proc = start_cli(*argv)
    try:
        wait_for_file(proc, path, timeout, poll)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode


class Killed(BaseException):
    """Raised out of a comparison run in this process, as a kill would stop it (not an
    ``Exception``: nothing on the way catches it)."""


def run_killed_after_checkpoint(monkeypatch: pytest.MonkeyPatch, argv: Sequence[str],
                                step: int) -> None:
    """Runs ``sapa compare argv`` in this process and stops it with ``Killed`` right after it
    wrote the checkpoint of an unfinished run at ``step``."""
    save = files.atomic_torch_save

    def save_then_die(path, obj):
        save(path, obj)
        if obj["iter"] == step and "metrics" not in obj:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr("sapa.experiments.trainer.atomic_torch_save", save_then_die)
        with pytest.raises(Killed):
            run(*argv)


def resume_and_rerun(argv: Sequence[str], reference_argv: Sequence[str]
                     ) -> tuple[list[dict], list[dict]]:
    """Resumes the killed comparison ``argv`` (``--resume``), then runs ``reference_argv``
    (the same comparison into another ``--out``) uninterrupted, both in this process; returns
    the rows of each."""
    assert run(*argv, "--resume") == 0
    resumed = read_rows(out_of(argv))
    assert run(*reference_argv) == 0
    return resumed, read_rows(out_of(reference_argv))


def evaluate_saved(out: str, row: dict, upsampler: str, task: Task | None = None,
                   batch_size: int = 16) -> dict:
    """The metrics of ``row``'s saved model (an ``upsampler`` model of ``out``'s task, or of
    ``task``) evaluated in this one process on the comparison's validation set."""
    config = read_results(out)["config"]
    task = get_task(config["task"]) if task is None else task
    train_set, val_set = task.build_datasets(config)
    model = task.build_model(config, upsampler, train_set)
    ckpt = torch.load(os.path.join(out, row["checkpoint"]), weights_only=False)
    model.load_state_dict(ckpt["model"])
    return evaluate(task, model, val_set, config, D.DistContext(), batch_size=batch_size)
