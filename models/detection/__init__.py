"""Detectors (registered on import)."""

from models.detection import faster_rcnn, fcos, sliding_window  # noqa: F401
