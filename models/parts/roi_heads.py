"""The Fast R-CNN head: RoI pooling, two FC layers, a softmax classifier and class-specific box regression.

Girshick, "Fast R-CNN", ICCV 2015 (course slides 33-40). The backbone runs once per image; each region
proposal is projected onto its feature map (``spatial_scale`` = 1 / stride) and RoI max pooling (Sec. 2.1)
divides it into a fixed H x W grid (7 x 7) of sub-windows, max-pooling each, so that regions of any
size feed the same fully connected layers. Two sibling outputs follow (Sec. 2): K+1 class scores
(softmax) and, per class, 4 box deltas. RoI Align (He et al. 2017) samples the features bilinearly
instead of snapping the region to the grid. The multi-task loss (Sec. 2.3, Eq. 1) is the cross-entropy
plus the smooth L1 loss of the true class's deltas (foreground RoIs only).

The decoding that turns scores and deltas into detections (per-class boxes, then the score threshold and
per-class NMS of :mod:`models.parts.postprocess`) is shared with R-CNN, whose per-region CNN has the same
two outputs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import roi_pool

from models.parts.box_coding import BoxCoder
from models.parts.postprocess import class_candidates, select_detections
from models.parts.roi_align import roi_align


class RoIPooler(nn.Module):
    """Crop each region's features to ``output_size`` x ``output_size``: RoI max pooling
    (``kind="pool"``, Fast R-CNN Sec. 2.1) or RoI Align (``kind="align"``, Mask R-CNN Sec. 3).

    ``spatial_scale`` maps image pixels to feature cells (1 / the feature map's stride); ``sampling_ratio``
    is RoI Align's bilinear samples per bin side.
    """

    def __init__(
        self,
        output_size: int = 7,
        spatial_scale: float = 1.0 / 16,
        kind: Literal["pool", "align"] = "pool",
        sampling_ratio: int = 2,
    ) -> None:
        super().__init__()
        if kind not in ("pool", "align"):
            raise ValueError(f"RoI pooler kind must be 'pool' or 'align', got {kind!r}")
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.kind, self.sampling_ratio = kind, sampling_ratio

    def forward(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        """``features`` B x C x H x W, ``boxes`` one R_i x 4 (xyxy image pixels) per image ->
        (sum R_i) x C x output_size x output_size, in the order of the images then their boxes."""
        boxes = [b.to(features.dtype) for b in boxes]
        size = (self.output_size, self.output_size)
        if self.kind == "pool":
            return roi_pool(features, boxes, size, self.spatial_scale)
        return roi_align(features, boxes, size, self.spatial_scale, self.sampling_ratio, aligned=True)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class FastRCNNHead(nn.Module):
    """RoI pooling -> fc6, fc7 (ReLU) -> class logits (K+1) and class-specific deltas (4 (K+1)).

    torchvision's TwoMLPHead and FastRCNNPredictor are the FC layers and the two sibling outputs.
    """

    def __init__(
        self, in_channels: int, num_classes_with_background: int, roi_pooler: RoIPooler, representation_size: int = 256
    ) -> None:
        super().__init__()
        self.roi_pooler = roi_pooler
        self.fc_layers = TwoMLPHead(in_channels * roi_pooler.output_size**2, representation_size)
        self.predictor = FastRCNNPredictor(representation_size, num_classes_with_background)

    def forward(self, features: Tensor, boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits (R x (K+1)) and box deltas (R x 4 (K+1)) of every box of every image."""
        return self.predictor(self.fc_layers(self.roi_pooler(features, boxes)))


def fast_rcnn_loss(
    class_logits: Tensor,
    box_deltas: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    box_labels: Tensor | None = None,
    smooth_l1_beta: float = 1.0,
) -> dict[str, Tensor]:
    """Multi-task loss (Fast R-CNN Sec. 2.3): L = L_cls(p, u) + [u >= 1] L_loc(t^u, v).

    ``labels`` (R, 0..K) are the classes u; the smooth L1 loss (Eq. 3: beta = 1) of the deltas of class
    ``box_labels`` (default ``labels``; 0 = no box loss, e.g. R-CNN regresses only IoU >= 0.6) is summed
    over the 4 coordinates and averaged over all R RoIs, as the paper's lambda = 1 normalisation.
    """
    box_labels = labels if box_labels is None else box_labels
    if labels.numel() == 0:  # no RoI sampled in the whole batch (e.g. only empty images): nothing to learn
        zero = class_logits.sum() * 0.0 + box_deltas.sum() * 0.0
        return {"loss_classifier": zero, "loss_box_reg": zero}
    loss_classifier = F.cross_entropy(class_logits, labels)
    foreground = torch.where(box_labels > 0)[0]
    deltas = box_deltas.reshape(len(box_deltas), -1, 4)[foreground, box_labels[foreground]]
    loss_box = F.smooth_l1_loss(deltas, regression_targets[foreground], beta=smooth_l1_beta, reduction="sum")
    return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box / max(1, labels.numel())}


def postprocess_detections(
    class_scores: Tensor,
    box_deltas: Tensor,
    proposals: Tensor,
    image_size: tuple[int, int],
    box_coder: BoxCoder,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.3,
    detections_per_img: int = 100,
    min_box_size: float = 1e-2,
) -> dict[str, Tensor]:
    """Detections of one image from its regions' scores (R x (K+1), column 0 background, unused) and
    deltas (R x 4 (K+1)): each region gives one box per class, moved by that class's deltas; then
    :func:`models.parts.postprocess.select_detections` (clipping to the image, score threshold, per-class
    NMS, both papers at IoU 0.3, and the ``detections_per_img`` best)."""
    boxes = box_coder.decode(box_deltas, proposals).reshape(-1, class_scores.shape[1], 4)
    candidates = class_candidates(boxes[:, 1:], class_scores[:, 1:], score_thresh)
    return select_detections(*candidates, score_thresh, nms_thresh, detections_per_img, image_size, min_box_size)
