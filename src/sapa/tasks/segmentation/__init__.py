"""Semantic segmentation: the generated default set, ADE20K / Pascal VOC folders, metrics, and
the ``sapa compare --task segmentation`` task (``TASK``)."""
from .folders import FolderSegmentation, detect_layout
from .metrics import (
                      SegmentationMeter,
                      boundary_counts,
                      boundary_dilation,
                      confusion_matrix,
                      mask_boundary,
                      mean_iou,
                      pixel_accuracy,
)
from .synthetic import SyntheticSegmentation
from .task import TASK, SegmentationTask

__all__ = [
    "SyntheticSegmentation", "FolderSegmentation", "detect_layout", "SegmentationMeter",
    "confusion_matrix", "mean_iou", "pixel_accuracy", "boundary_counts", "boundary_dilation",
    "mask_boundary", "SegmentationTask", "TASK",
]
