"""What a model's last upsampling stage saw and made, captured with a forward hook (for the
feature and kernel figures)."""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn


def upsampler_kernels(up: nn.Module, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor | None:
    """``up.kernels(x, guide)`` (or ``up.kernels(x)`` for guide-free ones): ``B x K*K x H' x W'``;
    ``None`` for upsamplers without dynamic kernels."""
    fn = getattr(up, "kernels", None)
    if fn is None:
        return None
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    with torch.no_grad():
        return fn(x, guide) if len(params) >= 2 else fn(x)


@torch.no_grad()
def capture_last_upsampling(model: nn.Module, image) -> dict:
    """Run ``model`` on ``image`` (what ``model`` takes, e.g. ``B x 3 x H x W``) and return what
    its last upsampling stage saw and made: ``{"x", "guide", "out", "kernels"}``; ``kernels``
    is ``B x n x H' x W'`` (``n = K*K`` for SAPA and CARAFE; all the kernel axes flattened for
    upsamplers with grouped or sampled kernels), or ``None`` if the upsampler has none.
    ``model`` must offer ``last_upsampler()``, as ``SegNet`` and ``FPN`` do."""
    up = model.last_upsampler()
    seen = {}

    def hook(module, args, output):
        seen["x"], seen["guide"] = args[0], args[1] if len(args) > 1 else None
        seen["out"] = output

    handle = up.register_forward_hook(hook)
    try:
        was_training = model.training
        model.eval()
        model(image)
        model.train(was_training)
    finally:
        handle.remove()
    if "out" not in seen:
        raise RuntimeError("the model's last_upsampler() was not called in forward")
    k = upsampler_kernels(up, seen["x"], seen["guide"])
    # B x K*K x H' x W' for most; grouped or sampled kernels have more axes: flatten them
    seen["kernels"] = None if k is None else k.reshape(k.shape[0], -1, *k.shape[-2:])
    return seen
