"""Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks (Ren et al., NIPS 2015).

Fast R-CNN with the proposals made by the network itself (course slides 48-59). The first stage runs
once per image: the backbone, then the Region Proposal Network (Sec. 3.1), a small conv head that at
every feature-map location predicts, for each of ``A`` anchor boxes of fixed sizes and aspect ratios,
whether it holds an object (per-pixel logistic regression) and the deltas that move it onto the object;
the best boxes after NMS are the proposals. The second stage runs once per region: RoI Align crops the
features of each proposal (He et al. 2017), a two-layer MLP classifies it into K+1 classes and regresses
class-specific box deltas. Both stages train together (approximate joint training, Sec. 3.2).

torchvision's RegionProposalNetwork, RPNHead, AnchorGenerator, MultiScaleRoIAlign and RoIHeads composed
with our backbones (one stride-16 map as the paper's VGG16 conv5_3, or an FPN over several stages).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from models.detection.torchvision_detector import TorchvisionDetector
from models.parts.anchors import rpn_anchor_generator
from models.parts.backbones import build_backbone
from models.parts.image_ops import IMAGE_MEAN, IMAGE_STD
from models.parts.roi_align import FeaturePyramidRoIAlign
from models.registry import register_model


def roi_align(levels: Sequence[str], output_size: int, canonical_scale: int) -> FeaturePyramidRoIAlign:
    """RoI Align (He et al. 2017, Sec. 3) of ``output_size`` x ``output_size`` bins of 2 x 2 samples, each RoI from
    the map of ``levels`` that suits its size (FPN Eq. 1: a RoI of side ``canonical_scale`` from the stride-16 map)."""
    return FeaturePyramidRoIAlign(list(levels), output_size, sampling_ratio=2, canonical_scale=canonical_scale)


@register_model("faster_rcnn", family="two_stage")
class FasterRCNN(TorchvisionDetector):
    """Faster R-CNN over ``return_layers`` of ``backbone`` (an FPN when ``fpn`` is true).

    Args:
        backbone, weights: the network and its initialisation (``weights: shapes`` pretrains it as a
            classifier on the embedded dataset of the trainer's DataModule, see :mod:`models.parts.pretrain`).
        return_layers, fpn, fpn_channels, fpn_extra: see :class:`models.parts.backbones.Backbone`.
        anchor_sizes, anchor_ratios: anchor side lengths (pixels) and height/width ratios (Sec. 3.1.1:
            128/256/512 x 0.5/1/2 on 600 px images; 16/32/64 here for 128 px images).
        rpn_fg_iou, rpn_bg_iou: anchors with IoU >= 0.7 with a box are positive, < 0.3 negative (Sec. 3.1.2).
        rpn_batch_size, rpn_positive_fraction: 256 anchors per image, up to half of them positive.
        rpn_pre_nms_top_n_train/test, rpn_post_nms_top_n_train/test, rpn_nms_thresh: proposals kept per
            image (per level) before and after NMS at IoU 0.7 (Sec. 3.3: 2000 train, 300 test).
        roi_output_size, representation_size: RoI Align grid (7 x 7) and the MLP head's width.
        roi_canonical_scale: with an FPN, a box of this side is pooled from c4 and each halving moves it
            one level down (FPN Eq. 1: 224, the ImageNet input size; about 64 suits 128 px images).
        box_batch_size, box_positive_fraction: RoIs sampled per image for the head, up to a quarter
            positives (IoU >= 0.5; Fast R-CNN Sec. 2.3: 128 RoIs from 2 images, 64 each).
        box_score_thresh, box_nms_thresh, detections_per_img: test-time per-class NMS and output size
            (NMS at IoU 0.3 as R-CNN and Fast R-CNN here, the value of the papers' released test code).
        min_size, max_size: torchvision's resize of the shorter/longer side (the paper: 600/1000).
        weights (``torchvision``: COCO ``fasterrcnn_resnet50_fpn``), builder_kwargs, frozen_bn,
            trainable_backbone_layers: see :class:`~models.detection.torchvision_detector.TorchvisionDetector`.
    """

    timed_modules = (("backbone", "backbone"), ("rpn", "proposals"), ("roi_heads", "per_region_head"))
    timed_method = ("transform", "postprocess", "postprocess")
    nms_owner = "roi_heads"  # the per-class NMS of the final detections, not the RPN's

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        return_layers: Sequence[str] = ("c4",),
        fpn: bool = False,
        fpn_channels: int = 64,
        fpn_extra: Literal["none", "maxpool", "p6p7"] = "none",
        anchor_sizes: Sequence[int] = (16, 32, 64),
        anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_fg_iou: float = 0.7,
        rpn_bg_iou: float = 0.3,
        rpn_batch_size: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 300,
        rpn_nms_thresh: float = 0.7,
        roi_output_size: int = 7,
        roi_canonical_scale: int = 224,
        representation_size: int = 256,
        box_batch_size: int = 64,
        box_positive_fraction: float = 0.25,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.3,
        detections_per_img: int = 100,
        min_size: int = 128,
        max_size: int = 128,
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
            fpn,
            fpn_channels,
            fpn_extra,
            frozen_bn=frozen_bn,
            trainable_layers=trainable_backbone_layers,
            detection_defaults=True,
            pretrained_bodies=self.pretrained_bodies,  # weights: shapes are loaded at fit
        )
        anchors = rpn_anchor_generator(anchor_sizes, anchor_ratios, num_levels=len(features.strides))
        rpn = RegionProposalNetwork(
            anchors,
            RPNHead(features.out_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=rpn_fg_iou,
            bg_iou_thresh=rpn_bg_iou,
            batch_size_per_image=rpn_batch_size,
            positive_fraction=rpn_positive_fraction,
            pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
            nms_thresh=rpn_nms_thresh,
        )
        roi_heads = RoIHeads(
            roi_align(return_layers, roi_output_size, roi_canonical_scale),
            TwoMLPHead(features.out_channels * roi_output_size**2, representation_size),
            FastRCNNPredictor(representation_size, self.num_classes + 1),
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=box_batch_size,
            positive_fraction=box_positive_fraction,
            bbox_reg_weights=None,  # (10, 10, 5, 5), as models.parts.box_coding.BoxCoder
            score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh,
            detections_per_img=detections_per_img,
        )
        transform = GeneralizedRCNNTransform(min_size, max_size, IMAGE_MEAN, IMAGE_STD)
        self.attach(GeneralizedRCNN(features, rpn, roi_heads, transform))
