"""Semantic and instance segmentation models (registered on import)."""

from models.segmentation import deeplabv3, fcn, mask_rcnn, unet  # noqa: F401
