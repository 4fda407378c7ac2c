"""Mask R-CNN (He et al., ICCV 2017): Faster R-CNN with RoIAlign and a per-class mask branch.

The slides' reading: the backbone (here with an FPN) feeds a Region Proposal Network; each proposal
is cropped by RoIAlign (Sec. 3, bilinear sampling without quantisation) for a box head (class and
box refinement) and a small FCN mask head predicting a 28 x 28 mask per class (Sec. 3, "Network
Architecture"); the mask loss is the per-pixel binary cross-entropy of the ground-truth class's mask
only (Sec. 3, L_mask, no competition between classes). At test time the mask of the predicted
class is resized into its box and pasted into the image. Our Faster R-CNN with torchvision's mask head
(``MaskRCNNHeads``, ``MaskRCNNPredictor``) added to its RoI heads, with anchors and head widths suited to
128 px images.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from models.base import InstanceSegmentationModule
from models.detection.faster_rcnn import FasterRCNN, roi_align
from models.registry import register_model


@register_model("mask_rcnn", family="instance_segmentation")
class MaskRCNN(FasterRCNN, InstanceSegmentationModule):
    """Mask R-CNN: :class:`~models.detection.faster_rcnn.FasterRCNN` (its arguments) and a mask head.

    Args (those whose defaults differ from Faster R-CNN's, and the mask head's):
        backbone, weights: as Faster R-CNN (``weights: torchvision``: COCO ``maskrcnn_resnet50_fpn``).
        return_layers, fpn, fpn_extra: an FPN over c2..c5 and an extra max-pooled level (P6, for the RPN
            only) as in the paper's FPN; RoIs are pooled from the levels of ``return_layers``.
        anchor_sizes: one anchor size per FPN level, finest first (the paper: 32 .. 512 on 800 px
            images; 8 .. 128 here, for objects of 8 to 64 px in 128 px images), each with ``anchor_ratios``.
        rpn_pre_nms_top_n_train/test, rpn_post_nms_top_n_train/test: proposals kept before/after NMS per image.
        rpn_batch_size: anchors sampled per image for the RPN loss.
        box_batch_size: RoIs sampled per image for the box and mask losses (the paper: 512).
        box_nms_thresh: test-time per-class NMS (0.5, with score threshold 0.05 and 100 detections).
        mask_roi_output_size: the mask branch's RoIAlign grid (14 x 14; a 2x transpose convolution makes
            the 28 x 28 masks).
        mask_head_channels: the mask head's 3x3 convolutions (the paper: four of 256).
    """

    timed_modules = (("transform", "transform"), ("backbone", "backbone"), ("rpn", "rpn"), ("roi_heads", "roi_heads"))
    renamed_arguments = {  # before Mask R-CNN took Faster R-CNN's names
        "aspect_ratios": "anchor_ratios",
        "rpn_batch_size_per_image": "rpn_batch_size",
        "box_batch_size_per_image": "box_batch_size",
        "box_representation_size": "representation_size",
    }

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        return_layers: Sequence[str] = ("c2", "c3", "c4", "c5"),
        fpn: bool = True,
        fpn_extra: Literal["none", "maxpool", "p6p7"] = "maxpool",
        anchor_sizes: Sequence[int] = (8, 16, 32, 64, 128),
        rpn_pre_nms_top_n_train: int = 1000,
        rpn_pre_nms_top_n_test: int = 500,
        rpn_post_nms_top_n_train: int = 300,
        rpn_post_nms_top_n_test: int = 150,
        rpn_batch_size: int = 128,
        box_batch_size: int = 128,
        box_nms_thresh: float = 0.5,
        mask_roi_output_size: int = 14,
        mask_head_channels: Sequence[int] = (64, 64, 64, 64),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            backbone=backbone,
            weights=weights,
            return_layers=return_layers,
            fpn=fpn,
            fpn_extra=fpn_extra,
            anchor_sizes=anchor_sizes,
            rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
            rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
            rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
            rpn_batch_size=rpn_batch_size,
            box_batch_size=box_batch_size,
            box_nms_thresh=box_nms_thresh,
            **kwargs,
        )
        if self.adopted:
            return
        heads = self.detector.roi_heads
        box_pool = heads.box_roi_pool
        heads.mask_roi_pool = roi_align(box_pool.featmap_names, mask_roi_output_size, box_pool.canonical_scale)
        heads.mask_head = MaskRCNNHeads(self.detector.backbone.out_channels, list(mask_head_channels), dilation=1)
        # RoI features -> 2x transpose convolution -> masks of twice the RoI size (28 x 28), one per class.
        heads.mask_predictor = MaskRCNNPredictor(mask_head_channels[-1], mask_head_channels[-1], self.num_classes + 1)
