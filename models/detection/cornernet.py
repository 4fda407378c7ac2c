"""CornerNet: Detecting Objects as Paired Keypoints (Law and Deng, ECCV 2018; course slides 84-96).

Anchor-free: a box is a pair of keypoints, its top-left and its bottom-right corner. An hourglass
network (:mod:`models.parts.hourglass`) gives stride-4 features; for each corner type a prediction
module applies corner pooling (:mod:`models.parts.corner_pooling`) and predicts

* a heatmap per class (C channels): where the corners of each class are (Sec. 3.2);
* a 1-D embedding: the two corners of one object get close values, of different objects far apart
  (associative embedding, Sec. 3.3);
* an offset (2 channels): the sub-pixel position lost by the stride (Sec. 3.2, Eq. 2).

Training: heatmaps are 1 at the true corners and an unnormalised Gaussian around them, of radius
such that corners inside it still make a box of IoU >= 0.3 with the truth (:func:`gaussian_radius`,
:func:`draw_gaussian`); losses are the penalty-reduced focal loss, pull/push embedding losses and
smooth L1 on offsets (:mod:`models.parts.losses`), L = L_det + 0.1 L_pull + 0.1 L_push + L_off
(Sec. 3.5). Testing (:func:`decode_corners`, Sec. 4.1): 3x3 max-pool NMS on the heatmaps, top-k
corners of each type, every same-class pair whose bottom-right lies right of and below its top-left
and whose embeddings differ by less than 0.5 is a box, scored by the mean of its corners' scores;
then NMS.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from models.base import DetectionModule
from models.parts.corner_pooling import CornerPooling
from models.parts.hourglass import StackedHourglass
from models.parts.losses import penalty_reduced_focal_loss, pull_push_losses
from models.parts.postprocess import select_detections
from models.parts.image_ops import IMAGE_MEAN, IMAGE_STD
from models.registry import register_model


def gaussian_radius(height: Tensor, width: Tensor, min_overlap: float = 0.3) -> Tensor:
    """Largest corner displacement r that keeps the box's IoU with the truth >= ``min_overlap`` (Sec. 3.2).

    Each corner may move by up to r in x and y. The worst cases, each a quadratic in r solved for its
    boundary:
    both corners move the same way (the box shifts by (r, r)): ``(h - r)(w - r) / (2hw - (h - r)(w - r))``;
    both move inwards (it shrinks by 2r): ``(h - 2r)(w - 2r) / hw``;
    both move outwards (it grows by 2r): ``hw / ((h + 2r)(w + 2r))``.
    The radius is the smallest of the three (any shape of tensor; sizes in the heatmap's units).
    """
    h, w, o = height, width, min_overlap
    s, p = h + w, h * w
    shifted = (s - torch.sqrt(s**2 - 4 * p * (1 - o) / (1 + o))) / 2
    shrunk = (s - torch.sqrt(s**2 - 4 * p * (1 - o))) / 4
    grown = (torch.sqrt(s**2 + 4 * p * (1 - o) / o) - s) / 4
    return torch.minimum(torch.minimum(shifted, shrunk), grown).clamp(min=0)


def draw_gaussian(heatmap: Tensor, centers: Tensor, radii: Tensor, channels: Tensor) -> Tensor:
    """Splat an unnormalised Gaussian per object onto ``heatmap`` (C x H x W), in place, keeping the max.

    ``centers``: N x 2 integer (x, y); ``radii``: N integer radii; ``channels``: N channel indices.
    Each Gaussian is 1 at its centre, ``exp(-d^2 / 2 sigma^2)`` within the (2r + 1)^2 square around it
    and 0 outside, with sigma = (2r + 1) / 6 (a third of the radius measured to the edge of the centre
    pixel, so r = 0 still has a peak). All objects at once, no loop.
    """
    if len(centers) == 0:
        return heatmap
    _, height, width = heatmap.shape
    ys = torch.arange(height, device=heatmap.device, dtype=heatmap.dtype)[None, :, None]
    xs = torch.arange(width, device=heatmap.device, dtype=heatmap.dtype)[None, None, :]
    dx = xs - centers[:, 0, None, None].to(heatmap.dtype)
    dy = ys - centers[:, 1, None, None].to(heatmap.dtype)
    r = radii.to(heatmap.dtype)[:, None, None]
    sigma = (2 * r + 1) / 6
    gaussians = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    gaussians = gaussians * ((dx.abs() <= r) & (dy.abs() <= r))
    flat = heatmap.view(heatmap.shape[0], -1)
    flat.scatter_reduce_(0, channels[:, None].expand(-1, height * width), gaussians.flatten(1), "amax")
    return heatmap


def encode_corner_targets(
    targets: list[dict[str, Tensor]],
    num_classes: int,
    output_size: tuple[int, int],
    stride: int,
    min_overlap: float = 0.3,
) -> dict[str, Tensor]:
    """Training targets at the heatmaps' resolution for a batch.

    Returns ``heatmap_tl``/``heatmap_br`` (B x C x H x W), and per object (padded to M = the most
    objects in an image): ``index_tl``/``index_br`` (B x M, flat position y * W + x of each corner),
    ``offset_tl``/``offset_br`` (B x M x 2, the fraction lost by flooring, Eq. 2) and ``mask`` (B x M).
    """
    height, width = output_size
    device = targets[0]["boxes"].device
    num_images, max_objects = len(targets), max(1, max(len(t["boxes"]) for t in targets))
    out = {
        "heatmap_tl": torch.zeros(num_images, num_classes, height, width, device=device),
        "heatmap_br": torch.zeros(num_images, num_classes, height, width, device=device),
        "mask": torch.zeros(num_images, max_objects, dtype=torch.bool, device=device),
    }
    for corner in ("tl", "br"):
        out[f"index_{corner}"] = torch.zeros(num_images, max_objects, dtype=torch.int64, device=device)
        out[f"offset_{corner}"] = torch.zeros(num_images, max_objects, 2, device=device)
    limit = torch.tensor([width - 1, height - 1], device=device)
    for i, target in enumerate(targets):
        boxes, n = target["boxes"] / stride, len(target["boxes"])
        if n == 0:
            continue
        channels = target["labels"] - 1
        radii = gaussian_radius(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0], min_overlap).floor().long()
        out["mask"][i, :n] = True
        for corner, points in (("tl", boxes[:, :2]), ("br", boxes[:, 2:])):
            cells = torch.minimum(points.floor().clamp(min=0), limit)
            draw_gaussian(out[f"heatmap_{corner}"][i], cells.long(), radii, channels)
            out[f"index_{corner}"][i, :n] = (cells[:, 1] * width + cells[:, 0]).long()
            out[f"offset_{corner}"][i, :n] = points - cells
    return out


def _gather(maps: Tensor, index: Tensor) -> Tensor:
    """Values of B x D x H x W ``maps`` at flat positions ``index`` (B x M) -> B x M x D."""
    flat = maps.flatten(2)
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


def decode_corners(
    heatmap_tl: Tensor,
    heatmap_br: Tensor,
    embedding_tl: Tensor,
    embedding_br: Tensor,
    offset_tl: Tensor,
    offset_br: Tensor,
    stride: float = 1.0,
    k: int = 100,
    embedding_threshold: float = 0.5,
    max_detections: int = 1000,
) -> list[dict[str, Tensor]]:
    """Boxes from corner heatmaps (probabilities, B x C x H x W), embeddings (B x 1 x H x W) and offsets
    (B x 2 x H x W) as in Sec. 4.1, before NMS.

    3x3 max-pool NMS keeps local maxima of each heatmap; the top ``k`` of each corner type (over
    classes and positions) are paired k x k. A pair is a box when both corners have the same class,
    the bottom-right lies strictly right of and below the top-left, and their embeddings differ by
    less than ``embedding_threshold``; its score is the mean of the corner scores. Positions get their
    offsets and are scaled by ``stride`` to input pixels. Returns per image up to ``max_detections``
    ``{boxes, scores, labels (1..C)}``, best first.
    """
    num_images, _, height, width = heatmap_tl.shape
    k = min(k, heatmap_tl[0].numel())

    def top_corners(heatmap: Tensor, embedding: Tensor, offset: Tensor) -> tuple[Tensor, ...]:
        peaks = heatmap * (F.max_pool2d(heatmap, 3, stride=1, padding=1) == heatmap)
        scores, flat = peaks.flatten(1).topk(k)
        classes, position = flat // (height * width), flat % (height * width)
        shift = _gather(offset, position)
        x = ((position % width).to(heatmap.dtype) + shift[..., 0]) * stride
        y = ((position // width).to(heatmap.dtype) + shift[..., 1]) * stride
        return scores, classes, x, y, _gather(embedding, position)[..., 0]

    s_tl, c_tl, x_tl, y_tl, e_tl = top_corners(heatmap_tl, embedding_tl, offset_tl)
    s_br, c_br, x_br, y_br, e_br = top_corners(heatmap_br, embedding_br, offset_br)
    # Pairs: top-left i (dim 1) with bottom-right j (dim 2).
    valid = (
        (c_tl[:, :, None] == c_br[:, None, :])
        & (x_br[:, None, :] > x_tl[:, :, None])
        & (y_br[:, None, :] > y_tl[:, :, None])
        & ((e_tl[:, :, None] - e_br[:, None, :]).abs() < embedding_threshold)
    )
    scores = torch.where(valid, (s_tl[:, :, None] + s_br[:, None, :]) / 2, torch.full_like(valid, -1, dtype=s_tl.dtype))
    boxes = torch.stack(
        torch.broadcast_tensors(x_tl[:, :, None], y_tl[:, :, None], x_br[:, None, :], y_br[:, None, :]), dim=-1
    )
    labels = c_tl[:, :, None].expand_as(valid) + 1
    top_scores, top = scores.flatten(1).topk(min(max_detections, k * k))
    detections = []
    for i in range(num_images):
        keep = top_scores[i] > 0
        pick = top[i][keep]
        detections.append(
            {"boxes": boxes[i].flatten(0, 1)[pick], "scores": top_scores[i][keep], "labels": labels[i].flatten()[pick]}
        )
    return detections


def _branch(channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv, ReLU, 1x1 conv: one output of a prediction module (Fig. 7)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, out_channels, 1)
    )


class CornerHead(nn.Module):
    """CornerNet's prediction module for one corner type: corner pooling, then the heatmap (C),
    embedding (1) and offset (2) branches. The heatmap bias starts every location at probability
    ``prior`` (RetinaNet's initialisation, so the flood of background does not swamp the start)."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        corner: Literal["top_left", "bottom_right"],
        pool: bool = True,
        prior: float = 0.1,
    ) -> None:
        super().__init__()
        self.pool = CornerPooling(channels, corner, pool)
        self.heatmap = _branch(channels, num_classes)
        self.embedding = _branch(channels, 1)
        self.offset = _branch(channels, 2)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - prior) / prior))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.pool(features)
        return self.heatmap(x), self.embedding(x), self.offset(x)


@register_model("cornernet", family="anchor_free")
class CornerNet(DetectionModule):
    """CornerNet on a light stacked hourglass.

    Args:
        num_stacks, channels, stem_channels: the hourglass (see :class:`StackedHourglass`; the paper's
            Hourglass-104: 2 stacks, 256-512 channels, depth 5).
        corner_pool: false replaces corner pooling by a plain sum (the ablation, Table 1).
        image_size: images are resized to image_size x image_size (the paper: 511 crops).
        min_overlap: IoU that corners within a Gaussian's radius must keep (0.3).
        pull_weight, push_weight, offset_weight: loss weights alpha, beta, gamma (0.1, 0.1, 1).
        top_k, embedding_threshold: decoding (100 corners per type, 0.5).
        score_thresh, nms_thresh, detections_per_img: after pairing, per-class NMS (the paper uses
            soft-NMS) and the best ``detections_per_img`` (100).
    """

    def __init__(
        self,
        num_stacks: int = 1,
        channels: Sequence[int] = (32, 48, 64, 96),
        stem_channels: int = 16,
        corner_pool: bool = True,
        image_size: int = 128,
        min_overlap: float = 0.3,
        pull_weight: float = 0.1,
        push_weight: float = 0.1,
        offset_weight: float = 1.0,
        top_k: int = 100,
        embedding_threshold: float = 0.5,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.min_overlap = min_overlap
        self.loss_weights = {
            "loss_heatmap": 1.0,
            "loss_pull": pull_weight,
            "loss_push": push_weight,
            "loss_offset": offset_weight,
        }
        self.top_k, self.embedding_threshold = top_k, embedding_threshold
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.transform = GeneralizedRCNNTransform(
            image_size, image_size, IMAGE_MEAN, IMAGE_STD, size_divisible=1, fixed_size=(image_size, image_size)
        )
        self.backbone = StackedHourglass(num_stacks, channels, stem_channels)
        width = self.backbone.out_channels
        k = self.num_classes
        self.heads_tl = nn.ModuleList(CornerHead(width, k, "top_left", corner_pool) for _ in range(num_stacks))
        self.heads_br = nn.ModuleList(CornerHead(width, k, "bottom_right", corner_pool) for _ in range(num_stacks))
        self.stage_timer.instrument(self.backbone, "backbone")

    def loss(
        self, outputs_tl: tuple[Tensor, ...], outputs_br: tuple[Tensor, ...], encoded: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """CornerNet's loss for one stack's outputs ((heatmap logits, embeddings, offsets) per corner)."""
        (heat_tl, emb_tl, off_tl), (heat_br, emb_br, off_br) = outputs_tl, outputs_br
        mask = encoded["mask"]
        num_objects = mask.sum().clamp(min=1)
        e_tl = _gather(emb_tl, encoded["index_tl"])[..., 0]
        e_br = _gather(emb_br, encoded["index_br"])[..., 0]
        pull, push = pull_push_losses(e_tl, e_br, mask)
        offset = sum(
            F.smooth_l1_loss(_gather(off, encoded[f"index_{c}"])[mask], encoded[f"offset_{c}"][mask], reduction="sum")
            for c, off in (("tl", off_tl), ("br", off_br))
        )
        return {
            "loss_heatmap": penalty_reduced_focal_loss(heat_tl, encoded["heatmap_tl"])
            + penalty_reduced_focal_loss(heat_br, encoded["heatmap_br"]),
            "loss_pull": pull,
            "loss_push": push,
            "loss_offset": offset / num_objects,
        }

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        if self.training:
            size = tuple(features[0].shape[-2:])
            encoded = encode_corner_targets(targets, self.num_classes, size, self.backbone.stride, self.min_overlap)
            per_stack = [self.loss(tl(f), br(f), encoded) for f, tl, br in zip(features, self.heads_tl, self.heads_br)]
            # Every stack is supervised (intermediate supervision); averaged so the scale is the same for any depth.
            return {name: w * sum(s[name] for s in per_stack) / len(per_stack) for name, w in self.loss_weights.items()}
        with self.stage_timer.stage("head"):
            heat_tl, emb_tl, off_tl = self.heads_tl[-1](features[-1])
            heat_br, emb_br, off_br = self.heads_br[-1](features[-1])
        with self.stage_timer.stage("decode_nms"):
            candidates = decode_corners(
                heat_tl.sigmoid(),
                heat_br.sigmoid(),
                emb_tl,
                emb_br,
                off_tl,
                off_br,
                self.backbone.stride,
                self.top_k,
                self.embedding_threshold,
            )
            size = tuple(batch.tensors.shape[-2:])
            detections = [
                select_detections(
                    c["boxes"],
                    c["scores"],
                    c["labels"],
                    self.score_thresh,
                    self.nms_thresh,
                    self.detections_per_img,
                    size,
                )
                for c in candidates
            ]
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)
