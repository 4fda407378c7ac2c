"""Training targets for region proposals: label each by its overlap with the objects, then sample RoIs.

R-CNN fine-tuning (Girshick et al. 2014, Sec. 2.3): a proposal with IoU >= 0.5 with an object is a
positive of that object's class, every other proposal is background; mini-batches hold 25 % positives.
Fast R-CNN (Girshick 2015, Sec. 2.3): 25 % of the R RoIs have IoU >= 0.5 (foreground), the rest are
background with IoU in [0.1, 0.5), the lower bound acting as hard-example mining; the others are not
used. Both add the ground-truth boxes to the proposals. Box regression targets are the (dx, dy, dw, dh)
from a proposal to its object (R-CNN Appendix C), encoded by :class:`models.parts.box_coding.BoxCoder`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

from models.parts.box_coding import BoxCoder

#: Label of a proposal that is neither foreground nor background (left out of the samples).
IGNORE = -1


@dataclass
class ProposalLabels:
    """Per proposal: ``labels`` (class 1..K, 0 background, -1 ignored), the ``matched_boxes`` of its
    best-overlapping object (itself where the image has none) and that best ``ious``."""

    labels: Tensor
    matched_boxes: Tensor
    ious: Tensor


def label_proposals(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    fg_iou: float = 0.5,
    bg_iou: tuple[float, float] = (0.0, 0.5),
) -> ProposalLabels:
    """Label proposals (N x 4) by their best IoU with the objects (M x 4, labels M in 1..K).

    IoU >= ``fg_iou``: the object's class; ``bg_iou[0]`` <= IoU < ``bg_iou[1]``: background (0); else -1.
    """
    if len(gt_boxes) == 0:
        ious = proposals.new_zeros(len(proposals))
        labels = torch.zeros(len(proposals), dtype=torch.int64, device=proposals.device)
        labels[ious < bg_iou[0]] = IGNORE
        return ProposalLabels(labels, proposals, ious)
    ious, matched = box_iou(gt_boxes.to(proposals.dtype), proposals).max(dim=0)
    labels = gt_labels[matched].to(torch.int64)
    background = (ious >= bg_iou[0]) & (ious < bg_iou[1])
    labels = torch.where(ious >= fg_iou, labels, torch.where(background, 0, IGNORE))
    return ProposalLabels(labels, gt_boxes[matched].to(proposals.dtype), ious)


def sample_rois(
    labels: Tensor, num_samples: int, positive_fraction: float = 0.25, generator: torch.Generator | None = None
) -> Tensor:
    """Indices of at most ``num_samples`` proposals: up to ``positive_fraction`` of them foreground
    (label > 0), the rest background (label 0), both drawn uniformly without replacement; foreground first.
    Fewer when there are not enough of either (no padding with ignored proposals)."""
    foreground = torch.where(labels > 0)[0]
    background = torch.where(labels == 0)[0]
    num_fg = min(int(num_samples * positive_fraction), len(foreground))
    num_bg = min(num_samples - num_fg, len(background))
    pick_fg = torch.randperm(len(foreground), generator=generator, device="cpu")[:num_fg].to(labels.device)
    pick_bg = torch.randperm(len(background), generator=generator, device="cpu")[:num_bg].to(labels.device)
    return torch.cat([foreground[pick_fg], background[pick_bg]])


@dataclass
class SampledRoIs:
    """The training regions of a batch: ``boxes`` per image, and for all of them concatenated, the
    ``labels`` (0..K), the best ``ious`` with an object and the ``regression_targets`` (R x 4) towards it."""

    boxes: list[Tensor]
    labels: Tensor
    ious: Tensor
    regression_targets: Tensor


class RoISampler:
    """Adds the ground truth to each image's proposals, labels them, samples ``rois_per_image`` and
    encodes their regression targets: one call gives a mini-batch of Sec. 2.3 (Fast R-CNN).

    Args:
        rois_per_image: R / N, RoIs per image (Fast R-CNN: 128 / 2 = 64; R-CNN: 128 windows per
            mini-batch over all images).
        positive_fraction: share of foreground RoIs (both papers: 25 %).
        fg_iou, bg_iou: see :func:`label_proposals`.
        box_coder: the (dx, dy, dw, dh) encoding.
    """

    def __init__(
        self,
        rois_per_image: int = 64,
        positive_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou: tuple[float, float] = (0.1, 0.5),
        box_coder: BoxCoder | None = None,
    ) -> None:
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        if not bg_iou[0] <= bg_iou[1] <= fg_iou:
            raise ValueError(f"need bg_iou[0] <= bg_iou[1] <= fg_iou, got bg_iou={bg_iou}, fg_iou={fg_iou}")
        self.rois_per_image, self.positive_fraction = rois_per_image, positive_fraction
        self.fg_iou, self.bg_iou = fg_iou, tuple(bg_iou)
        self.box_coder = box_coder or BoxCoder()

    def __call__(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> SampledRoIs:
        boxes, labels, ious, regression_targets = [], [], [], []
        for image_proposals, target in zip(proposals, targets):
            gt_boxes = target["boxes"].to(image_proposals.dtype)
            candidates = torch.cat([image_proposals, gt_boxes])
            labelled = label_proposals(candidates, gt_boxes, target["labels"], self.fg_iou, self.bg_iou)
            keep = sample_rois(labelled.labels, self.rois_per_image, self.positive_fraction)
            boxes.append(candidates[keep])
            labels.append(labelled.labels[keep])
            ious.append(labelled.ious[keep])
            regression_targets.append(self.box_coder.encode(labelled.matched_boxes[keep], candidates[keep]))
        return SampledRoIs(boxes, torch.cat(labels), torch.cat(ious), torch.cat(regression_targets))
