"""``benchmarks/onnx_inference.py`` end to end at tiny sizes (numbers are not checked here:
docs/benchmarks.md records them)."""
from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'sapa[export]'")
pytest.importorskip("onnxscript", reason="needs onnxscript: pip install 'sapa[export]'")

TINY = ["--models", "segnet", "--widths", "4,8", "--image-size", "16", "--repeats", "1",
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
