"""``benchmarks/gpu.py --smoke``: the GPU benchmark end to end at tiny shapes on the CPU, the
Triton backend under its interpreter (every method timed, the table, JSON rows and plot
written), so the script is known to work before a GPU runs it."""
from __future__ import annotations

import json

import pytest


def test_gpu_benchmark_smoke(load_benchmark, tmp_path, monkeypatch, capsys):
    pytest.importorskip("triton", reason="the smoke run interprets the Triton kernels")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    bench = load_benchmark("gpu")
    rows_path, plot_path = tmp_path / "rows.json", tmp_path / "gpu.png"
    assert bench.main(["--smoke", "--json", str(rows_path), "--plot", str(plot_path)]) == 0
    rows = json.loads(rows_path.read_text())
    assert sorted(r["method"] for r in rows) == sorted(bench.METHODS)
    for row in rows:
        assert row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0, row
    assert plot_path.stat().st_size > 0
    assert "triton" in capsys.readouterr().out
