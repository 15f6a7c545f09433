"""Statistics over seeds: the paired t-interval against hand-worked numbers, the pairing by
seed, and how results.md shows the differences."""
import math

import pytest

from sapa.experiments import results, stats
from sapa.tasks.base import Column

# Student's t quantiles in closed form (independent of scipy): 1 degree of freedom is the
# Cauchy distribution, t = tan(pi (p - 1/2)); 2 degrees of freedom, t = (2p - 1) / sqrt(2p(1-p))
T_975_DOF1 = math.tan(math.pi * 0.475)            # 12.7062...
T_975_DOF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 4.30265...


def test_closed_forms_are_the_table_values():
    assert T_975_DOF1 == pytest.approx(12.7062, abs=1e-4)
    assert T_975_DOF2 == pytest.approx(4.3027, abs=1e-4)
    assert stats.t_quantile(0.975, 1) == pytest.approx(T_975_DOF1, rel=1e-12)
    assert stats.t_quantile(0.975, 2) == pytest.approx(T_975_DOF2, rel=1e-12)


def test_paired_interval_by_hand():
    # d = 1, 2, 6: mean 3; squared deviations 4 + 1 + 9 = 14, variance 14 / 2 = 7
    mean, low, high = stats.paired_interval([1.0, 2.0, 6.0])
    half = T_975_DOF2 * math.sqrt(7) / math.sqrt(3)  # 6.5724...
    assert mean == 3.0
    assert (low, high) == (pytest.approx(3 - half, rel=1e-12), pytest.approx(3 + half, rel=1e-12))
    assert low == pytest.approx(-3.5724, abs=1e-4) and high == pytest.approx(9.5724, abs=1e-4)
    # d = 0.5, 1.5: mean 1, sample std sqrt(0.5), standard error 0.5
    mean, low, high = stats.paired_interval([0.5, 1.5])
    assert (mean, low, high) == (1.0, pytest.approx(1 - 0.5 * T_975_DOF1),
                                 pytest.approx(1 + 0.5 * T_975_DOF1))
    # a 90% interval uses the 0.95 quantile: for 2 degrees of freedom 0.9 / sqrt(2 * 0.95 * 0.05)
    _, low, high = stats.paired_interval([1.0, 2.0, 6.0], confidence=0.9)
    assert high - 3 == pytest.approx(0.9 / math.sqrt(0.095) * math.sqrt(7 / 3), rel=1e-12)
    assert stats.paired_interval([2.5]) == (2.5, None, None)
    assert stats.paired_interval([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)  # no spread: a point
    for bad in ([], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="finite"):
            stats.paired_interval(bad)
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_interval([1.0, 2.0], confidence=1.0)


def _row(u, seed, miou, err=1.0):
    return {"upsampler": u, "seed": seed, "miou": miou, "err": err, "params": 10, "flops": 20,
            "train_s": 1.0}


def test_differences_are_paired_by_seed():
    rows = [_row("base", 0, 0.50), _row("base", 1, 0.60), _row("base", 3, 0.90),
            _row("new", 0, 0.60), _row("new", 1, 0.80), _row("new", 2, 0.10),
            _row("one", 1, 0.65)]
    m = stats.metric_summary(rows, "new", "base", "miou")
    # all three of its own seeds for the mean and std ...
    assert m["n"] == 3 and m["mean"] == pytest.approx(0.5) and m["std"] == pytest.approx(
        math.sqrt(((0.6 - 0.5) ** 2 + (0.8 - 0.5) ** 2 + (0.1 - 0.5) ** 2) / 2))
    # ... the seeds both ran (0 and 1: d = 0.1, 0.2) for the difference
    assert m["pairs"] == 2 and m["diff"] == pytest.approx(0.15)
    half = T_975_DOF1 * math.sqrt(0.005) / math.sqrt(2)  # sample std of 0.1, 0.2 is sqrt(0.005)
    assert m["ci_low"] == pytest.approx(0.15 - half) and m["ci_high"] == pytest.approx(0.15 + half)
    assert m["within_noise"] is True
    one = stats.metric_summary(rows, "one", "base", "miou")
    assert one["pairs"] == 1 and one["diff"] == pytest.approx(0.05)
    assert one["ci_low"] is one["ci_high"] is one["within_noise"] is None
    base = stats.metric_summary(rows, "base", "base", "miou")
    assert base["diff"] == 0.0 and base["ci_low"] is None and base["within_noise"] is None
    none = stats.metric_summary([_row("a", 0, 0.5), _row("b", 1, 0.5)], "b", "a", "miou")
    assert none["pairs"] == 0 and none["diff"] is None


def test_summary_section_and_a_resolved_difference():
    rows = [_row("bilinear", s, v) for s, v in enumerate((0.50, 0.52, 0.49))]
    rows += [_row("sapa-b", s, v) for s, v in enumerate((0.60, 0.63, 0.61))]  # d = 10, 11, 12 pts
    s = stats.summarize(rows, ["miou"], order=["sapa-b", "bilinear"], baseline="bilinear")
    assert s["baseline"] == "bilinear" and s["confidence"] == 0.95 and "t" in s["method"]
    assert list(s["upsamplers"]) == ["sapa-b", "bilinear"]
    m = s["upsamplers"]["sapa-b"]["miou"]
    assert set(m) == {"n", "mean", "std", "pairs", "diff", "ci_low", "ci_high", "within_noise"}
    half = T_975_DOF2 * 0.01 / math.sqrt(3)  # the differences' sample std is 1 point
    assert m["diff"] == pytest.approx(0.11)
    assert m["ci_low"] == pytest.approx(0.11 - half) and m["ci_high"] == pytest.approx(0.11 + half)
    assert m["within_noise"] is False
    assert stats.summarize(rows, ["miou"])["baseline"] == "bilinear"  # first seen
    assert stats.summarize([], ["miou"]) == {"baseline": None, "confidence": 0.95,
                                             "method": stats.METHOD, "upsamplers": {}}


def test_markdown_shows_intervals_noise_marks_and_directions():
    cols = (Column("miou", "mIoU (%)", scale=100.0, digits=2),
            Column("err", "err", digits=1, lower_is_better=True))
    rows = [_row("bilinear", s, v, err=5.0 + s) for s, v in enumerate((0.50, 0.52, 0.49))]
    rows += [_row("sapa-b", s, v, err=3.0 + s) for s, v in enumerate((0.60, 0.63, 0.61))]
    rows += [_row("carafe", s, v, err=[4.0, 9.0, 5.5][s]) for s, v in enumerate((0.49, 0.55, 0.47))]
    rows += [_row("nearest", 0, 0.40, err=6.0)]
    summary = stats.summarize(rows, ["miou", "err"])
    table = results.differences_table(summary, cols).splitlines()
    assert table[0] == "| upsampler | pairs | Δ mIoU (%) ↑ | Δ err ↓ |"
    half = 100 * T_975_DOF2 * 0.01 / math.sqrt(3)  # 2.48 points
    assert table[2] == (f"| sapa-b | 3 | +11.00 [{11 - half:+.2f}, {11 + half:+.2f}] | "
                        "-2.0 [-2.0, -2.0] |")
    assert table[3].startswith("| carafe | 3 | +0.00 [") and table[3].count("within noise") == 2
    assert table[4] == "| nearest | 1 | -10.00 (n=1) | +1.0 (n=1) |"
    lines = results.conclusions(summary, cols)
    assert lines[0].startswith("- mIoU (%) (higher is better), against bilinear: better: sapa-b "
                               "+11.00 [")
    assert "within noise: carafe +0.00 [" in lines[0]
    assert "one seed only (n=1): nearest -10.00" in lines[0]
    assert lines[1].startswith("- err (lower is better), against bilinear: better: sapa-b -2.0 "
                               "[-2.0, -2.0]; within noise: carafe")
    md = results.results_markdown({"config": {"task": "t"}, "rows": rows, "summary": summary},
                                  cols)
    assert "## Differences to bilinear" in md and "Student's t" in md


def test_undefined_values_are_left_out():
    rows = [_row("a", 0, 0.5), _row("a", 1, None), _row("a", 2, 0.7),
            _row("b", 0, 0.6), _row("b", 1, 0.9), _row("b", 2, 0.8), _row("c", 0, None)]
    m = stats.metric_summary(rows, "b", "a", "miou")
    assert m["n"] == 3 and m["pairs"] == 2 and m["diff"] == pytest.approx(0.1)  # seeds 0 and 2
    c = stats.metric_summary(rows, "c", "a", "miou")
    assert c["n"] == 0 and c["mean"] is None and c["std"] is None and c["diff"] is None
    table = results.markdown_table(rows, (Column("miou", "mIoU", 100.0, 1),))
    assert "| a | 3 | 60.0 ± 14.1 (n=2) |" in table and "| c | 1 | — |" in table
    with pytest.raises(results.UsageError, match="'miou' must be a finite number, got None"):
        results.check_rows(rows, (Column("miou", "mIoU"),), primary="miou")
    results.check_rows(rows, (Column("miou", "mIoU"),), primary="err")
