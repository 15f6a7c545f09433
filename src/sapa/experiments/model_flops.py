"""``sapa flops --model segformer-b1``: parameters and multiply-adds of a whole SegFormer per
upsampler, beside SAPA's Table 2.

For each upsampler it builds ``sapa.models.SegFormer`` (MiT encoder + all-MLP head, 150
classes as ADE20K) and counts one forward pass on a ``1 x 3 x S x S`` image (``S = 512`` as
Table 2) with ``torch.utils.flop_counter`` (convolutions, linear layers, the attention's matrix
products, and ``torch.ops.sapa.*``; multiply-adds = its FLOPs / 2). The encoder is the same in
every row, so it is counted once and its output is fed to each upsampler's head: the total is
``encoder + head`` exactly (the final bilinear resize of the logits is not counted, as in
Table 2).

What Table 2 counts, checked against these numbers (``NOTES``, filled in with the measured
values):

- its GFLOPs are multiply-adds: SegFormer's ``tools/get_flops.py`` (mmcv 1.2.7's counter plus
  the attention's products, ``sra_flops``) also counts conv biases, BatchNorm (2 per element)
  and ReLU, but not LayerNorm (mmcv counts it only since 1.3, open-mmlab/mmcv#897) nor GELU;
  adding those terms to the counted multiply-adds of the bilinear model gives 15.91;
- its 13.74 M includes mmseg's ``conv_seg`` (``Conv2d(128, 150, 1)``, 19,350 weights), which
  the SegFormer head creates but never uses;
- its upsampler deltas are Table 1's per-module formulas times six stages.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ..models.segformer import MIT_SIZES, SegFormerHead, mit_encoder
from ..modules.factory import parse_upsampler_spec

MODELS = tuple(f"segformer-{s}" for s in MIT_SIZES)
FORMATS = ("markdown", "csv", "json")

# Table 2, SegFormer-B1 column: absolute for the baseline, deltas for the others
# (M parameters, "GFLOPs", which are G multiply-adds)
TABLE2_B1 = {
    "bilinear": (13.74, 15.91),
    "carafe": (0.44, 1.45),
    "indexnet-hin": (12.60, 30.65),
    "a2u": (0.06, 0.41),
    "sapa-i": (0.00, 0.75),
    "sapa-b": (0.10, 1.02),
    "sapa-g": (0.10, 1.02),
}
# mmseg's BaseDecodeHead.conv_seg: Conv2d(channels=128, 150, 1), built and counted, never used
MMSEG_CONV_SEG_PARAMS = 128 * 150 + 150

# upsampler specs: Table 2's rows, plus SAPA-G as the authors released it
DEFAULT_ROWS = ("bilinear", "carafe", "indexnet-hin", "a2u", "sapa-i", "sapa-b", "sapa-g",
                "sapa-g:decoder_query=official")


@dataclass
class ModelRow:
    label: str  # the spec
    upsampler: str  # its name
    options: dict  # its options
    params: int
    macs: int
    modules: int  # upsampler modules in the head
    params_per_module: int
    d_params: int = 0
    d_macs: int = 0
    table2_params: float | None = None  # M; absolute for the baseline, else the delta
    table2_gflops: float | None = None
    counted_ops: dict = field(default_factory=dict)

    def as_dict(self):
        return asdict(self)


@dataclass
class Baseline:
    """What the bilinear model's totals are made of, for the comparison with Table 2."""

    encoder_params: int
    encoder_macs: int
    mmcv_extra: dict  # elementwise terms mmcv 1.2.7's counter adds, by kind (ops)

    @property
    def mmcv_extra_total(self) -> int:
        return sum(self.mmcv_extra.values())


def mmcv_127_elementwise(model: nn.Module, run) -> dict:
    """The elementwise terms that mmcv 1.2.7's ``get_model_complexity_info`` adds to the
    multiply-adds while ``run()`` runs ``model``: conv biases (one per output element),
    ``BatchNorm2d`` (two per input element when affine) and ``ReLU`` (one per output element).
    Like that counter it matches module types exactly and knows neither ``LayerNorm`` nor
    ``GELU``."""
    extra = {"conv bias": 0, "batchnorm": 0, "relu": 0}

    def hook(module, args, out):
        kind = type(module)
        if kind is nn.Conv2d and module.bias is not None:
            extra["conv bias"] += out.numel()
        elif kind is nn.BatchNorm2d:
            extra["batchnorm"] += args[0].numel() * (2 if module.affine else 1)
        elif kind is nn.ReLU:
            extra["relu"] += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return extra


def _count(fn) -> tuple[int, dict, object]:
    """``(multiply-adds, {op: FLOPs}, fn())`` of one call of ``fn`` without gradients."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn()
    counts = counter.get_flop_counts().get("Global", {})
    return counter.get_total_flops() // 2, {str(op): int(n) for op, n in counts.items()}, out


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure(model: str = "segformer-b1", rows=DEFAULT_ROWS, image_size: int = 512,
            num_classes: int = 150) -> tuple[list[ModelRow], Baseline, dict]:
    """Count the model with every upsampler spec of ``rows`` (the first must be ``bilinear``,
    the baseline of the deltas). Returns ``(rows, baseline, skipped)``; ``skipped`` maps a
    spec to why its upsampler refused this model."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {model!r}")
    if not rows or rows[0] != "bilinear":
        raise ValueError("the first row must be the bilinear baseline (the deltas are to it)")
    if image_size < 32 or image_size % 32:
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
    size = model.removeprefix("segformer-")
    spec = MIT_SIZES[size]
    torch.manual_seed(0)
    encoder = mit_encoder(size).eval()
    image = torch.zeros(1, 3, image_size, image_size)
    enc_macs, enc_ops, out = _count(lambda: encoder(image, output_hidden_states=True))
    features = list(out.hidden_states)

    results, skipped, baseline = [], {}, None
    for label in rows:
        try:
            name, options = parse_upsampler_spec(label)
            head = SegFormerHead(spec.hidden_sizes, spec.decoder_dim, num_classes, label).eval()
        except (ValueError, TypeError) as err:
            skipped[label] = str(err)
            continue
        head_macs, head_ops, _ = _count(lambda h=head: h(features))
        ops = dict(enc_ops)
        for op, n in head_ops.items():
            ops[op] = ops.get(op, 0) + n
        ups = head.upsamplers
        row = ModelRow(label=label, upsampler=name, options=dict(options),
                       params=_n_params(encoder) + _n_params(head), macs=enc_macs + head_macs,
                       modules=len(ups), params_per_module=_n_params(ups[0]), counted_ops=ops)
        if baseline is None:
            extra = mmcv_127_elementwise(nn.ModuleList([encoder, head]), lambda h=head: h(
                list(encoder(image, output_hidden_states=True).hidden_states)))
            baseline = Baseline(_n_params(encoder), enc_macs, extra)
            base_row = row
        row.d_params, row.d_macs = row.params - base_row.params, row.macs - base_row.macs
        if size == "b1" and image_size == 512 and num_classes == 150:
            row.table2_params, row.table2_gflops = TABLE2_B1.get(name, (None, None))
        results.append(row)
    return results, baseline, skipped


def notes(rows: list[ModelRow], baseline: Baseline, config: dict) -> list[str]:
    """What the measured numbers say about Table 2's (filled in with the measured values)."""
    base = rows[0]
    out = [
        "MACs: multiply-adds, torch.utils.flop_counter's FLOPs / 2, one forward pass, batch 1: "
        "convolutions, linear layers, the attention's matrix products (eager attention) and "
        "the custom ops torch.ops.sapa.*. Not counted: elementwise ops, softmax, norms, "
        "interpolation, grid_sample. The encoder is counted once "
        f"({baseline.encoder_params:,} parameters, {baseline.encoder_macs / 1e9:.3f} GMACs) and "
        "its features are fed to each row's head.",
    ]
    if not (config["model"] == "segformer-b1" and config["image_size"] == 512
            and config["num_classes"] == 150):
        return out + ["Table 2's numbers are for segformer-b1, 512x512, 150 classes: not shown."]
    extra = baseline.mmcv_extra
    with_extra = base.macs + baseline.mmcv_extra_total
    out.append(
        f"Table 2's 15.91 GFLOPs are multiply-adds: the bilinear model counts "
        f"{base.macs / 1e9:.3f} GMACs here; SegFormer's get_flops (mmcv 1.2.7's counter plus "
        "sra_flops for the attention) also counts "
        + ", ".join(f"{k} {v / 1e9:.4f} G" for k, v in extra.items())
        + f" (LayerNorm and GELU it does not count), total {with_extra / 1e9:.3f} G.")
    out.append(
        f"Table 2's 13.74 M parameters include mmseg's unused conv_seg "
        f"(Conv2d(128, 150, 1), {MMSEG_CONV_SEG_PARAMS:,}): {base.params:,} + "
        f"{MMSEG_CONV_SEG_PARAMS:,} = {(base.params + MMSEG_CONV_SEG_PARAMS) / 1e6:.2f} M.")
    by = {r.label: r for r in rows}
    if "sapa-b" in by:
        r = by["sapa-b"]
        out.append(f"SAPA-B: {r.modules} modules x {r.params_per_module:,} = {r.d_params:,} "
                   f"(+{r.d_params / 1e6:.2f} M); +{r.d_macs / 1e9:.3f} GMACs = Table 1's "
                   "5Cd+4K²d+4K²C (C=256, d=32, K=5) summed over the six stages' low-res points.")
    if "sapa-g" in by:
        r = by["sapa-g"]
        text = (f"SAPA-G: Table 2 lists +0.10 M like SAPA-B, but Table 1's form has 2Cd+C weights "
                f"(the gate): {r.modules} x {r.params_per_module:,} = +{r.d_params / 1e6:.3f} M "
                f"(+{r.d_params / 1e6:.2f} rounded)")
        off = by.get("sapa-g:decoder_query=official")
        if off is not None:
            text += (f"; the released SAPA-G (separate decoder-query projection) has "
                     f"{off.params_per_module:,} per module, +{off.d_params / 1e6:.3f} M "
                     "(the authors' 2023 training log prints the same modules)")
        out.append(text + ".")
    if "sapa-i" in by:
        r = by["sapa-i"]
        out.append(f"SAPA-I: no projections; its {r.d_params:,} parameters are the LayerNorms' "
                   "affine weights, which Table 2 (+0.00) does not count.")
    low = [f"{label} {by[label].d_macs / 1e9:+.3f}" for label in ("indexnet-hin", "a2u")
           if label in by]
    if low:
        out.append("IndexNet and A2U: their elementwise products (index maps, affinities), which "
                   "Table 1 counts, are invisible to the counter, so their deltas ("
                   + ", ".join(low) + " GMACs) are slightly below Table 2's.")
    return out


# ---- output ----------------------------------------------------------------------------------

def _delta(v, scale, digits):
    return f"{v / scale:+,.{digits}f}"


def _t2(v, is_base):
    if v is None:
        return "—"
    return f"{v:.2f}" if is_base else f"+{v:.2f}"


def to_markdown(rows, baseline, skipped, config) -> str:
    head = ("| upsampler | params | Δ params (M) | Table 2 params (M) | GMACs | Δ GMACs | "
            "Table 2 GFLOPs | upsampler modules | params / module |")
    lines = [
        f"{config['model']}: MiT-{config['model'][-2:].upper()} + all-MLP head, "
        f"{config['num_classes']} classes, image 1x3x{config['image_size']}x{config['image_size']}; "
        f"torch {config['torch']}",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for i, r in enumerate(rows):
        base = i == 0
        lines.append(
            f"| {r.label} | {r.params:,} | {'—' if base else _delta(r.d_params, 1e6, 3)} | "
            f"{_t2(r.table2_params, base)} | {r.macs / 1e9:.3f} | "
            f"{'—' if base else _delta(r.d_macs, 1e9, 3)} | {_t2(r.table2_gflops, base)} | "
            f"{r.modules} | {r.params_per_module:,} |")
    lines.append("")
    lines += [f"{i}. {n}" for i, n in enumerate(notes(rows, baseline, config), 1)]
    lines += [f"- skipped {label}: {why}" for label, why in skipped.items()]
    return "\n".join(lines)


CSV_FIELDS = ("label", "upsampler", "params", "d_params", "table2_params", "macs", "d_macs",
              "table2_gflops", "modules", "params_per_module")


def to_csv(rows, baseline, skipped, config) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = r.as_dict()
        writer.writerow({k: "" if d[k] is None else d[k] for k in CSV_FIELDS})
    return buf.getvalue().rstrip("\n")


def to_json(rows, baseline, skipped, config) -> str:
    return json.dumps({
        "config": config, "unit": "multiply-adds (MACs) = FLOPs / 2",
        "rows": [r.as_dict() for r in rows], "skipped": skipped,
        "baseline": {**asdict(baseline), "mmcv_extra_total": baseline.mmcv_extra_total},
        "notes": notes(rows, baseline, config)}, indent=2, ensure_ascii=False)


WRITERS = {"markdown": to_markdown, "csv": to_csv, "json": to_json}


# ---- command line (through ``sapa flops --model``) -------------------------------------------

def _image_size(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 32 or value % 32:
        raise argparse.ArgumentTypeError(f"expected a positive multiple of 32, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser, positive_int) -> None:
    """The options ``sapa flops`` gets for whole models (``--format`` and ``--names`` are
    ``sapa flops``' own)."""
    g = parser.add_argument_group("whole model (Table 2)")
    g.add_argument("--model", choices=MODELS, default=None,
                   help="count a whole model per upsampler instead of the upsamplers alone "
                        "(segformer-b1 is Table 2's)")
    g.add_argument("--image-size", type=_image_size, default=512,
                   help="--model: side of the square input image, a multiple of 32 (default 512)")
    g.add_argument("--num-classes", type=positive_int, default=150,
                   help="--model: classes of the classifier (default 150, ADE20K)")


def main(args: argparse.Namespace) -> int:
    rows = DEFAULT_ROWS
    if args.names:
        names = ["bilinear", *[n for n in args.names if n != "bilinear"]]
        rows = tuple(names)
    config = {"model": args.model, "image_size": args.image_size,
              "num_classes": args.num_classes, "batch": 1, "torch": torch.__version__}
    measured, baseline, skipped = measure(args.model, rows, args.image_size, args.num_classes)
    print(WRITERS[args.format](measured, baseline, skipped, config))
    return 0
