"""The figures of ``sapa compare``, drawn from trained models (plotting lives in ``sapa.viz``)."""
from __future__ import annotations

import inspect
import os

import numpy as np
import torch
import torch.nn as nn

from .. import viz

PREDICTIONS_PNG = "predictions.png"
FEATURES_PNG = "features.png"
CURVES_PNG = "curves.png"


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
def capture_last_upsampling(model: nn.Module, image: torch.Tensor) -> dict:
    """Run ``model`` on ``image`` (``B x 3 x H x W``) and return what its last upsampling stage
    saw and made: ``{"x", "guide", "out", "kernels"}``; ``kernels`` is ``B x n x H' x W'``
    (``n = K*K`` for SAPA and CARAFE; all the kernel axes flattened for upsamplers with grouped
    or sampled kernels), or ``None`` if the upsampler has none. ``model`` must offer
    ``last_upsampler()``, as ``SegNet`` and ``FPN`` do."""
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


@torch.no_grad()
def predict(model: nn.Module, dataset, indices, device) -> list[np.ndarray]:
    model.eval()
    x = torch.stack([dataset[i][0] for i in indices]).to(device)
    return list(model(x).argmax(1).cpu().numpy())


def draw_all(out_dir: str, models: dict, curves: dict, dataset, class_names, ignore_index,
             device, num_samples: int = 4) -> list[str]:
    """Write the three PNGs into ``out_dir`` and return their paths.

    Args:
        models: upsampler name -> a trained model (first seed).
        curves: upsampler name -> list of per-seed training curves.
        dataset: the validation set (``raw_image(i)`` gives the picture of sample ``i``).
    """
    paths = []
    k = len(class_names)
    idx = list(range(min(num_samples, len(dataset))))
    images = [dataset.raw_image(i) for i in idx]
    labels = [dataset[i][1].numpy() for i in idx]
    if models:
        preds = {name: predict(m, dataset, idx, device) for name, m in models.items()}
        fig = viz.plot_predictions(images, labels, preds, class_names, ignore_index,
                                   title="validation predictions (first seed of each upsampler)")
        paths.append(viz.save_figure(fig, os.path.join(out_dir, PREDICTIONS_PNG)))

        entries = {}
        for name, m in models.items():
            cap = capture_last_upsampling(m, dataset[idx[0]][0][None].to(device))
            entries[name] = {
                "feature": viz.feature_rgb(cap["out"][0]),
                "kernel": None if cap["kernels"] is None else viz.kernel_map(cap["kernels"][0]),
            }
        fig = viz.plot_features(images[0], entries, viz.colorize(labels[0], k, ignore_index),
                                title="last upsampling stage: first 3 channels as RGB; "
                                      "kernel weight p=0 (top-left) per output point")
        paths.append(viz.save_figure(fig, os.path.join(out_dir, FEATURES_PNG)))
    if curves:
        fig = viz.plot_training_curves(curves)
        paths.append(viz.save_figure(fig, os.path.join(out_dir, CURVES_PNG)))
    return paths
