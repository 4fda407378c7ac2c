"""Mask R-CNN (He et al., ICCV 2017): Faster R-CNN with RoIAlign and a per-class mask branch.

The slides' reading: the backbone (here with an FPN) feeds a Region Proposal Network; each proposal
is cropped by RoIAlign (Sec. 3, bilinear sampling without quantisation) for a box head (class and
box refinement) and a small FCN mask head predicting a 28 x 28 mask per class (Sec. 3, "Network
Architecture"); the mask loss is the per-pixel binary cross-entropy of the ground-truth class's mask
only (Sec. 3, L_mask, no competition between classes). At test time the mask of the predicted
class is resized into its box and pasted into the image. torchvision's ``MaskRCNN`` composed with
our backbones, with anchors and head widths suited to 128 px images.
"""

from __future__ import annotations

from typing import Any, Sequence

import torchvision
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from models.base import InstanceSegmentationModule
from models.parts.backbones import Backbone, configure_body
from models.parts.pretrain import load_pretrained_body
from models.parts.timing import time_method
from models.parts.torchvision_weights import adopt_pretrained_detector, run_detector
from models.registry import register_model


@register_model("mask_rcnn", family="instance_segmentation", task="instance")
class MaskRCNN(InstanceSegmentationModule):
    """Mask R-CNN with an FPN over ``return_layers`` of ``backbone``.

    Args:
        backbone, weights, return_layers, fpn_channels: see :func:`build_backbone`; an extra max-pooled
            level (P6, for the RPN only) is added as in the paper's FPN. ``weights: shapes`` pretrains
            the body as a classifier on the embedded dataset in ``data_root`` (:mod:`models.parts.pretrain`).
        anchor_sizes: one anchor size per FPN level, finest first (the paper: 32 .. 512 on 800 px
            images; 8 .. 128 here, for objects of 8 to 64 px in 128 px images), each with ``aspect_ratios``.
        roi_canonical_scale: a RoI of this size is pooled from P4, twice as large from P5, half from P3
            (FPN Eq. 1: 224, ImageNet's image size, for 800 px images; 64 suits 128 px images).
        min_size, max_size: torchvision's resize of the shorter/longer side (the paper: 800 / 1333).
        rpn_*: proposals kept before/after NMS per image, and anchors sampled per image for the RPN loss.
        box_batch_size_per_image: RoIs sampled per image for the box and mask losses (the paper: 512).
        box_representation_size: width of the box head's two fully connected layers (the paper: 1024).
        mask_head_channels: the mask head's 3x3 convolutions (the paper: four of 256).
        box_score_thresh, box_nms_thresh, detections_per_img: test-time decoding (0.05, 0.5, 100).
        weights: besides backbone weights, ``torchvision`` (or ``COCO_V1``) loads torchvision's whole
            COCO ``maskrcnn_resnet50_fpn`` (:mod:`models.parts.torchvision_weights`): its architecture and settings,
            the options above unused; ``builder_kwargs`` go to its builder (``min_size``, ...).
        frozen_bn, trainable_backbone_layers: the references' fine-tuning of an ImageNet body
            (:func:`models.parts.backbones.configure_body`; None: frozen batch norm and 3 trainable
            stages for ImageNet ResNets / VGG16, nothing frozen otherwise).
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        data_root: str | None = None,
        return_layers: Sequence[str] = ("c2", "c3", "c4", "c5"),
        fpn_channels: int = 64,
        anchor_sizes: Sequence[int] = (8, 16, 32, 64, 128),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        min_size: int = 128,
        max_size: int = 128,
        roi_canonical_scale: int = 224,
        rpn_pre_nms_top_n_train: int = 1000,
        rpn_post_nms_top_n_train: int = 300,
        rpn_pre_nms_top_n_test: int = 500,
        rpn_post_nms_top_n_test: int = 150,
        rpn_batch_size_per_image: int = 128,
        box_batch_size_per_image: int = 128,
        box_representation_size: int = 256,
        mask_head_channels: Sequence[int] = (64, 64, 64, 64),
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        frozen_bn: bool | None = None,
        trainable_backbone_layers: int | None = None,
        builder_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if adopt_pretrained_detector(self, "mask_rcnn", weights, trainable_backbone_layers, builder_kwargs):
            return
        body = load_pretrained_body(backbone, weights, data_root, defer=True)  # shapes: loaded in setup
        configure_body(body, backbone, weights, frozen_bn, trainable_backbone_layers, detection_defaults=True)
        features = Backbone(body, return_layers, fpn=True, fpn_channels=fpn_channels, fpn_extra="maxpool")
        if len(anchor_sizes) != len(features.strides):
            raise ValueError(f"{len(anchor_sizes)} anchor_sizes for {len(features.strides)} FPN levels (return_layers + P6)")
        anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), (tuple(aspect_ratios),) * len(anchor_sizes))
        levels = list(return_layers)  # RoIs are pooled from the FPN levels of the backbone, not P6
        self.detector = torchvision.models.detection.MaskRCNN(
            features,
            num_classes=None,  # the predictors below set it
            min_size=min_size,
            max_size=max_size,
            rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
            rpn_batch_size_per_image=rpn_batch_size_per_image,
            box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2, canonical_scale=roi_canonical_scale),
            box_head=TwoMLPHead(fpn_channels * 7 * 7, box_representation_size),
            box_predictor=FastRCNNPredictor(box_representation_size, self.num_classes + 1),
            box_batch_size_per_image=box_batch_size_per_image,
            box_score_thresh=box_score_thresh,
            box_nms_thresh=box_nms_thresh,
            box_detections_per_img=detections_per_img,
            mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2, canonical_scale=roi_canonical_scale),
            mask_head=MaskRCNNHeads(fpn_channels, list(mask_head_channels), dilation=1),
            # 14 x 14 RoI features -> 2x transpose convolution -> 28 x 28 masks, one per class.
            mask_predictor=MaskRCNNPredictor(mask_head_channels[-1], mask_head_channels[-1], self.num_classes + 1),
        )
        self.stage_timer.instrument(self.detector.transform, "transform")
        self.stage_timer.instrument(self.detector.backbone, "backbone")
        self.stage_timer.instrument(self.detector.rpn, "rpn")
        self.stage_timer.instrument(self.detector.roi_heads, "roi_heads")
        time_method(self.stage_timer, self.detector.transform, "postprocess", "postprocess")

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        if self.class_map is not None:
            return run_detector(self.detector, self.class_map, images, targets)
        return self.detector(images, targets)

    def set_nms_iou(self, iou: float) -> None:
        self.detector.roi_heads.nms_thresh = iou
