"""Monocular depth estimation (the paper's Table 4): BTS-style model, generated rooms with exact
depth or NYU Depth V2 as BTS lists it, BTS's loss and the standard per-image metrics.

``TASK`` is what ``sapa compare --task depth`` runs (``sapa.tasks.base.Task``)."""
from .loss import silog_loss
from .metrics import METRICS, DepthMeter, depth_errors, eigen_crop_mask
from .task import DepthTask

TASK = DepthTask()

__all__ = ["TASK", "DepthTask", "DepthMeter", "METRICS", "depth_errors", "eigen_crop_mask",
           "silog_loss"]
