"""What pins a row's numbers is recorded in it, and the same command with the same thread
count reproduces the row bit for bit (issue 17, item 2).

The thread count matters: torch's CPU kernels (convolutions, reductions) split their sums by
thread, so another ``--threads`` may change the last bits and, through training, the metrics;
docs/compare.md ("Reproducibility") gives a measurement. SAPA's own CPU and GPU kernels gather
their sums in a fixed order and do not depend on it."""
import os

import torch
from compare_cli import read_results, run

TINY = ["--quick", "--image-size", "32", "--widths", "8,16,32", "--num-train", "16",
        "--num-val", "6", "--iters", "4", "--eval-every", "2", "--no-figures", "--threads", "1",
        "--upsamplers", "bilinear", "sapa-b"]
TIMING = ("train_s",)


def _run(out):
    assert run(*TINY, "--out", out) == 0
    return read_results(out)


def test_the_same_command_and_thread_count_reproduce_every_row_bit_for_bit(tmp_path,
                                                                          one_thread):
    a, b = _run(str(tmp_path / "a")), _run(str(tmp_path / "b"))
    assert a["environment"]["torch_threads"] == 1
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        assert {k: v for k, v in ra.items() if k not in TIMING} == \
            {k: v for k, v in rb.items() if k not in TIMING}  # floats compared exactly
        assert ra["threads"] == 1 and ra["device"] == "cpu" and ra["torch"] == torch.__version__
        ca, cb = (torch.load(os.path.join(d, ra["checkpoint"]), weights_only=False)
                  for d in (tmp_path / "a", tmp_path / "b"))
        for k, v in ca["model"].items():
            assert torch.equal(v, cb["model"][k]), k
        assert ca["curves"]["loss"] == cb["curves"]["loss"]
    by = {r["upsampler"]: r for r in a["rows"]}
    assert by["bilinear"]["backend"] is None  # calls no SAPA op
    # the automatic choice on a CPU tensor, as the op makes it when it runs
    from sapa.ops import dispatch

    x = torch.zeros(1, 4, 4, 4)
    assert by["sapa-b"]["backend"] == dispatch.choose_backend(x, x, x).NAME != dispatch.AUTO
    assert a["summary"] == b["summary"]
    versions = a["environment"]["libraries"]
    assert versions["torch"] == torch.__version__ and "numpy" in versions and "numba" in versions
