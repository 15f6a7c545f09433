"""Object detection: Faster R-CNN (torchvision) with the FPN's upsampling swapped, COCO box AP
(pycocotools), the generated COCO-format set and the COCO 2017 layout.

Importing this package needs only torch; torchvision and pycocotools are imported when a
model is built or data is read (``pip install 'sapa[detection]'``).
"""
from .task import DetectionTask

TASK = DetectionTask()

__all__ = ["TASK", "DetectionTask"]
