"""SSD: Single Shot MultiBox Detector (Liu et al., ECCV 2016; course slide 63).

One network, no proposals: small 3x3 conv predictors on several feature maps of decreasing
resolution (the base network's and extra layers added after it, Fig. 2) score every default box
(several scales and aspect ratios per location, Sec. 2.2) for C + 1 classes and regress its offsets.
Training matches each ground-truth box to the default box of highest IoU and to every other default
box with IoU >= 0.5; the loss is softmax cross-entropy plus smooth L1 on the matched boxes, with hard
negative mining keeping the most confident negatives at 3 per positive (Sec. 2.2, Eq. 1).

torchvision's SSD (matcher, loss, hard negative mining, decoding), DefaultBoxGenerator and SSDHead
composed with our backbone and extra layers; default-box scales from :mod:`models.parts.anchors`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

from torch import Tensor, nn
from torchvision.models.detection.ssd import SSD as TorchvisionSSD, SSDHead

from models.detection.torchvision_detector import TorchvisionDetector
from models.parts.anchors import default_box_generator
from models.parts.backbones import build_body, configure_body
from models.parts.image_ops import IMAGE_MEAN, IMAGE_STD
from models.registry import register_model


class SSDFeatureMaps(nn.Module):
    """The base network's maps ``return_layers`` plus ``num_extra`` extra feature layers (Fig. 2:
    conv8_2 .. conv11_2), each a 1x1 conv halving the channels and a stride-2 3x3 conv, with ReLU and
    no batch norm as the paper (the last maps are 1 x 1: batch norm would need batches of 2 or more).

    Attributes:
        out_channels: channels of every returned map, in order (they differ, so SSD's head has one
            predictor per map).
    """

    def __init__(
        self, body: nn.Module, return_layers: Sequence[str], num_extra: int = 2, extra_channels: int = 128
    ) -> None:
        super().__init__()
        self.body = body
        self.return_layers = list(return_layers)
        self.out_channels = [body.stage_channels[name] for name in self.return_layers]
        extras = []
        in_channels = self.out_channels[-1]
        for _ in range(num_extra):
            extras.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, extra_channels // 2, 1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(extra_channels // 2, extra_channels, 3, stride=2, padding=1),
                    nn.ReLU(inplace=True),
                )
            )
            in_channels = extra_channels
        self.extras = nn.ModuleList(extras)
        self.out_channels += [extra_channels] * num_extra

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        stages = self.body(x)
        maps = OrderedDict((name, stages[name]) for name in self.return_layers)
        y = maps[self.return_layers[-1]]
        for i, extra in enumerate(self.extras):
            y = extra(y)
            maps[f"extra{i + 1}"] = y
        return maps


@register_model("ssd", family="one_stage_anchor")
class SSD(TorchvisionDetector):
    """SSD over ``return_layers`` of ``backbone`` and ``num_extra_layers`` extra layers.

    Args:
        backbone, weights: the base network and its initialisation (the paper: ImageNet VGG16; ``weights:
            shapes`` pretrains it on the embedded dataset of the trainer's DataModule, see
            :mod:`models.parts.pretrain`; None trains from scratch).
        return_layers: base-network maps that get predictors (the paper: conv4_3, fc7).
        num_extra_layers, extra_channels: extra layers after the base network, each halving the map.
        aspect_ratios: per map, the ratios besides 1 (``[2, 3]`` = {2, 1/2, 3, 1/3}); one list per map.
        s_min, s_max: default-box scales of the first and last map as fractions of the image
            (the paper: 0.2-0.9 at 300 px; 0.1-0.8 here, objects of the shapes dataset are 6-97 px).
        image_size: images are resized to image_size x image_size (the paper: 300 or 512).
        iou_thresh: default boxes with IoU >= this with a box are positives (0.5).
        neg_pos_ratio: hard negatives kept per positive (3).
        score_thresh, nms_thresh, detections_per_img, topk_candidates: decoding (Sec. 3: 0.01, 0.45,
            200 per image, top 400 per class before NMS as torchvision).
        weights (``torchvision``: COCO ``ssd300_vgg16``, 300 x 300 inputs, 4 trainable VGG16 stages by default),
            builder_kwargs, frozen_bn, trainable_backbone_layers: see
            :class:`~models.detection.torchvision_detector.TorchvisionDetector`.
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        return_layers: Sequence[str] = ("c3", "c4", "c5"),
        num_extra_layers: int = 2,
        extra_channels: int = 128,
        aspect_ratios: Sequence[Sequence[float]] = ((2,), (2, 3), (2, 3), (2,), (2,)),
        s_min: float = 0.1,
        s_max: float = 0.8,
        image_size: int = 128,
        iou_thresh: float = 0.5,
        neg_pos_ratio: float = 3.0,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        detections_per_img: int = 200,
        topk_candidates: int = 400,
        frozen_bn: bool | None = None,
        trainable_backbone_layers: int | None = None,
        builder_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.adopt_pretrained(weights, trainable_backbone_layers, builder_kwargs):
            return
        body = build_body(backbone, weights, pretrained_bodies=self.pretrained_bodies)  # shapes: loaded at fit
        configure_body(body, backbone, weights, frozen_bn, trainable_backbone_layers, detection_defaults=True)
        features = SSDFeatureMaps(body, return_layers, num_extra_layers, extra_channels)
        if len(aspect_ratios) != len(features.out_channels):
            raise ValueError(
                f"aspect_ratios needs one list per feature map ({len(features.out_channels)}: {len(return_layers)} "
                f"base maps + {num_extra_layers} extra), got {len(aspect_ratios)}"
            )
        default_boxes = default_box_generator(aspect_ratios, s_min, s_max)
        head = SSDHead(features.out_channels, default_boxes.num_anchors_per_location(), self.num_classes + 1)
        detector = TorchvisionSSD(
            features,
            default_boxes,
            (image_size, image_size),
            num_classes=self.num_classes + 1,  # softmax over background (0) and the K classes
            image_mean=IMAGE_MEAN,
            image_std=IMAGE_STD,
            head=head,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            iou_thresh=iou_thresh,
            topk_candidates=topk_candidates,
            positive_fraction=1.0 / (1.0 + neg_pos_ratio),
        )
        self.attach(detector)
