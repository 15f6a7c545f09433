"""ONNX export of upsamplers and of models that contain them.

``torch.onnx.export`` itself does the work: while it traces, the ops ``sapa.sapa_attention``,
``local_similarity``, ``local_assemble`` and ``sampled_attention`` trace a plain-PyTorch
formulation (``sapa.ops._onnx``) instead of their custom ops, so the file holds standard ONNX
operators only. This module adds what a deployment needs around it:

- dynamic axes, described once (:class:`Axis`) for both exporters: the batch and the spatial
  sizes of an upsampler's ``x`` and ``guide`` (``upsampler_axes``: independent sizes where the
  upsampler takes any guide size, ``H' = sH`` where it needs exactly that) or of a model's image
  (``image_axes``: multiples of the model's ``stride``);
- eval mode and no gradients while exporting (the training state is restored afterwards);
- checks before any work: a dtype ONNX Runtime's CPU provider runs (``float32``, ``float16``),
  an opset the exporter supports, the packages installed;
- failures of the exporter annotated with what to do.
"""
from __future__ import annotations

import importlib.util
import inspect
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

EXPORTERS = ("dynamo", "torchscript")
# the lowest opset each exporter is used with here: the torch.export-based exporter translates
# to opset 18 and up; GridSample (dysample, sapa-d) needs 16
MIN_OPSET = {"dynamo": 18, "torchscript": 16}
# dtypes whose models ONNX Runtime's CPU provider runs (bfloat16 and float64: not every op)
DTYPES = (torch.float32, torch.float16)
EXTRA = 'pip install "sapa[export]"'

# the exporter's error when code branches on a value it cannot know while tracing
_DATA_DEPENDENT = ("GuardOnDataDependentSymNode", "data-dependent")


@dataclass(frozen=True)
class Axis:
    """A dynamic axis of an exported input: its size is ``multiple`` times a symbol ``name``.

    Axes with the same ``name`` share the symbol: ``x``'s height ``Axis("height")`` and a
    guide that must be twice as high, ``Axis("height", 2)``; an image whose sides must be
    multiples of 32, ``Axis("height_div32", 32)``. The TorchScript-based exporter records names
    only (``"2*height"``), not the relation.
    """

    name: str
    multiple: int = 1

    def label(self) -> str:
        return self.name if self.multiple == 1 else f"{self.multiple}*{self.name}"


def upsampler_axes(up: nn.Module, guided: bool = True) -> list[dict[int, Axis]]:
    """Dynamic axes of an upsampler's inputs ``(x, guide)`` (``(x,)`` when not ``guided``):
    batch, height and width of ``x``; the guide's batch is ``x``'s, its spatial sizes are free
    (``guide_height``, ``guide_width``: any ``H' >= H``, e.g. ``2H + 1``) unless the upsampler
    needs exactly ``s`` times ``x``'s (its ``guide_scale``: ``a2u``, ``indexnet-*``, ``sapa-d``
    with ``high_offset``, the fixed-factor guide-free ones)."""
    batch = Axis("batch")
    x = {0: batch, 2: Axis("height"), 3: Axis("width")}
    if not guided:
        return [x]
    s = getattr(up, "guide_scale", None)
    if s is None:
        guide = {0: batch, 2: Axis("guide_height"), 3: Axis("guide_width")}
    else:
        guide = {0: batch, 2: Axis("height", s), 3: Axis("width", s)}
    return [x, guide]


def image_axes(model: nn.Module) -> list[dict[int, Axis]]:
    """Dynamic axes of a model's single ``B x C x H x W`` image input: the batch, and ``H``,
    ``W`` as multiples of ``model.stride`` (SegNet, FPN, SegFormer, BTS and A2U's matting
    network take only those)."""
    stride = int(getattr(model, "stride", 1))
    return [{0: Axis("batch"), 2: Axis(f"height_div{stride}", stride),
             3: Axis(f"width_div{stride}", stride)}]


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def check_export_dtype(model: nn.Module, args) -> torch.dtype:
    """The one floating-point dtype of ``model``'s parameters and buffers and of the tensors in
    ``args``: ``float32`` or ``float16``, else ``TypeError`` saying what to do."""
    named = [(f"parameter {n}", t) for n, t in model.named_parameters()]
    named += [(f"buffer {n}", t) for n, t in model.named_buffers()]
    named += [(f"input {i}", t) for i, t in enumerate(_tensors(args))]
    dtypes = {t.dtype for _, t in named if t.is_floating_point()}
    if not dtypes:
        return torch.float32
    if len(dtypes) > 1:
        listed = ", ".join(f"{n}: {t.dtype}" for n, t in named if t.is_floating_point()
                           and t.dtype != torch.float32)[:300]
        raise TypeError(f"the model and its example inputs must share one dtype to export, got "
                        f"{sorted(map(str, dtypes))} ({listed}); convert both, e.g. "
                        "model.half() and x.half()")
    (dtype,) = dtypes
    if dtype not in DTYPES:
        raise TypeError(f"ONNX Runtime's CPU provider runs float32 and float16 models, not "
                        f"{dtype}: export model.float() (or .half()) with inputs of that dtype")
    return dtype


def _require(*packages: str, needed_for: str) -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(f"{needed_for} needs {', '.join(missing)}, not installed: {EXTRA}")


def _input_names(model: nn.Module, n: int, names) -> list[str]:
    if names is not None:
        names = list(names)
        if len(names) != n:
            raise ValueError(f"input_names must name the {n} example inputs, got {names}")
        return names
    params = [p.name for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return (params + [f"input{i}" for i in range(len(params), n)])[:n]


def _single(t):
    """The tensor an axes entry describes: the input itself, or the one tensor of a list input
    (torchvision's detectors take a list of images)."""
    if isinstance(t, (list, tuple)) and len(t) == 1:
        return t[0]
    return t


def _dynamic_shapes(axes, args):
    """``torch.export`` dynamic shapes (one entry per argument) from :class:`Axis` dicts."""
    dims: dict[str, torch.export.Dim] = {}

    def dim(axis: Axis):
        base = dims.setdefault(axis.name, torch.export.Dim(axis.name, min=1))
        return base * axis.multiple if axis.multiple != 1 else base

    shapes = []
    for a, t in zip(axes, args):
        spec = None if a is None else {i: dim(ax) for i, ax in a.items()}
        shapes.append([spec] if isinstance(t, (list, tuple)) else spec)
    return tuple(shapes)


def _check_axes(axes, args) -> None:
    if len(axes) != len(args):
        raise ValueError(f"axes must hold one entry (a dict or None) per example input: "
                         f"{len(args)} inputs, {len(axes)} entries")
    for i, (a, t) in enumerate(zip(axes, args)):
        if a is None:
            continue
        t = _single(t)
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"axes[{i}]: dynamic axes need a tensor input (or a list of one "
                             f"tensor), got {type(t).__name__}; give None for it")
        for ax, spec in a.items():
            if not isinstance(spec, Axis) or not 0 <= ax < t.dim():
                raise ValueError(f"axes[{i}] maps axes of a {t.dim()}-D input to Axis, got "
                                 f"{ax}: {spec!r}")
            if t.shape[ax] % spec.multiple:
                raise ValueError(f"input {i} has size {t.shape[ax]} on axis {ax}, not a multiple "
                                 f"of {spec.multiple} as its Axis {spec.label()!r} says")
            if t.shape[ax] // spec.multiple < 2:
                # torch.export specialises sizes 0 and 1: the axis would not stay dynamic
                raise ValueError(f"input {i}: axis {ax} ({spec.label()}) is dynamic, so its "
                                 f"example size must be at least {2 * spec.multiple}, got "
                                 f"{t.shape[ax]}")


def export_onnx(model: nn.Module, args: Sequence, path: str | os.PathLike | None = None, *,
                axes: Sequence | None = None, input_names: Sequence[str] | None = None,
                output_names: Sequence[str] | None = None, exporter: str = "dynamo",
                opset: int | None = None):
    """Export ``model(*args)`` to ONNX; return the ``onnx.ModelProto`` (and write it to ``path``).

    Args:
        model: any module; exported in eval mode, without gradients (its mode is restored).
        args: example inputs, positional (tensors, or lists of tensors for torchvision's
            detectors); one dtype with the model, ``float32`` or ``float16``.
        axes: one entry per input: ``{axis: Axis}`` for its dynamic axes (of the input, or of
            the one tensor of a list input), or ``None`` (static).
            ``None`` for all: every size is fixed to the example's. See ``upsampler_axes``,
            ``image_axes``. A dynamic axis needs an example size of at least 2 (times its
            multiple): ``torch.export`` fixes sizes 0 and 1.
        input_names: default: the names of ``model.forward``'s parameters.
        output_names: default: the exporter's.
        exporter: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, built on ``torch.export``:
            the one to use) or ``"torchscript"`` (the older tracer; the one torchvision's
            detectors export with, their post-processing branching on data-dependent sizes).
        opset: ONNX opset (default: the exporter's); at least 18 for ``"dynamo"`` and 16 for
            ``"torchscript"`` (GridSample).

    Raises:
        TypeError: a dtype other than ``float32`` / ``float16``, or mixed dtypes.
        ValueError: bad ``axes``, ``exporter``, ``opset`` or ``input_names``.
        ImportError: ``onnx`` / ``onnxscript`` missing (``pip install "sapa[export]"``).
        The exporter's own error, with a note on what to do, when it fails.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int)
                              or opset < MIN_OPSET[exporter]):
        raise ValueError(f"opset must be an int >= {MIN_OPSET[exporter]} for exporter "
                         f"{exporter!r}, got {opset!r}")
    args = tuple(args)
    axes = [None] * len(args) if axes is None else list(axes)
    _check_axes(axes, args)
    check_export_dtype(model, args)
    _require("onnx", *(("onnxscript",) if exporter == "dynamo" else ()),
             needed_for="ONNX export")
    import onnx

    names = _input_names(model, len(args), input_names)
    outputs = None if output_names is None else list(output_names)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # one Dim shared by several inputs (the batch) is named once; torch warns for the rest
            warnings.filterwarnings("ignore", message=r".*will not be used, since it shares")
            if exporter == "dynamo":
                program = torch.onnx.export(
                    model, args, dynamo=True, input_names=names, output_names=outputs,
                    opset_version=opset, dynamic_shapes=_dynamic_shapes(axes, args),
                    verbose=False)
                proto = program.model_proto
            else:
                dynamic = {n: {i: ax.label() for i, ax in a.items()}
                           for n, a in zip(names, axes) if a is not None}
                buf = io.BytesIO()
                torch.onnx.export(model, args, buf, dynamo=False, input_names=names,
                                  output_names=outputs, opset_version=opset or 17,
                                  dynamic_axes=dynamic or None, verbose=False)
                proto = onnx.load_from_string(buf.getvalue())
    except Exception as exc:
        exc.add_note(_advice(exc, model, exporter))
        raise
    finally:
        model.train(was_training)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def _advice(exc: BaseException, model: nn.Module, exporter: str) -> str:
    text, cause = "", exc
    while cause is not None:
        text += f"{type(cause).__name__}: {cause}\n"
        cause = cause.__cause__ or cause.__context__
    name = type(model).__name__
    if exporter == "dynamo" and any(s in text for s in _DATA_DEPENDENT):
        return (f"sapa: the torch.export-based exporter cannot trace {name}: it branches on a "
                "value known only when the model runs (torchvision's detectors do, in their "
                "post-processing). Export it with exporter='torchscript' (sapa export "
                "--exporter torchscript), the exporter torchvision supports for its detectors.")
    return (f"sapa: exporting {name} with the {exporter!r} exporter failed. Every upsampler of "
            "sapa.list_upsamplers() exports (docs/deployment.md); if the failure is elsewhere in "
            "the model, try the other exporter, or export with static sizes (axes=None).")


def export_upsampler(up: nn.Module, x: torch.Tensor, guide: torch.Tensor | None = None,
                     path: str | os.PathLike | None = None, *, dynamic: bool = True,
                     exporter: str = "dynamo", opset: int | None = None):
    """Export the upsampler ``up`` called as ``up(x, guide)`` (or ``up(x)`` without a guide):
    inputs ``x`` (and ``guide``), output ``out``; with ``dynamic``, the axes of
    ``upsampler_axes``. Returns the ``onnx.ModelProto`` (see ``export_onnx``)."""
    guided = guide is not None
    args = (x, guide) if guided else (x,)
    return export_onnx(up, args, path, axes=upsampler_axes(up, guided) if dynamic else None,
                       input_names=["x", "guide"][: len(args)], output_names=["out"],
                       exporter=exporter, opset=opset)
