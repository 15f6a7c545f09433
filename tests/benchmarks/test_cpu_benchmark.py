"""``benchmarks/cpu.py`` end to end at tiny sizes: the table of every method and the scaling
sweep and plot come out of one run (numbers are not checked here: docs/benchmarks.md records
them). The full run starts a fresh process per method and per sweep point (minutes on two
cores: ``slow``); the default run does the same in this process, plus one fresh-process timing."""
from __future__ import annotations

import os

import pytest

from sapa.ops.backends import numba as cpu

pytestmark = pytest.mark.skipif(cpu.jit_unavailable() is not None,
                                reason="the cpu backend's numba kernels are unavailable here")

ARGS = ["--sizes", "4", "--channels", "8", "--kernels", "3", "--batch", "1", "--embed", "4",
        "--repeats", "2", "--threads", "1", "--no-compile-time", "--scaling-sizes", "4,6",
        "--scaling-kernels", "1,3"]


def _check_output(bench, out, plot):
    for method in bench.METHODS:
        assert f"| 4²→8² | 8 | 3 | {method} |" in out
    assert "scaling (cpu and bilinear" in out
    assert plot.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="the memory column needs Linux /proc/self/clear_refs")
def test_cpu_benchmark_runs_end_to_end(load_benchmark, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    bench = load_benchmark("cpu")
    plot = tmp_path / "scaling.png"
    assert bench.main([*ARGS, "--plot", str(plot)]) == 0
    _check_output(bench, capsys.readouterr().out, plot)


def test_cpu_benchmark_in_process(load_benchmark, tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    bench = load_benchmark("cpu")
    monkeypatch.setattr(bench, "time_in_fresh_process",
                        lambda case, method, repeats, threads: bench.time_pair(case, method,
                                                                               repeats))
    monkeypatch.setattr(bench, "first_call_seconds", lambda cold: (0.0, 0.0))
    plot = tmp_path / "scaling.png"
    assert bench.main([*ARGS, "--no-memory", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    _check_output(bench, out, plot)
    assert "| 4²→8² | 8 | 3 | cpu |" in out and "| - | - |" in out  # no memory column


def test_time_in_fresh_process(load_benchmark):
    bench = load_benchmark("cpu")
    times = bench.time_in_fresh_process(dict(b=1, c=8, d=4, h=4, k=3), "cpu", 1, 1)
    assert set(times) == {"bilinear", "cpu"}
    for method in times.values():
        assert set(method) == {"fwd", "fb"} and all(t > 0 for t in method.values())
