"""FCOS: Fully Convolutional One-Stage detection (Tian et al., ICCV 2019).

Anchor-free: every FPN location inside a box (centre sampling, Sec. 3.1) regresses its distances to
the box's four sides, with a centre-ness branch that down-weights far-from-centre locations (Sec. 3.3).
torchvision's FCOS (head, focal/GIoU/centre-ness losses, decoding) composed with our backbones; the
embedded dataset's baseline detector, because it trains fastest on a CPU.
"""

from __future__ import annotations

from typing import Any, Sequence

import torchvision
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator

from models.base import DetectionModule
from models.parts.backbones import build_backbone
from models.parts.timing import time_method
from models.registry import register_model


@register_model("fcos", family="anchor_free")
class FCOS(DetectionModule):
    """FCOS with an FPN over ``return_layers`` of ``backbone``.

    Args:
        backbone, weights, return_layers, fpn_channels, fpn_extra: see :func:`build_backbone`.
        min_size, max_size: torchvision's resize of the shorter/longer side (128 keeps the embedded
            images as they are; the paper uses 800/1333).
        score_thresh, nms_thresh, detections_per_img: test-time decoding (Sec. 4: 0.05, 0.6, 100).
        center_sampling_radius: positives within this many strides of a box centre.
    """

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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        features = build_backbone(backbone, weights, return_layers, fpn=True, fpn_channels=fpn_channels, fpn_extra=fpn_extra)
        # One "anchor" per location whose size is the level's stride: FCOS uses it only to assign
        # each box to a level by its size (Sec. 3.2).
        anchors = AnchorGenerator(tuple((s,) for s in features.strides), ((1.0,),) * len(features.strides))
        self.detector = torchvision.models.detection.FCOS(
            features,
            num_classes=self.num_classes + 1,  # torchvision indexes classes by label; 0 stays unused
            min_size=min_size,
            max_size=max_size,
            anchor_generator=anchors,
            center_sampling_radius=center_sampling_radius,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        self.stage_timer.instrument(self.detector.backbone, "backbone")
        self.stage_timer.instrument(self.detector.head, "head")
        time_method(self.stage_timer, self.detector, "postprocess_detections", "decode_nms")

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        return self.detector(images, targets)

    def set_nms_iou(self, iou: float) -> None:
        self.detector.nms_thresh = iou
