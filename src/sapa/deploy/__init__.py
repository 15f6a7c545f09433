"""Deployment: upsamplers and models with sapa upsamplers, exported to ONNX and checked in
ONNX Runtime.

- ``export_onnx(model, args, path)``: ``torch.onnx.export`` in eval mode and without gradients,
  with the batch and the spatial sizes left dynamic (``upsampler_axes`` / ``image_axes`` say
  how), by the ``torch.export``-based exporter (default) or the TorchScript-based one.
- ``export_upsampler(up, x, guide, path)``: the same for one upsampler, with its inputs named
  ``x`` and ``guide`` and its output ``out``.
- ``onnx_session``, ``run_onnx``, ``check_onnx``: run an exported model in ONNX Runtime (CPU)
  and compare it with PyTorch within ``tolerance(dtype)``.

The custom ops ``torch.ops.sapa.*`` reach the ONNX file as standard ONNX operators
(``sapa.ops._onnx``), so plain ``torch.onnx.export`` works too; these helpers add the dynamic
axes, the checks and the errors that say what to do. ``onnx``, ``onnxscript`` and
``onnxruntime`` are imported when used: ``pip install "sapa[export]"``. See
``docs/deployment.md``.
"""
from .onnx import EXPORTERS, Axis, export_onnx, export_upsampler, image_axes, upsampler_axes
from .runtime import Tolerance, check_onnx, onnx_session, run_onnx, tolerance

__all__ = ["EXPORTERS", "Axis", "export_onnx", "export_upsampler", "image_axes",
           "upsampler_axes", "Tolerance", "tolerance", "check_onnx", "onnx_session", "run_onnx"]
