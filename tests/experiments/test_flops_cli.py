"""``sapa flops``: every format, every registered upsampler, counts against closed forms and
against SAPA's Table 1."""
import argparse
import csv
import io
import json

import pytest
import torch

from sapa import build_upsampler, list_upsamplers
from sapa.cli import main as cli_main
from sapa.experiments import flops

C, H, W = 32, 4, 6  # small, and C divisible by every default group count


def run_main(capsys, fmt, *extra):
    parser = argparse.ArgumentParser()
    flops.add_arguments(parser)
    args = parser.parse_args(["--channels", str(C), "--height", str(H), "--width", str(W),
                           "--format", fmt, *extra])
    assert flops.main(args) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def table():
    """The json rows of every registered upsampler, by name (computed once)."""
    rows, skipped = flops.run(list_upsamplers(), C, H, W, 2)
    assert skipped == {}, f"upsamplers refused x2 at {H}x{W}: {skipped}"
    return {r.name: r for r in rows}


def test_json_lists_every_upsampler(capsys):
    out = json.loads(run_main(capsys, "json"))
    assert [r["name"] for r in out["rows"]] == list_upsamplers()
    assert out["config"] == {"channels": C, "height": H, "width": W, "scale": 2, "batch": 1,
                             "torch": torch.__version__}
    for r in out["rows"]:
        assert r["macs"] == sum(r["counted_ops"].values()) // 2
        assert r["params"] >= r["weights"] >= 0


def test_csv_lists_every_upsampler(capsys):
    rows = list(csv.DictReader(io.StringIO(run_main(capsys, "csv"))))
    assert [r["name"] for r in rows] == list_upsamplers()
    sapa_b = next(r for r in rows if r["name"] == "sapa-b")
    assert float(sapa_b["macs_ratio"]) == pytest.approx(1.0)
    assert "sapa.attention=" in sapa_b["counted_ops"]


def test_markdown_through_the_cli(capsys):
    assert cli_main(["flops", "--channels", str(C), "--height", str(H), "--width", str(W)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| upsampler | params | weights | Table 1 weights | MMACs")
    assert [ln.split("|")[1].strip() for ln in lines[1:]] == list_upsamplers()
    assert f"C={C}, x: 1x{C}x{H}x{W} -> {2 * H}x{2 * W}" in out
    assert "flop_counter / 2" in out  # the unit is stated under the table


def test_sapa_b_matches_the_closed_form_of_its_ops(table):
    # q = Pq LN(guide) at H'W', k = Pk LN(x) at HW (1x1 projections, C -> d: matrix products
    # on the norms' channels-last output), then the attention: d (scores) + C (assembly)
    # multiply-adds per window point per output point
    d, k = 32, 5
    hw, out_hw = H * W, 4 * H * W
    row = table["sapa-b"]
    attention = out_hw * k * k * (d + C)
    assert row.counted_ops == {"aten.addmm": 2 * (C * d * out_hw + C * d * hw),
                               "sapa.attention": 2 * attention}
    assert row.macs == C * d * out_hw + C * d * hw + attention
    assert row.macs == (5 * C * d + 4 * k * k * d + 4 * k * k * C) * hw  # Table 1's form
    assert row.table1_macs == row.macs


@pytest.mark.parametrize("name", ["sapa-i", "sapa-b", "sapa-g", "sapa-d", "carafe", "a2u", "fade"])
def test_custom_ops_are_counted(name):
    # the automatic backend runs through torch.ops.sapa.*, whose FLOPs the counter sees
    ops = flops.measure(name, C, H, W, 2).counted_ops
    assert any(op.startswith("sapa.") for op in ops), ops


# Table 1 (weights only), with its defaults: d=64, K=5 for CARAFE, K=3 for A2U, d=32 for SAPA
TABLE1_WEIGHTS = {
    "carafe": C * 64 + 36 * 5**2 * 64,
    "a2u": 4 * 3**2 * C + 2 * C,
    "sapa-b": 2 * C * 32,
    "sapa-g": 2 * C * 32 + C,
    "indexnet-hin": 32 * C**2 + 8 * C,
    "indexnet-m2o": 68 * C**2,
}


@pytest.mark.parametrize("name", sorted(TABLE1_WEIGHTS))
def test_parameters_against_table1(name):
    up = build_upsampler(name, C, guide_channels=C, scale_factor=2)
    weights = sum(p.numel() for p in up.parameters() if p.dim() >= 2)
    assert weights == TABLE1_WEIGHTS[name]
    assert flops.count_weights(up) == (sum(p.numel() for p in up.parameters()), weights)
    assert flops.TABLE1[name].params_fn(C) == TABLE1_WEIGHTS[name]


def test_ratios_only_where_table1_has_a_formula(table):
    for name, row in table.items():
        has = name in flops.TABLE1
        assert (row.table1_macs is not None) == has and (row.macs_ratio is not None) == has
    # Table 1 counts nothing the counter misses for CARAFE and SAPA-I/B: exact agreement
    for name in ("carafe", "sapa-i", "sapa-b"):
        assert table[name].macs == table[name].table1_macs, name


def test_other_scales_leave_table1_out():
    rows, skipped = flops.run(["sapa-b", "nearest"], C, H, W, 3)
    assert skipped == {}
    assert all(r.table1_macs is None for r in rows)
    assert rows[0].counted_ops["sapa.attention"] == 2 * 9 * H * W * 25 * (32 + C)


def test_meta_counts_equal_a_real_forward(table):
    """The counts are taken on the meta device; a real forward on real tensors counts the same."""
    for name, row in table.items():
        torch.manual_seed(0)
        up = build_upsampler(name, C, guide_channels=C, scale_factor=2).eval()
        x, guide = torch.randn(1, C, H, W), torch.randn(1, C, 2 * H, 2 * W)
        with torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
            up(x, guide)
        counts = counter.get_flop_counts().get("Global", {})
        ops = {str(op): int(n) for op, n in counts.items()}
        assert (row.macs, row.counted_ops) == (counter.get_total_flops() // 2, ops), name
        assert (row.params, row.weights) == flops.count_weights(up), name


def test_huge_sizes_need_no_memory(capsys):
    # indexnet-m2o at C = 100000 holds 68 C^2 = 6.8e11 weights (2.7 TB in float32): counted,
    # never allocated
    c = 100_000
    rows, skipped = flops.run(["indexnet-m2o", "sapa-b"], c, 64, 64, 2)
    assert skipped == {}
    m2o, sapa_b = rows
    assert m2o.weights == m2o.table1_weights == 68 * c * c
    assert sapa_b.weights == 2 * c * 32 and sapa_b.macs == sapa_b.table1_macs
    assert cli_main(["flops", "--channels", str(c), "--names", "indexnet-m2o"]) == 0
    assert "680,000,000,000" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--channels", "0"], ["--height", "x"],
                                  ["--names", "no-such-upsampler"], ["--format", "html"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as err:
        cli_main(["flops", *argv])
    assert err.value.code == 2
