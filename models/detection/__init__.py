"""Detectors (registered on import)."""

from models.detection import fcos  # noqa: F401
