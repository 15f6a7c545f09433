"""``benchmarks/cpu.py`` end to end at tiny sizes: the table of every method and the scaling
sweep and plot come out of one run (numbers are not checked here: docs/benchmarks.md records
them)."""
from __future__ import annotations

import os

import pytest

from sapa.ops.backends import numba as cpu


@pytest.mark.skipif(cpu.jit_unavailable() is not None,
                    reason="the cpu backend's numba kernels are unavailable here")
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="the memory column needs Linux /proc/self/clear_refs")
def test_cpu_benchmark_runs_end_to_end(load_benchmark, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    bench = load_benchmark("cpu")
    plot = tmp_path / "scaling.png"
    assert bench.main(["--sizes", "4", "--channels", "8", "--kernels", "3", "--batch", "1",
                       "--embed", "4", "--repeats", "2", "--threads", "1", "--no-compile-time",
                       "--plot", str(plot), "--scaling-sizes", "4,6",
                       "--scaling-kernels", "1,3"]) == 0
    out = capsys.readouterr().out
    for method in bench.METHODS:
        assert f"| 4²→8² | 8 | 3 | {method} |" in out
    assert "scaling (cpu and bilinear" in out
    assert plot.stat().st_size > 0
