"""Run an exported model in ONNX Runtime (CPU) and compare it with PyTorch.

Parity is checked element-wise, ``|onnx - torch| <= atol + rtol * |torch|`` (``numpy.isclose``),
against the PyTorch model in eval mode on the same inputs, with the tolerance of the dtype
(``tolerance``):

- ``float32``: ``rtol = 1e-4, atol = 1e-5``. The measured differences are float32 rounding
  (summation order): ``0 .. 8e-6`` on unit-scale inputs (``benchmarks/onnx_parity.py``,
  docs/deployment.md).
- ``float16``: ``rtol = atol = 1e-2``, against the model's float32 copy (the same weights and
  inputs, widened): a float16 result carries its rounding (``2^-11`` relative per operation),
  whichever runtime computes it, so both PyTorch's and ONNX Runtime's float16 outputs are
  judged against the float32 one. ``dysample`` (positions rounded to float16) and ``sapa-i``
  come closest to the bound (about ``1e-2``; PyTorch's own float16 DySample is further off).

Integer outputs (a detector's labels) must be equal.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .onnx import _require, _tensors, check_export_dtype


@dataclass(frozen=True)
class Tolerance:
    """``|onnx - torch| <= atol + rtol * |torch|``, element-wise."""

    rtol: float
    atol: float


TOLERANCES = {
    torch.float32: Tolerance(rtol=1e-4, atol=1e-5),
    torch.float16: Tolerance(rtol=1e-2, atol=1e-2),
}


def tolerance(dtype: torch.dtype) -> Tolerance:
    """The documented parity tolerance of models of ``dtype`` (module docstring)."""
    if dtype not in TOLERANCES:
        raise ValueError(f"no tolerance for {dtype}: exported models are float32 or float16")
    return TOLERANCES[dtype]


def onnx_session(model, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU provider for ``model`` (a path, the bytes
    of a model, or an ``onnx.ModelProto``), with ``threads`` intra-op threads (and one
    inter-op thread)."""
    _require("onnxruntime", needed_for="running an ONNX model")
    import onnxruntime as ort

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_onnx(session, *args) -> list[np.ndarray]:
    """Run ``session`` on ``args`` (tensors, or lists of tensors, flattened in order onto the
    session's inputs); its outputs as numpy arrays."""
    arrays = [t.detach().cpu().numpy() for t in _tensors(args)]
    inputs = session.get_inputs()
    if len(arrays) != len(inputs):
        raise ValueError(f"the ONNX model takes {len(inputs)} inputs "
                         f"({', '.join(i.name for i in inputs)}), got {len(arrays)} tensors")
    return session.run(None, {i.name: a for i, a in zip(inputs, arrays)})


@dataclass(frozen=True)
class Parity:
    """The outcome of ``check_onnx``: the largest absolute difference, the largest excess
    ``|onnx - torch| / (atol + rtol |torch|)`` (at most 1 when within tolerance), and whether
    every element is within tolerance."""

    max_abs: float
    max_ratio: float
    tolerance: Tolerance
    ok: bool

    def __str__(self) -> str:
        verdict = "within" if self.ok else "OUTSIDE"
        tol = self.tolerance
        return (f"max |onnx - torch| = {self.max_abs:.3g}, {verdict} rtol={tol.rtol:g}, "
                f"atol={tol.atol:g} (worst element at {self.max_ratio:.3g} of its bound)")


def _reference(model: nn.Module, args, dtype: torch.dtype) -> list[np.ndarray]:
    """``model(*args)`` in eval mode, no grad, in float32 (a float16 model through its float32
    copy), flattened to numpy arrays."""
    if dtype == torch.float16:
        model = copy.deepcopy(model).float()
        args = _widen(args)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*args)
    finally:
        model.train(was_training)
    return [t.detach().cpu().numpy() for t in _tensors(out)]


def _widen(obj):
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_widen(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _widen(v) for k, v in obj.items()}
    return obj


def check_onnx(model: nn.Module, onnx_model, args, *, tol: Tolerance | None = None,
               threads: int = 1, strict: bool = True) -> Parity:
    """Run ``onnx_model`` (path, bytes, ``ModelProto`` or an ``InferenceSession``) on ``args``
    and compare its outputs with ``model(*args)``'s (module docstring).

    Args:
        tol: default ``tolerance(dtype)`` of the model's dtype.
        strict: raise ``AssertionError`` (with the numbers) when outside the tolerance.
    """
    dtype = check_export_dtype(model, args)
    tol = tol or tolerance(dtype)
    session = onnx_model if hasattr(onnx_model, "run") else onnx_session(onnx_model, threads)
    got = run_onnx(session, *args)
    want = _reference(model, args, dtype)
    if len(got) != len(want):
        raise AssertionError(f"the ONNX model returned {len(got)} outputs, PyTorch {len(want)}")
    max_abs, max_ratio, ok = 0.0, 0.0, True
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            raise AssertionError(f"output {i}: ONNX shape {g.shape}, PyTorch shape {w.shape}")
        if not np.issubdtype(w.dtype, np.floating):
            if not np.array_equal(g, w):
                ok, max_ratio = False, float("inf")
            continue
        g, w = g.astype(np.float64), w.astype(np.float64)
        if g.size == 0:
            continue
        # equal values (infinities included) and NaN against NaN agree; a NaN on one side only
        # does not
        agree = (g == w) | (np.isnan(g) & np.isnan(w))
        with np.errstate(invalid="ignore"):
            diff = np.where(agree, 0.0, np.abs(g - w))
        diff = np.where(np.isnan(diff), np.inf, diff)
        bound = tol.atol + tol.rtol * np.where(np.isfinite(w), np.abs(w), 0.0)
        max_abs = max(max_abs, float(diff.max()))
        max_ratio = max(max_ratio, float((diff / bound).max()))
    ok = ok and max_ratio <= 1.0
    parity = Parity(max_abs, max_ratio, tol, ok)
    if strict and not ok:
        raise AssertionError(f"ONNX Runtime and PyTorch disagree: {parity}")
    return parity
