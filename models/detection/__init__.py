"""Detectors (registered on import)."""

from models.detection import fast_rcnn, faster_rcnn, fcos, rcnn, sliding_window  # noqa: F401
