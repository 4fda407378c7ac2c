"""Detectors (registered on import)."""

from models.detection import (  # noqa: F401
    cornernet,
    fast_rcnn,
    faster_rcnn,
    fcos,
    rcnn,
    retinanet,
    sliding_window,
    ssd,
    yolo_v1,
)
