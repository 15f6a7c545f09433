"""The segmentation figures of ``sapa compare``: predictions and the last upsampling stage's
features and kernels, drawn from trained models (plotting lives in ``sapa.viz``)."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn

PREDICTIONS_PNG = "predictions.png"
FEATURES_PNG = "features.png"


@torch.no_grad()
def predict_classes(model: nn.Module, dataset, indices, device) -> list[np.ndarray]:
    """``H x W`` class maps of ``model`` for the samples ``indices`` of ``dataset``."""
    model.eval()
    x = torch.stack([dataset[i][0] for i in indices]).to(device)
    return list(model(x).argmax(1).cpu().numpy())


def draw_figures(out_dir: str, models: dict, dataset, device, num_samples: int = 4) -> list[str]:
    """Write ``predictions.png`` and ``features.png`` into ``out_dir``; return their paths.

    Args:
        models: upsampler -> a trained model (first seed); nothing is drawn if empty.
        dataset: the validation set (``raw_image(i)`` gives the picture of sample ``i``;
            ``class_names``, ``ignore_index``).
    """
    from ... import viz

    if not models:
        return []
    k, ignore = len(dataset.class_names), dataset.ignore_index
    idx = list(range(min(num_samples, len(dataset))))
    images = [dataset.raw_image(i) for i in idx]
    labels = [dataset[i][1].numpy() for i in idx]
    preds = {name: predict_classes(m, dataset, idx, device) for name, m in models.items()}
    fig = viz.plot_predictions(images, labels, preds, dataset.class_names, ignore,
                               title="validation predictions (first seed of each upsampler)")
    paths = [viz.save_figure(fig, os.path.join(out_dir, PREDICTIONS_PNG))]

    entries = {}
    for name, m in models.items():
        cap = viz.capture_last_upsampling(m, dataset[idx[0]][0][None].to(device))
        entries[name] = {
            "feature": viz.feature_rgb(cap["out"][0]),
            "kernel": None if cap["kernels"] is None else viz.kernel_map(cap["kernels"][0]),
        }
    fig = viz.plot_features(images[0], entries, viz.colorize(labels[0], k, ignore),
                            title="last upsampling stage: first 3 channels as RGB; "
                                  "kernel weight p=0 (top-left) per output point")
    paths.append(viz.save_figure(fig, os.path.join(out_dir, FEATURES_PNG)))
    return paths
