"""``sapa export``: an upsampler, or a model trained by ``sapa compare``, to an ONNX file,
checked in ONNX Runtime against PyTorch.

Examples::

    sapa export --upsampler sapa-b --channels 64 --guide-channels 64 --out up.onnx
    sapa export --upsampler "sapa-g:kernel_size=3" --channels 128 --dtype float16 --out up16.onnx
    sapa export --checkpoint runs/compare/runs/sapa-b-seed0/checkpoint.pt --out model.onnx

An upsampler is exported with fresh weights (or ``--weights``, its state dict), inputs ``x``
(``B x C x H x W``) and, for a guided one, ``guide`` (``B x Cg x sH x sW``), output ``out``.
A checkpoint's model is rebuilt through its task (``sapa.tasks.get_task``) from the run
configuration and upsampler the checkpoint records, and exported with input ``image``
(matting: ``image_trimap``, ``B x 4 x H x W``). The batch
and the spatial sizes stay dynamic (``--static`` fixes them). Unless ``--no-check``, ONNX Runtime
then runs the file on the example input and on one of another batch and size (a guide of
``2H + 1`` where the upsampler takes any size) and compares with PyTorch within the documented
tolerance (``sapa.deploy.tolerance``); a disagreement exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ..errors import UsageError, check_installed
from ..modules import build_upsampler, is_guided

DESCRIPTION = "export an upsampler or a trained model to ONNX and check it in ONNX Runtime"
DTYPES = {"float32": torch.float32, "float16": torch.float16}
# input and output names of the models of each task (default: "image", "output")
TASK_INPUTS = {"matting": "image_trimap"}  # normalised RGB and trimap / 255, B x 4 x H x W
TASK_OUTPUTS = {"detection": ["boxes", "labels", "scores"], "depth": ["depth"],
                "matting": ["alpha"], "segmentation": ["logits"]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("\n\n", 1)[1]
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--upsampler", metavar="SPEC",
                      help="an upsampler name or spec of sapa.list_upsamplers() "
                           "(e.g. sapa-b or 'sapa-b:kernel_size=3')")
    what.add_argument("--checkpoint", metavar="PATH",
                      help="a sapa compare run's checkpoint.pt: export its trained model")
    p.add_argument("--out", required=True, help="the ONNX file to write")
    g = p.add_argument_group("--upsampler")
    g.add_argument("--channels", type=int, help="C, channels of x (required with --upsampler)")
    g.add_argument("--guide-channels", type=int, help="Cg, channels of the guide (default: C)")
    g.add_argument("--scale-factor", type=int, default=2,
                   help="s: the guide is s times x's size (default: %(default)s)")
    g.add_argument("--size", type=int, nargs=2, default=(16, 16), metavar=("H", "W"),
                   help="x's height and width in the example (default: 16 16)")
    g.add_argument("--weights", metavar="PATH", help="the upsampler's state dict (default: fresh)")
    g = p.add_argument_group("--checkpoint")
    g.add_argument("--results", metavar="PATH",
                   help="the comparison's results.json, for checkpoints that do not record their "
                        "run (default: two folders above the checkpoint)")
    g = p.add_argument_group("export")
    g.add_argument("--batch", type=int, default=2, help="example batch size (default: %(default)s)")
    g.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="(default: %(default)s)")
    g.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                   help="torch.onnx.export's dynamo=True (torch.export) or the TorchScript-based "
                        "exporter; auto: dynamo, but torchscript for torchvision's detectors, "
                        "which torch.export cannot trace (default: %(default)s)")
    g.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    g.add_argument("--static", action="store_true",
                   help="fix every size to the example's (default: batch and sizes dynamic)")
    g.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    g.add_argument("--threads", type=int, default=1,
                   help="torch and ONNX Runtime threads (default: %(default)s)")


def _positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be >= 1, got {value}")


def _check_args(args) -> None:
    for name in ("channels", "guide_channels", "scale_factor", "batch", "threads"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    for side in args.size:
        _positive("--size", side)
    if args.upsampler is not None and args.channels is None:
        raise UsageError("--upsampler needs --channels (C of x)")
    if args.checkpoint is not None:
        given = [o for o, v in (("--channels", args.channels), ("--guide-channels",
                 args.guide_channels), ("--weights", args.weights)) if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: options of --upsampler; a checkpoint's model "
                             "has its own")
    if not args.static and args.batch < 2:
        raise UsageError("--batch must be >= 2 for a dynamic batch (torch.export fixes size-1 "
                         "axes); pass --static to export batch 1 only")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise UsageError(f"--out: no such folder {parent}")


# ---- what to export: (model, example inputs, second inputs, axes, names) ---------------------

def _upsampler(args, dtype):
    from ..deploy import upsampler_axes

    try:
        up = build_upsampler(args.upsampler, args.channels, args.guide_channels,
                             scale_factor=args.scale_factor)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--upsampler {args.upsampler}: {exc}") from None
    if args.weights is not None:
        _load_weights(up, args.weights)
    up = up.to(dtype).eval()
    guided = is_guided(args.upsampler)
    cg = args.guide_channels or args.channels
    s = args.scale_factor
    any_size = guided and getattr(up, "guide_scale", None) is None

    def inputs(b, h, w, odd=False):
        x = torch.randn(b, args.channels, h, w, dtype=dtype)
        if not guided:
            return (x,)
        return x, torch.randn(b, cg, s * h + odd, s * w + odd, dtype=dtype)

    h, w = args.size
    example = inputs(args.batch, h, w)
    try:
        up(*example)
    except ValueError as exc:
        raise UsageError(f"--upsampler {args.upsampler}: {exc}") from None
    second = None if args.static else inputs(args.batch + 1, h + 1, w + 2, odd=any_size)
    axes = None if args.static else upsampler_axes(up, guided)
    names = ["x", "guide"][: len(example)]
    return up, example, second, axes, names, ["out"]


def _load_weights(up, path):
    if not os.path.isfile(path):
        raise UsageError(f"--weights: no such file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        up.load_state_dict(state)
    except Exception as exc:
        raise UsageError(f"--weights: {path} is not a state dict of this upsampler "
                         f"({type(exc).__name__}: {exc})") from None


def _checkpoint(args, dtype):
    from ..deploy import Axis, image_axes
    from .checkpoints import load_checkpoint_run

    run = load_checkpoint_run(args.checkpoint, args.results)
    model = run.model.to(dtype).eval()
    example = run.task.example_input(run.config, torch.device("cpu"))
    print(f"sapa export: {run.task.name} model {type(model).__name__} with {run.upsampler} "
          f"(seed {run.seed}) from {args.checkpoint}", flush=True)
    outputs = TASK_OUTPUTS.get(run.task.name, ["output"])
    names = [TASK_INPUTS.get(run.task.name, "image")]
    if isinstance(example, torch.Tensor):  # one B x 3 x H x W image batch
        _, c, h, w = example.shape
        stride = int(getattr(model, "stride", 1))

        def inputs(b, dh=0):
            return (torch.rand(b, c, h + dh, w, dtype=dtype),)

        axes = None if args.static else image_axes(model)
        second = None if args.static else inputs(args.batch + 1, stride)
        return model, inputs(args.batch), second, axes, names, outputs
    if isinstance(example, list) and len(example) == 1:  # torchvision's detectors: [image]
        c, h, w = example[0].shape

        def inputs(dh=0, dw=0):
            return ([torch.rand(c, h + dh, w + dw, dtype=dtype)],)

        axes = None if args.static else [{1: Axis("height"), 2: Axis("width")}]
        second = None if args.static else inputs(16, -8)
        return model, inputs(), second, axes, names, outputs
    raise UsageError(f"the {run.task.name} task's example input is neither an image batch nor "
                     "a list of one image; sapa export cannot export its model")


def _exporter(args, example) -> str:
    if args.exporter != "auto":
        return args.exporter
    # torchvision's detectors take a list of images and branch on data-dependent sizes in
    # their post-processing, which torch.export cannot trace
    return "torchscript" if isinstance(example[0], list) else "dynamo"


def _describe(proto) -> str:
    def dims(v):
        return "x".join(str(d.dim_param or d.dim_value) for d in v.type.tensor_type.shape.dim)

    ins = ", ".join(f"{v.name} {dims(v)}" for v in proto.graph.input)
    outs = ", ".join(f"{v.name} {dims(v)}" for v in proto.graph.output)
    return f"inputs {ins}; outputs {outs}; {len(proto.graph.node)} nodes, opset " + \
        ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)


def _shapes(inputs) -> str:
    from ..deploy.onnx import _tensors

    return ", ".join("x".join(map(str, t.shape)) for t in _tensors(inputs))


def main(args: argparse.Namespace) -> int:
    try:
        _check_args(args)
        check_installed("onnx", "onnxscript", "onnxruntime", needed_for="sapa export",
                        extra="export")
        torch.set_num_threads(args.threads)
        dtype = DTYPES[args.dtype]
        torch.manual_seed(0)
        build = _upsampler if args.upsampler is not None else _checkpoint
        model, example, second, axes, names, outputs = build(args, dtype)
    except UsageError as exc:
        print(f"sapa export: error: {exc}", file=sys.stderr)
        return 2
    from ..deploy import check_onnx, export_onnx, onnx_session

    exporter = _exporter(args, example)
    tic = time.perf_counter()
    try:
        proto = export_onnx(model, example, args.out, axes=axes, input_names=names,
                            output_names=outputs, exporter=exporter, opset=args.opset)
    except (TypeError, ValueError) as exc:  # raised by the checks, before the exporter runs
        print(f"sapa export: error: {exc}", file=sys.stderr)
        return 2
    size = os.path.getsize(args.out) / 2**20
    print(f"sapa export: wrote {args.out} ({size:.2f} MiB, {exporter} exporter, "
          f"{time.perf_counter() - tic:.1f} s): {_describe(proto)}", flush=True)
    if args.no_check:
        return 0
    session = onnx_session(args.out, args.threads)
    ok = True
    for inputs in (example, second):
        if inputs is None:
            continue
        parity = check_onnx(model, session, inputs, strict=False)
        ok = ok and parity.ok
        print(f"sapa export: ONNX Runtime vs PyTorch on {_shapes(inputs)}: {parity}", flush=True)
    return 0 if ok else 1
