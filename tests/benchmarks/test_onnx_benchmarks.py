"""``benchmarks/onnx_inference.py`` and ``benchmarks/onnx_parity.py`` end to end at tiny sizes
(numbers are not checked here: docs/benchmarks.md and docs/deployment.md record them)."""
from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'sapa[export]'")
pytest.importorskip("onnxscript", reason="needs onnxscript: pip install 'sapa[export]'")

TINY = ["--models", "segnet", "--widths", "4", "--image-size", "8", "--repeats", "1",
        "--warmup", "0", "--threads", "1"]


def test_onnx_inference_benchmark_times_every_upsampler_against_bilinear(load_benchmark, capsys):
    bench = load_benchmark("onnx_inference")
    assert bench.main([*TINY, "--upsamplers", "nearest"]) == 0
    out = capsys.readouterr().out
    assert "| upsampler | ORT ms (1 thr) | / bilinear | torch ms (1 thr) | ORT / torch |" in out
    assert "| bilinear | " in out and "| 1.00x | " in out
    assert "| nearest | " in out and "OUTSIDE" not in out
    assert "onnxruntime 1." in out  # the versions next to the numbers


def test_bad_options(load_benchmark):
    bench = load_benchmark("onnx_inference")
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "unet"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "segnet", "--widths", "4,8", "--image-size", "6"])


def test_onnx_parity_prints_the_measured_differences(load_benchmark, capsys):
    bench = load_benchmark("onnx_parity")
    assert bench.main(["--upsamplers", "nearest", "--channels", "4", "--size", "4"]) == 0
    out = capsys.readouterr().out
    assert "| upsampler | fp32 max abs | fp32 ratio | fp16 max abs (vs fp32) |" in out
    assert "x 4x4 (batch 2) and 5x3 (batch 3)" in out
    row = next(line for line in out.splitlines() if line.startswith("| nearest |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) == 0.0  # nearest copies values: no rounding at all in float32
    assert 0 <= float(cells[4]) <= 1  # within the float16 tolerance


def test_onnx_parity_bad_options(load_benchmark):
    bench = load_benchmark("onnx_parity")
    for argv in (["--size", "2"], ["--channels", "0"], ["--upsamplers", "sapa-z"]):
        with pytest.raises(SystemExit):
            bench.main(argv)
