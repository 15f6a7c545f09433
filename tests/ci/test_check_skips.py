"""``.ci/check_skips.py``: CI fails on any skip but the CUDA-only ones."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "check_skips.py"


@pytest.fixture(scope="module")
def check_skips():
    spec = importlib.util.spec_from_file_location("check_skips", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(check_skips, tmp_path, text, *extra):
    log = tmp_path / "pytest.log"
    log.write_text(text)
    return check_skips.main([str(log), *extra])


CUDA_ONLY = """\
..s.ss.                                                                  [100%]
=========================== short test summary info ============================
SKIPPED [2] tests/ops/test_triton_backend.py:361: needs a CUDA GPU
SKIPPED [1] tests/ops/test_autocast.py:40: needs a CUDA GPU (bf16 autocast)
4 passed, 3 skipped, 2 deselected in 1.23s
"""


def test_cuda_only_skips_pass(check_skips, tmp_path, capsys):
    assert run(check_skips, tmp_path, CUDA_ONLY) == 0
    assert "3 skipped, all allowed" in capsys.readouterr().out


def test_no_skip_passes(check_skips, tmp_path):
    assert run(check_skips, tmp_path, "....\n4 passed in 0.5s\n") == 0


def test_another_reason_fails_and_is_named(check_skips, tmp_path, capsys):
    text = CUDA_ONLY.replace(
        "4 passed, 3 skipped", "4 passed, 4 skipped").replace(
        "SKIPPED [2]", "SKIPPED [1] tests/models/test_fpn.py:94: timm cannot be imported here\n"
                       "SKIPPED [2]")
    assert run(check_skips, tmp_path, text) == 1
    err = capsys.readouterr().err
    assert "tests/models/test_fpn.py:94: timm cannot be imported here" in err
    assert "needs a CUDA GPU" not in err.splitlines()[0]
    # a reason allowed for one run only
    assert run(check_skips, tmp_path, text, "--allow", "timm cannot") == 0


def test_unreadable_summaries_fail(check_skips, tmp_path, capsys):
    # skips counted but not listed (pytest ran without -rs)
    assert run(check_skips, tmp_path, "..s\n2 passed, 1 skipped in 0.1s\n") == 1
    assert "run pytest with -rs" in capsys.readouterr().err
    # no closing line (pytest crashed, or the wrong file)
    assert run(check_skips, tmp_path, "collecting ...\n") == 1
    assert "no closing pytest summary line" in capsys.readouterr().err


def test_a_multi_line_reason_is_read_by_its_first_line(check_skips, tmp_path):
    text = ("s.\nSKIPPED [1] tests/x.py:3: needs a CUDA GPU\nand more\n"
            "1 passed, 1 skipped in 0.1s\n")
    assert run(check_skips, tmp_path, text) == 0


def test_command_line_reads_standard_input():
    done = subprocess.run([sys.executable, str(SCRIPT), "-"], input=CUDA_ONLY, text=True,
                          capture_output=True)
    assert done.returncode == 0, done.stderr
    bad = CUDA_ONLY.replace("needs a CUDA GPU (bf16", "flaky (bf16")
    done = subprocess.run([sys.executable, str(SCRIPT), "-"], input=bad, text=True,
                          capture_output=True)
    assert done.returncode == 1 and "flaky (bf16 autocast)" in done.stderr
