"""Fast R-CNN (Girshick, ICCV 2015): R-CNN with the CNN run once per image (course slides 33-40).

The whole image goes through the backbone once; each Selective Search proposal is cropped from the
feature map by RoI pooling (Sec. 2.1) to 7 x 7 and passed through two FC layers to a softmax over K+1
classes and class-specific box deltas (:mod:`models.parts.roi_heads`). The network trains end to end
with the multi-task loss (Sec. 2.3) on mini-batches of R RoIs from N images, a quarter foreground
(IoU >= 0.5), the rest background (IoU in [0.1, 0.5)). Test: one backbone pass, the head on every
proposal, per-class NMS. Only the per-region work grows with the number of proposals, which is why it
runs at 0.32 s per image where R-CNN takes 47 s (Table 4; both excluding Selective Search's ~2 s).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from models.detection.selective_search_detector import SelectiveSearchDetector
from models.parts.backbones import Backbone, build_body
from models.parts.box_coding import BoxCoder
from models.parts.image_ops import IMAGE_MEAN, IMAGE_STD
from models.parts.proposals import RoISampler
from models.parts.roi_heads import FastRCNNHead, RoIPooler, fast_rcnn_loss, postprocess_detections
from models.registry import register_model


def truncated_svd_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Fast R-CNN Sec. 3.1: replace ``layer`` (W, u x v) by its rank-``rank`` truncated SVD W ~ U_t S_t V_t^T,
    two layers without a non-linearity between them: S_t V_t^T (t x v, no bias) then U_t (u x t, W's bias).
    Parameters drop from u v to t (u + v); the best rank-t approximation of W (Eckart-Young)."""
    if not 1 <= rank <= min(layer.in_features, layer.out_features):
        raise ValueError(f"rank must be in [1, {min(layer.in_features, layer.out_features)}], got {rank}")
    with torch.no_grad():
        u, s, vh = torch.linalg.svd(layer.weight.double(), full_matrices=False)
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
        first.weight.copy_((s[:rank, None] * vh[:rank]).to(layer.weight.dtype))
        second.weight.copy_(u[:, :rank].to(layer.weight.dtype))
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device)


def truncate_fc_layers(head: FastRCNNHead, fc6_rank: int = 1024, fc7_rank: int = 256) -> FastRCNNHead:
    """Compress ``head``'s fc6 and fc7 in place with :func:`truncated_svd_linear` (Sec. 3.1, Fig. 2: the top
    1024 singular values of fc6 and 256 of fc7 for VGG16) and return it."""
    head.fc_layers.fc6 = truncated_svd_linear(head.fc_layers.fc6, fc6_rank)
    head.fc_layers.fc7 = truncated_svd_linear(head.fc_layers.fc7, fc7_rank)
    return head


@register_model("fast_rcnn", family="two_stage")
class FastRCNN(SelectiveSearchDetector):
    """Fast R-CNN on Selective Search proposals over the ``return_layer`` map of ``backbone``.

    Args:
        backbone, weights: the network and its initialisation (``weights: shapes`` pretrains it on the
            embedded dataset of the trainer's DataModule, see :mod:`models.parts.pretrain`); the Selective
            Search arguments (``proposal_mode``, ``max_proposals``, ...; the paper: ``quality``, 2000) are
            :class:`SelectiveSearchDetector`'s.
        return_layer: the feature map the RoIs are pooled from (``c3``: stride 8, ``c4``: stride 16 as
            VGG16's conv5_3 in the paper).
        roi_op, roi_output_size: the :class:`RoIPooler`'s kind, ``pool`` (RoI max pooling, the paper) or
            ``align`` (RoI Align); the 7 x 7 grid.
        representation_size: width of fc6 and fc7 (4096 in VGG16).
        rois_per_image, positive_fraction, fg_iou, bg_iou_low: R / N RoIs per image, a quarter with
            IoU >= 0.5, the others with IoU in [bg_iou_low, fg_iou) (Sec. 2.3: 128 / 2, 0.25, 0.5, 0.1).
        smooth_l1_beta: the smooth L1 loss's switch point (Eq. 3: 1).
        score_thresh, nms_thresh, detections_per_img: test-time decoding (per-class NMS at IoU 0.3).
        min_size, max_size: the image's shorter/longer side after resizing (Sec. 3.1: 600 / 1000;
            128 keeps the embedded images as they are).
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        return_layer: str = "c3",
        roi_op: Literal["pool", "align"] = "pool",
        roi_output_size: int = 7,
        representation_size: int = 256,
        rois_per_image: int = 64,
        positive_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou_low: float = 0.1,
        smooth_l1_beta: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_img: int = 100,
        min_size: int = 128,
        max_size: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        body = build_body(backbone, weights, pretrained_bodies=self.pretrained_bodies)  # shapes: loaded at fit
        self.backbone = Backbone(body, [return_layer])
        self.return_layer = return_layer
        self.transform = GeneralizedRCNNTransform(min_size, max_size, IMAGE_MEAN, IMAGE_STD)
        roi_pooler = RoIPooler(roi_output_size, 1.0 / self.backbone.strides[0], roi_op)
        self.head = FastRCNNHead(self.backbone.out_channels, self.num_classes + 1, roi_pooler, representation_size)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.sampler = RoISampler(rois_per_image, positive_fraction, fg_iou, (bg_iou_low, fg_iou), self.box_coder)
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    def truncate_svd(self, fc6_rank: int, fc7_rank: int) -> None:
        """Test-time truncated SVD of fc6 and fc7 (Sec. 3.1), see :func:`truncate_fc_layers`."""
        truncate_fc_layers(self.head, fc6_rank, fc7_rank)

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
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        image_list, targets = self.transform(images, targets)
        proposals = [resize_boxes(p, o, s) for p, o, s in zip(proposals, original_sizes, image_list.image_sizes)]
        with self.stage_timer.stage("backbone"):
            features = self.backbone(image_list.tensors)[self.return_layer]
        if self.training:
            rois = self.sampler(proposals, targets)
            class_logits, box_deltas = self.head(features, rois.boxes)
            return fast_rcnn_loss(
                class_logits, box_deltas, rois.labels, rois.regression_targets, smooth_l1_beta=self.smooth_l1_beta
            )
        with self.stage_timer.stage("per_region_head"):
            class_logits, box_deltas = self.head(features, proposals)
        with self.stage_timer.stage("nms"):
            counts = [len(p) for p in proposals]
            detections = [
                postprocess_detections(
                    scores,
                    deltas,
                    boxes,
                    size,
                    self.box_coder,
                    self.score_thresh,
                    self.nms_thresh,
                    self.detections_per_img,
                )
                for scores, deltas, boxes, size in zip(
                    class_logits.softmax(-1).split(counts), box_deltas.split(counts), proposals, image_list.image_sizes
                )
            ]
        self.count_proposals(proposals)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)
