"""``benchmarks/compare_steps.py`` (the per-step costs behind the segmentation presets) runs and
prints one row per upsampler (numbers are not checked: docs/compare.md records them)."""
from __future__ import annotations


def test_compare_steps_runs(load_benchmark, capsys):
    bench = load_benchmark("compare_steps")
    assert bench.main(["--threads", "1", "--steps", "1", "--samples", "8", "bilinear", "sapa-b"]) == 0
    out = capsys.readouterr().out
    assert "ms CPU per sample" in out and "| upsampler | ms CPU / step | ms wall / step |" in out
    assert "| bilinear | " in out and "| sapa-b | " in out
