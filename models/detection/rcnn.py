"""R-CNN: Regions with CNN features (Girshick et al., CVPR 2014; course slides 22-24).

Selective Search proposes ~2000 regions per image; each is warped to the CNN's fixed input size (Sec.
2.1: 227 x 227, after dilating the box so that 16 px of context surround it at the warped size) and
run through the CNN on its own: no computation is shared between regions, which is the cost Fast R-CNN
removes. The CNN's features are classified into K+1 classes (the fine-tuned softmax, or the paper's
per-class linear SVMs, Sec. 2.3) and class-specific box regression (Appendix C) moves each box; per-class
NMS gives the detections.

Training follows the paper's fine-tuning (Sec. 2.3): proposals with IoU >= 0.5 with an object are that
class, all others background, mini-batches of 128 regions hold 32 positives. The SVMs (``classifier:
svm``) learn on the same features, detached so that they do not change the CNN, with the ground-truth
boxes as positives and regions with IoU < 0.3 with every object of the class as negatives (a hinge loss
that weighs the two sets equally, where the paper mines hard negatives); the box
regressors learn from regions with IoU >= 0.6 (Appendix C). Unlike the paper, the three are trained in
one run rather than one after the other.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import box_iou

from models.detection.selective_search_detector import SelectiveSearchDetector
from models.parts.box_coding import BoxCoder
from models.parts.backbones import build_body
from models.parts.image_ops import crop_windows, normalize
from models.parts.proposals import RoISampler
from models.parts.roi_heads import fast_rcnn_loss, postprocess_detections
from models.registry import register_model


def with_context(boxes: Tensor, crop_size: int, context_padding: float) -> Tensor:
    """Boxes (N x 4) dilated about their centres so that, warped to ``crop_size``, ``context_padding``
    pixels of image surround the original box on every side (R-CNN Sec. 2.1 / Appendix A: p = 16 of 227)."""
    if context_padding <= 0:
        return boxes
    scale = crop_size / (crop_size - 2.0 * context_padding)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * scale / 2
    return torch.cat([centres - half, centres + half], dim=1)


def warp_regions(image: Tensor, boxes: Tensor, crop_size: int, context_padding: float = 0.0) -> Tensor:
    """Warp each box (N x 4) of ``image`` (3 x H x W), with its context, to N x 3 x crop_size x crop_size
    (R-CNN Sec. 2.1: anisotropic scaling, whatever the box's aspect ratio). Parts outside the image read
    0: the image mean once ``image`` is normalised, as the paper fills them."""
    return crop_windows(image, with_context(boxes, crop_size, context_padding), crop_size)


class RegionCNN(nn.Module):
    """The per-region network: a body, average pooling to ``pooled_size`` x ``pooled_size`` and one FC
    layer with ReLU (the paper's fc7 features, 4096-d in AlexNet)."""

    def __init__(self, body: nn.Module, representation_size: int = 256, pooled_size: int = 2) -> None:
        super().__init__()
        self.body = body
        self.last_stage = list(body.stage_channels)[-1]
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.fc = nn.Sequential(
            nn.Linear(body.stage_channels[self.last_stage] * pooled_size**2, representation_size), nn.ReLU(inplace=True)
        )

    def forward(self, crops: Tensor) -> Tensor:
        return self.fc(self.pool(self.body(crops)[self.last_stage]).flatten(1))


def svm_targets(
    boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, num_classes: int, positive_iou: float, negative_iou: float
) -> Tensor:
    """One-vs-rest targets (N x K) of the per-class SVMs (R-CNN Sec. 2.3): +1 for a region that is an
    object of the class (IoU >= ``positive_iou``; 1 = the ground truth only, as the paper), -1 where its
    IoU with every object of the class is below ``negative_iou`` (0.3), 0 (ignored) otherwise."""
    class_iou = boxes.new_zeros(len(boxes), num_classes + 1)
    if len(gt_boxes):
        ious = box_iou(boxes, gt_boxes.to(boxes.dtype))
        class_iou.scatter_reduce_(1, gt_labels[None].expand_as(ious), ious, reduce="amax")
    class_iou = class_iou[:, 1:]
    targets = torch.zeros_like(class_iou)
    targets[class_iou < negative_iou] = -1.0
    targets[class_iou >= positive_iou - 1e-6] = 1.0
    return targets


def svm_hinge_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """Hinge loss max(0, 1 - y s) of the (region, class) pairs with a target (y = +-1), averaged over the
    positives and over the negatives separately and summed: the few ground-truth positives weigh as much
    as the many negatives. The L2 penalty of the SVMs is the optimiser's weight decay."""
    hinge = (1 - targets * scores).clamp(min=0)
    return sum((hinge[targets == y].mean() if (targets == y).any() else scores.sum() * 0.0) for y in (1.0, -1.0))


@register_model("rcnn", family="two_stage")
class RCNN(SelectiveSearchDetector):
    """R-CNN: every Selective Search proposal warped to ``crop_size`` and classified by its own CNN pass.

    Args:
        backbone, weights: the per-region CNN's body and its initialisation (``weights: shapes`` pretrains
            it on the embedded dataset of the trainer's DataModule, the paper's supervised pre-training); the
            Selective Search arguments (``proposal_mode``, ``max_proposals``, ...) are
            :class:`SelectiveSearchDetector`'s.
        crop_size: side of the warped regions (227 in the paper for ~500 px images; 64 for 128 px ones).
        context_padding: pixels of context around the box in the warped crop; None scales the paper's
            16 of 227 to ``crop_size``; 0 warps the tight box.
        representation_size, pooled_size: the feature layer's width and the pooled grid before it.
        classifier: ``softmax`` (the fine-tuned network's, what Fast R-CNN uses) or ``svm`` (per-class
            linear SVMs with hinge loss, the paper's test-time classifier; scores are sigmoid(margin)).
        regions_per_image, positive_fraction, fg_iou, bg_iou_low: fine-tuning mini-batches (Sec. 2.3:
            128 regions over the batch, 32 with IoU >= 0.5; background all others: [0, 0.5)).
        bbox_reg_iou: regions that train the box regressors (Appendix C: IoU >= 0.6).
        svm_positive_iou, svm_negative_iou: see :func:`svm_targets` (1.0 and 0.3).
        smooth_l1_beta: box regression loss (smooth L1 as Fast R-CNN; the paper's ridge regression is L2).
        score_thresh, nms_thresh, detections_per_img: test-time decoding (per-class NMS at IoU 0.3).
        region_batch: warped regions per CNN call at test time (bounds memory; the passes stay per region).
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        crop_size: int = 64,
        context_padding: float | None = None,
        representation_size: int = 256,
        pooled_size: int = 2,
        classifier: Literal["softmax", "svm"] = "softmax",
        regions_per_image: int = 16,
        positive_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou_low: float = 0.0,
        bbox_reg_iou: float = 0.6,
        svm_positive_iou: float = 1.0,
        svm_negative_iou: float = 0.3,
        smooth_l1_beta: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_img: int = 100,
        region_batch: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if classifier not in ("softmax", "svm"):
            raise ValueError(f"classifier must be 'softmax' or 'svm', got {classifier!r}")
        body = build_body(backbone, weights, pretrained_bodies=self.pretrained_bodies)  # shapes: loaded at fit
        self.cnn = RegionCNN(body, representation_size, pooled_size)
        self.predictor = FastRCNNPredictor(representation_size, self.num_classes + 1)
        self.svm = nn.Linear(representation_size, self.num_classes) if classifier == "svm" else None
        self.crop_size = crop_size
        self.context_padding = 16.0 * crop_size / 227 if context_padding is None else float(context_padding)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.sampler = RoISampler(regions_per_image, positive_fraction, fg_iou, (bg_iou_low, fg_iou), self.box_coder)
        self.bbox_reg_iou = bbox_reg_iou
        self.svm_positive_iou, self.svm_negative_iou = svm_positive_iou, svm_negative_iou
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.region_batch = region_batch

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        proposals: list[Tensor] | None = None,
    ) -> Any:
        """Losses (train) or detections (eval); ``proposals`` (xyxy per image) skip Selective Search."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        proposals = self.propose(images) if proposals is None else proposals
        if self.training:
            return self.training_losses(images, targets, proposals)
        detections = [self.detect(image, boxes) for image, boxes in zip(images, proposals)]
        self.count_proposals(proposals)
        return detections

    def training_losses(
        self, images: list[Tensor], targets: list[dict[str, Tensor]], proposals: list[Tensor]
    ) -> dict[str, Tensor]:
        """Fine-tuning loss (softmax + box regression) and, with SVMs, their hinge loss on the same regions."""
        regions = self.sampler(proposals, targets)
        crops = [
            warp_regions(normalize(im), boxes, self.crop_size, self.context_padding)
            for im, boxes in zip(images, regions.boxes)
        ]
        features = self.cnn(torch.cat(crops))
        class_logits, box_deltas = self.predictor(features)
        box_labels = torch.where(regions.ious >= self.bbox_reg_iou, regions.labels, 0)
        losses = fast_rcnn_loss(
            class_logits, box_deltas, regions.labels, regions.regression_targets, box_labels, self.smooth_l1_beta
        )
        if self.svm is not None:
            targets_svm = torch.cat(
                [
                    svm_targets(
                        boxes, t["boxes"], t["labels"], self.num_classes, self.svm_positive_iou, self.svm_negative_iou
                    )
                    for boxes, t in zip(regions.boxes, targets)
                ]
            )
            losses["loss_svm"] = svm_hinge_loss(self.svm(features.detach()), targets_svm)
        return losses

    @torch.no_grad()
    def detect(self, image: Tensor, proposals: Tensor) -> dict[str, Tensor]:
        """Warp every proposal, run the CNN on each, score and regress it, per-class NMS."""
        with self.stage_timer.stage("per_region_cnn"):
            crops = warp_regions(normalize(image), proposals, self.crop_size, self.context_padding)
            features = torch.cat([self.cnn(chunk) for chunk in crops.split(self.region_batch)])
        with self.stage_timer.stage("classify_regress"):
            class_logits, box_deltas = self.predictor(features)
            if self.svm is None:
                scores = class_logits.softmax(-1)
            else:  # sigmoid keeps the SVMs' ranking and puts the scores in (0, 1) like the softmax's
                scores = torch.cat([torch.zeros_like(class_logits[:, :1]), self.svm(features).sigmoid()], dim=1)
        with self.stage_timer.stage("nms"):
            image_size = (int(image.shape[-2]), int(image.shape[-1]))
            return postprocess_detections(
                scores,
                box_deltas,
                proposals,
                image_size,
                self.box_coder,
                self.score_thresh,
                self.nms_thresh,
                self.detections_per_img,
            )
