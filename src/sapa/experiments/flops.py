"""``sapa flops``: parameters and measured FLOPs of every upsampler beside SAPA's Table 1.

For each upsampler (default: every name in ``sapa.list_upsamplers()``) it builds the module with
its defaults, runs one forward pass on ``x: 1 x C x H x W`` (and, for every upsampler, a guide
``1 x C x sH x sW``) under ``torch.utils.flop_counter.FlopCounterMode``, on the ``meta`` device
(no memory, whatever ``C``, ``H``, ``W``), and prints

- parameters, all of them and the weights alone (tensors of two or more dimensions:
  convolution kernels), which is what Table 1 counts;
- multiply-adds (MACs) measured: the counter's FLOPs / 2 (it counts 2 per multiply-add);
- Table 1's formulas, evaluated at ``C`` and multiplied by ``H x W``, in the same unit. Table 1
  counts multiply-adds per low-resolution point: SAPA's feature assembly ``4K^2 C`` is 4 output
  points x ``K^2`` window points x ``C`` channels, one multiply-add each (x2 upsampling);
- the ops the counter saw, so that one can check the custom ``torch.ops.sapa.*`` ops were
  counted (their FLOP formulas are registered in ``sapa.ops``).

``python -m sapa flops --format markdown`` (default C=256, 64x64 -> 128x128).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..modules import build_upsampler, is_guided, list_upsamplers
from . import model_flops

FORMATS = ("markdown", "csv", "json")


@dataclass(frozen=True)
class Table1:
    """One row of SAPA's Table 1 (x2 upsampling): per-low-res-point MACs and weights."""

    macs: str  # the formula as printed in the paper, times H W
    params: str
    macs_fn: object  # C -> MACs per low-res point
    params_fn: object  # C -> weights


# Table 1's defaults: d=64, K=5 for CARAFE; K=3 for A2U; d=32, K=5 for SAPA.
TABLE1 = {
    "carafe": Table1("Cd+36K²d+4K²C (d=64, K=5)", "Cd+36K²d",
                     lambda c: c * 64 + 36 * 25 * 64 + 4 * 25 * c, lambda c: c * 64 + 36 * 25 * 64),
    "indexnet-hin": Table1("32C²+12C", "32C²+8C",
                           lambda c: 32 * c * c + 12 * c, lambda c: 32 * c * c + 8 * c),
    "indexnet-m2o": Table1("68C²+4C", "68C²", lambda c: 68 * c * c + 4 * c, lambda c: 68 * c * c),
    "a2u": Table1("73C+4K²+4K²C (K=3)", "4K²C+2C",
                  lambda c: 73 * c + 4 * 9 + 4 * 9 * c, lambda c: 4 * 9 * c + 2 * c),
    "sapa-i": Table1("8K²C (d=C, K=5)", "0", lambda c: 8 * 25 * c, lambda c: 0),
    "sapa-b": Table1("5Cd+4K²d+4K²C (d=32, K=5)", "2Cd",
                     lambda c: 5 * c * 32 + 4 * 25 * 32 + 4 * 25 * c, lambda c: 2 * c * 32),
    "sapa-g": Table1("5Cd+4K²d+4K²C+C+5d (d=32, K=5)", "2Cd+C",
                     lambda c: 5 * c * 32 + 4 * 25 * 32 + 4 * 25 * c + c + 5 * 32,
                     lambda c: 2 * c * 32 + c),
}

NOTES = (
    "MACs: multiply-adds, the unit of SAPA's Table 1; measured MACs = FLOPs of "
    "torch.utils.flop_counter / 2 (it counts 2 FLOPs per multiply-add) for one forward pass, "
    "batch 1. Table 1's per-point formulas are for x2 and are multiplied by H x W (low res).",
    "Counted: convolutions, matrix products and the custom ops torch.ops.sapa.* (FLOP formulas "
    "registered in sapa.ops). Not counted by torch's counter: elementwise ops (gating, IndexNet's "
    "multiplication by the index map), softmax / sigmoid, normalisation layers, interpolation "
    "and pixel shuffle, grid_sample (dysample's sampling). Where Table 1 counts such work the "
    "ratio is below 1.",
    "sapa.sampled_attention (sapa-d) counts its bilinear reads, 4 multiply-adds per sampled "
    "channel, besides the scores and the assembly: 5 N (G d + C) per output point.",
    "weights: parameters of two or more dimensions (convolution kernels), what Table 1 counts; "
    "params adds biases and the normalisation layers' affine parameters.",
)


@dataclass
class Row:
    name: str
    guided: bool
    params: int
    weights: int
    macs: int
    table1_weights: int | None = None
    table1_macs: int | None = None
    table1_formula: str | None = None
    counted_ops: dict = field(default_factory=dict)  # op name -> FLOPs

    @property
    def macs_ratio(self):
        return None if not self.table1_macs else self.macs / self.table1_macs

    @property
    def weights_ratio(self):
        return None if not self.table1_weights else self.weights / self.table1_weights

    def as_dict(self):
        out = asdict(self)
        out["macs_ratio"], out["weights_ratio"] = self.macs_ratio, self.weights_ratio
        return out


def count_weights(module: torch.nn.Module) -> tuple[int, int]:
    """``(all parameters, weights of two or more dimensions)``."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.dim() >= 2)


def measure(name: str, channels: int, height: int, width: int, scale: int) -> Row:
    """Build upsampler ``name`` with its defaults and count one forward pass (batch 1).

    Module and inputs live on the ``meta`` device: shapes propagate (the custom ops through
    their fake implementations) and the counter sees every op, but nothing is allocated or
    computed, so any size costs the same few milliseconds and no memory.
    """
    with torch.device("meta"):
        up = build_upsampler(name, channels, guide_channels=channels, scale_factor=scale).eval()
        x = torch.empty(1, channels, height, width)
        guide = torch.empty(1, channels, scale * height, scale * width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        up(x, guide)
    counts = counter.get_flop_counts().get("Global", {})
    params, weights = count_weights(up)
    row = Row(name=name, guided=is_guided(name), params=params, weights=weights,
              macs=counter.get_total_flops() // 2,
              counted_ops={str(op): int(n) for op, n in counts.items()})
    entry = TABLE1.get(name)
    if entry is not None and scale == 2:
        row.table1_macs = entry.macs_fn(channels) * height * width
        row.table1_weights = entry.params_fn(channels)
        row.table1_formula = entry.macs
    return row


def run(names, channels, height, width, scale):
    """``(rows, skipped)``: one ``Row`` per upsampler that runs at this size, and
    ``{name: reason}`` for those that refuse it (e.g. x2-only upsamplers at ``scale != 2``)."""
    rows, skipped = [], {}
    for name in names:
        try:
            rows.append(measure(name, channels, height, width, scale))
        except ValueError as err:  # the upsampler's own validation: say why, go on
            skipped[name] = str(err)
    return rows, skipped


# ---- output ----------------------------------------------------------------------------------

def _ops(row):
    return ", ".join(op.removeprefix("aten.") for op in sorted(row.counted_ops)) or "—"


def _m(value):
    return "—" if value is None else f"{value / 1e6:,.2f}"


def _ratio(value):
    return "—" if value is None else f"{value:.3f}"


def _int(value):
    return "—" if value is None else f"{value:,}"


def to_markdown(rows, skipped, config) -> str:
    head = ("| upsampler | params | weights | Table 1 weights | MMACs (measured) | "
            "MMACs (Table 1) | measured / Table 1 | Table 1 formula (× HW) | counted ops |")
    c, h, w, s = (config[key] for key in ("channels", "height", "width", "scale"))
    lines = [
        f"C={c}, x: 1x{c}x{h}x{w} -> {s * h}x{s * w}, guide: 1x{c}x{s * h}x{s * w}; "
        f"torch {config['torch']}",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {_int(r.params)} | {_int(r.weights)} | {_int(r.table1_weights)} | "
            f"{_m(r.macs)} | {_m(r.table1_macs)} | {_ratio(r.macs_ratio)} | "
            f"{r.table1_formula or '—'} | {_ops(r)} |")
    lines.append("")
    lines += [f"{i}. {note}" for i, note in enumerate(NOTES, 1)]
    lines += [f"- skipped {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines)


CSV_FIELDS = ("name", "guided", "params", "weights", "table1_weights", "weights_ratio", "macs",
              "table1_macs", "macs_ratio", "table1_formula", "counted_ops")


def to_csv(rows, skipped, config) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = r.as_dict()
        d["counted_ops"] = ";".join(f"{op}={n}" for op, n in sorted(r.counted_ops.items()))
        writer.writerow({k: "" if d[k] is None else d[k] for k in CSV_FIELDS})
    return buf.getvalue().rstrip("\n")


def to_json(rows, skipped, config) -> str:
    return json.dumps({"config": config, "unit": "multiply-adds (MACs) = FLOPs / 2",
                       "rows": [r.as_dict() for r in rows], "skipped": skipped,
                       "notes": list(NOTES)}, indent=2, ensure_ascii=False)


WRITERS = {"markdown": to_markdown, "csv": to_csv, "json": to_json}


# ---- command line ----------------------------------------------------------------------------

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channels", "-C", type=_positive_int, default=256,
                        help="C of x and of the guide (default 256)")
    parser.add_argument("--height", type=_positive_int, default=64, help="H of x (default 64)")
    parser.add_argument("--width", type=_positive_int, default=64, help="W of x (default 64)")
    parser.add_argument("--scale", type=_positive_int, default=2,
                        help="upsampling factor s; the guide is sH x sW (default 2; Table 1 is x2)")
    parser.add_argument("--format", choices=FORMATS, default="markdown")
    parser.add_argument("--names", nargs="+", metavar="NAME", choices=list_upsamplers(),
                        default=None, help="upsamplers to count (default: all registered)")
    model_flops.add_arguments(parser, _positive_int)  # --model segformer-b1: Table 2


def main(args: argparse.Namespace) -> int:
    if args.model is not None:
        return model_flops.main(args)
    names = args.names or list_upsamplers()
    config = {"channels": args.channels, "height": args.height, "width": args.width,
              "scale": args.scale, "batch": 1, "torch": torch.__version__}
    rows, skipped = run(names, args.channels, args.height, args.width, args.scale)
    print(WRITERS[args.format](rows, skipped, config))
    return 0
