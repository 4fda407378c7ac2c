"""Image normalisation and window cropping: what the pretrained bodies and the crop-based detectors share.

torchvision's normalisation (GeneralizedRCNNTransform and ImageNet classifiers): a body pretrained as a
crop classifier (:mod:`models.parts.pretrain`) sees its inputs scaled the same way in pretraining and in
every detector.
"""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import roi_align

IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]


def normalize(images: Tensor) -> Tensor:
    """[0, 1] RGB (... x 3 x H x W) -> zero-mean unit-variance channels, as torchvision's detectors do."""
    mean = images.new_tensor(IMAGE_MEAN)[:, None, None]
    std = images.new_tensor(IMAGE_STD)[:, None, None]
    return (images - mean) / std


def crop_windows(image: Tensor, boxes: Tensor, crop_size: int) -> Tensor:
    """Warp the ``boxes`` (N x 4, xyxy pixels) of one image (3 x H x W) to N x 3 x crop_size x crop_size.

    RoI Align with pixel-aligned boxes and adaptive sampling averages ceil(box / crop) samples per output
    pixel: a window twice the crop size gives exactly the 2 x 2 average pooling of the window.
    """
    return roi_align(image[None], [boxes.to(image.dtype)], (crop_size, crop_size), 1.0, -1, aligned=True)
