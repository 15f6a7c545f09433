"""``benchmarks/model_step.py`` end to end at tiny sizes (numbers are not checked here:
docs/benchmarks.md records them)."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("transformers", reason="the benchmark's SegFormer encoder is transformers'")

TINY = ["--size", "b0", "--batch", "1", "--image-size", "64", "--num-classes", "5",
        "--repeats", "1", "--warmup", "1", "--threads", "1", "--no-cuda"]


def test_model_step_benchmark_times_every_upsampler(load_benchmark, capsys):
    bench = load_benchmark("model_step")
    assert bench.main([*TINY, "--upsamplers", "sapa-b", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "| upsampler | step ms (min) | time / bilinear |" in out
    for name in ("bilinear", "sapa-b"):
        assert f"| {name} | " in out
    assert "| bilinear | " in out and "| 1.000x | — |" in out
    assert "goal sapa-b time / bilinear = " in out and "goal sapa-b memory" not in out


def test_make_step_trains(load_benchmark):
    bench = load_benchmark("model_step")
    step = bench.make_step("sapa-b", "b0", 1, 64, 5)
    before = [p.detach().clone() for p in step.model.decode_head.upsamplers.parameters()]
    step()
    after = list(step.model.decode_head.upsamplers.parameters())
    assert any(not (a == b).all() for a, b in zip(after, before))  # AdamW moved SAPA's weights


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="the memory column needs Linux /proc/self/clear_refs")
def test_model_step_benchmark_with_memory(load_benchmark, capsys):
    bench = load_benchmark("model_step")
    assert bench.main([*TINY, "--upsamplers", "sapa-b"]) == 0
    out = capsys.readouterr().out
    assert "goal sapa-b memory / bilinear = " in out


def test_profile_mode(load_benchmark, capsys):
    bench = load_benchmark("model_step")
    assert bench.main([*TINY, "--profile", "sapa-b"]) == 0
    assert "Self CPU" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--image-size", "48"], ["--batch", "0"], ["--threads", "0"]])
def test_bad_arguments(load_benchmark, argv):
    with pytest.raises(SystemExit) as err:
        load_benchmark("model_step").main(argv)
    assert err.value.code == 2


def test_breakdown_mode(load_benchmark, capsys):
    bench = load_benchmark("model_step")
    assert bench.main([*TINY, "--breakdown", "sapa-b"]) == 0
    out = capsys.readouterr().out
    for part in ("| bilinear: the three resizes |", "| sapa-b: the six stages |",
                 "| - normalised q / k projections |", "| - sapa_attention |"):
        assert part in out
