"""FCOS: Fully Convolutional One-Stage detection (Tian et al., ICCV 2019).

Anchor-free: every FPN location inside a box (centre sampling, Sec. 3.1) regresses its distances to
the box's four sides, with a centre-ness branch that down-weights far-from-centre locations (Sec. 3.3).
torchvision's FCOS (head, focal/GIoU/centre-ness losses, decoding) composed with our backbones; the
embedded dataset's baseline detector, because it trains fastest on a CPU.

Two details follow the paper rather than torchvision's defaults: a location (x, y) of a level of stride
s sits at (floor(s/2) + x s, floor(s/2) + y s) in the image (Sec. 3.1; torchvision's ``AnchorGenerator``
puts it at (x s, y s)), and the classifier is K sigmoids, one per class, without a background column
(Sec. 3.1: C binary classifiers); torchvision's FCOS sees labels 0..K-1 (``foreground_classifier``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torchvision
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator

from models.detection.torchvision_detector import TorchvisionDetector
from models.parts.backbones import build_backbone
from models.registry import register_model


class FCOSLocations(AnchorGenerator):
    """One square of side s per location of each level (s: the level's stride), centred on the location's
    image position (floor(s/2) + x s, floor(s/2) + y s) (FCOS Sec. 3.1).

    torchvision's FCOS reads only the centres (regression targets, centre sampling) and the sides (the
    level's size range, Sec. 3.2) of these "anchors"; ``AnchorGenerator`` centres them at (x s, y s).
    """

    def __init__(self, strides: Sequence[int]) -> None:
        super().__init__(tuple((s,) for s in strides), ((1.0,),) * len(strides))

    def grid_anchors(self, grid_sizes: list[list[int]], strides: list[list[Tensor]]) -> list[Tensor]:
        anchors = super().grid_anchors(grid_sizes, strides)
        shifted = []
        for level, (stride_h, stride_w) in zip(anchors, strides):
            half = torch.stack((stride_w // 2, stride_h // 2)).to(level)
            shifted.append(level + half.repeat(2))
        return shifted


@register_model("fcos", family="anchor_free")
class FCOS(TorchvisionDetector):
    """FCOS with an FPN over ``return_layers`` of ``backbone``.

    Args:
        backbone, weights, return_layers, fpn_channels, fpn_extra: see :func:`build_backbone`.
        min_size, max_size: torchvision's resize of the shorter/longer side (128 keeps the embedded
            images as they are; the paper uses 800/1333).
        score_thresh, nms_thresh, detections_per_img: test-time decoding (Sec. 4: 0.05, 0.6, 100).
        center_sampling_radius: positives within this many strides of a box centre.
        weights (``torchvision``: COCO ``fcos_resnet50_fpn``), builder_kwargs, frozen_bn,
            trainable_backbone_layers: see :class:`~models.detection.torchvision_detector.TorchvisionDetector`.
    """

    foreground_classifier = True

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        return_layers: Sequence[str] = ("c3", "c4", "c5"),
        fpn_channels: int = 64,
        fpn_extra: str = "none",
        min_size: int = 128,
        max_size: int = 128,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        center_sampling_radius: float = 1.5,
        frozen_bn: bool | None = None,
        trainable_backbone_layers: int | None = None,
        builder_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.adopt_pretrained(weights, trainable_backbone_layers, builder_kwargs):
            return
        features = build_backbone(
            backbone,
            weights,
            return_layers,
            fpn=True,
            fpn_channels=fpn_channels,
            fpn_extra=fpn_extra,
            frozen_bn=frozen_bn,
            trainable_layers=trainable_backbone_layers,
            detection_defaults=True,
            pretrained_bodies=self.pretrained_bodies,  # weights: shapes are loaded at fit
        )
        # One "anchor" per location whose size is the level's stride: FCOS uses it only to assign
        # each box to a level by its size (Sec. 3.2).
        anchors = FCOSLocations(features.strides)
        detector = torchvision.models.detection.FCOS(
            features,
            num_classes=self.num_classes,  # K sigmoids (foreground_classifier): labels 0..K-1
            min_size=min_size,
            max_size=max_size,
            anchor_generator=anchors,
            center_sampling_radius=center_sampling_radius,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        self.attach(detector)
