"""The dtype rules of every op and backend, in one place.

- ``compute_dtype``: what a backend accumulates in, and the dtype of the per-point statistic
  the forward keeps for the backward: ``float64`` for ``float64`` inputs, ``float32`` for
  ``float32``, ``float16`` and ``bfloat16`` inputs (results are rounded once, to the inputs'
  dtype).
- ``autocast_inputs``: the ops' policy under ``torch.autocast``. They run in the autocast dtype,
  like a convolution: ``float32``, ``float16`` and ``bfloat16`` inputs on a device where autocast
  is enabled are cast to ``torch.get_autocast_dtype(device)`` (``float64`` ones are left alone,
  as autocast leaves them), then the op runs with autocast disabled, computing in float32 as
  for any half-precision input. Outside autocast nothing is cast, and inputs of mixed dtypes are
  an error.
"""
from __future__ import annotations

import torch

_CASTABLE = (torch.float32, torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation (and statistic) dtype for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def autocast_device(*tensors) -> str | None:
    """The device type of the first tensor among ``tensors`` on which autocast is enabled."""
    for t in tensors:
        if isinstance(t, torch.Tensor):
            device = t.device.type
            if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
                return device
    return None


def autocast_inputs(device: str, *tensors):
    """``tensors`` cast to the autocast dtype of ``device`` (see the module docstring); anything
    that is not a floating-point tensor of a castable dtype on ``device`` passes unchanged, for
    the argument checks to name."""
    dtype = torch.get_autocast_dtype(device)
    return tuple(
        t.to(dtype) if isinstance(t, torch.Tensor) and t.device.type == device
        and t.dtype in _CASTABLE else t
        for t in tensors)


def apply_autocast_policy(op, tensors, *args):
    """``op(*tensors, *args)`` under the autocast policy above: outside autocast as is; inside,
    on the inputs cast to the autocast dtype and with autocast disabled (so that neither the
    reference nor a backend has its internal arithmetic recast)."""
    device = autocast_device(*tensors)
    if device is None:
        return op(*tensors, *args)
    with torch.autocast(device, enabled=False):
        return op(*autocast_inputs(device, *tensors), *args)
