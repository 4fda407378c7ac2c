"""The last step of every detector's test pass: scored candidate boxes -> the image's detections.

Candidates scoring above a threshold are (optionally) clipped to the image, boxes smaller than a minimum
side are dropped, and per-class non-maximum suppression keeps the best of each cluster of overlapping
boxes of one class (R-CNN Sec. 2.2, Fast R-CNN Sec. 3, YOLO Sec. 2.2, CornerNet Sec. 4.1); the
``max_detections`` best survive. torchvision's detectors do the same in their ``postprocess_detections``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes


def class_candidates(
    boxes: Tensor, class_scores: Tensor, score_thresh: float = float("-inf")
) -> tuple[Tensor, Tensor, Tensor]:
    """The (box, class) candidates scoring above ``score_thresh``: ``class_scores`` N x C give labels 1..C;
    ``boxes`` are N x 4 (one box for every class: windows, YOLO's cells) or N x C x 4 (class-specific,
    R-CNN's regressed boxes). Returns boxes (M x 4), scores (M) and labels (M), box-major. Thresholding
    first keeps memory at the candidates that pass, not N x C (a COCO sliding window: ~17k x 80)."""
    index, column = torch.where(class_scores > score_thresh)
    picked = boxes[index] if boxes.dim() == 2 else boxes[index, column]
    return picked, class_scores[index, column], column + 1


def select_detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    score_thresh: float,
    nms_thresh: float,
    max_detections: int,
    image_size: tuple[int, int] | None = None,
    min_size: float = 0.0,
) -> dict[str, Tensor]:
    """``{boxes, scores, labels}`` of one image from its candidates (N x 4 xyxy, N, N): those scoring above
    ``score_thresh``, clipped to ``image_size`` (height, width) when given, at least ``min_size`` wide and
    high when positive, then per-class NMS at IoU ``nms_thresh`` and the ``max_detections`` best, best first."""
    keep = torch.where(scores > score_thresh)[0]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if image_size is not None:
        boxes = clip_boxes_to_image(boxes, image_size)
    if min_size > 0:
        keep = remove_small_boxes(boxes, min_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
