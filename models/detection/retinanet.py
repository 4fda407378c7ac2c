"""RetinaNet: Focal Loss for Dense Object Detection (Lin et al., ICCV 2017; course slides 63-68).

A one-stage detector as accurate as two-stage ones. Its ~10^4 anchors per image are nearly all easy
background, which swamps cross-entropy (slide 64: training drifts to "everything is background");
the focal loss scales each term by ``(1 - p_t)^gamma`` so the few hard examples dominate (Sec. 3).
The network: an FPN (P3-P7 in the paper, fewer for small images), 9 anchors per location (3 scales
x 3 aspect ratios), and two subnets of four 3x3 convs shared by all levels, one classifying every
anchor with K sigmoids, its last bias set so that every anchor starts at probability pi = 0.01
(Sec. 3.3, against a flood of background loss in the first iterations), one regressing box offsets
(smooth L1, or GIoU). Anchors match boxes at IoU >= 0.5, are background below 0.4, ignored between.

torchvision's RetinaNet (matcher, subnets, decoding) composed with our backbone and FPN; the
classification loss is ours so the config can pick focal loss or plain cross-entropy (the ablation).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Literal, Sequence

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from models.detection.torchvision_detector import TorchvisionDetector
from models.parts.anchors import check_one_size_per_level, retinanet_anchor_generator
from models.parts.backbones import build_backbone
from models.parts.losses import focal_loss
from models.parts.image_ops import IMAGE_MEAN, IMAGE_STD
from models.registry import register_model


class ClassificationSubnet(RetinaNetClassificationHead):
    """torchvision's classification subnet with the classification loss picked by ``loss``.

    ``focal``: Eq. 5 with ``alpha`` and ``gamma``; ``ce``: plain binary cross-entropy (gamma 0, no
    alpha). Both are summed over every anchor that is not ignored and divided by the number of
    positive anchors (Sec. 3.3), so the two differ only in the loss of each anchor.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        prior_probability: float = 0.01,
        loss: Literal["focal", "ce"] = "focal",
        alpha: float = 0.25,
        gamma: float = 2.0,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__(in_channels, num_anchors, num_classes, prior_probability, norm_layer)
        if loss not in ("focal", "ce"):
            raise ValueError(f"loss must be 'focal' or 'ce', got {loss!r}")
        self.alpha, self.gamma = (alpha, gamma) if loss == "focal" else (-1.0, 0.0)

    def compute_loss(
        self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor], matched_idxs: list[Tensor]
    ) -> Tensor:
        losses = []
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs):
            foreground = matched >= 0
            one_hot = torch.zeros_like(logits)
            one_hot[foreground, target["labels"][matched[foreground]]] = 1.0
            valid = matched != Matcher.BETWEEN_THRESHOLDS
            loss = focal_loss(logits[valid], one_hot[valid], self.alpha, self.gamma, reduction="sum")
            losses.append(loss / foreground.sum().clamp(min=1))
        return torch.stack(losses).mean()


def p6p7_block(c5_channels: int, channels: int, p6_from: Literal["c5", "p5"] = "c5") -> LastLevelP6P7:
    """P6 and P7 (Sec. 4, "RetinaNet Detector"): P6 a 3x3 stride-2 conv on C5 (``p6_from: c5``, the
    paper's choice, torchvision's RetinaNet v2) or on P5 (``p5``, the FCOS paper's and torchvision's v1),
    P7 a ReLU and a 3x3 stride-2 conv on P6. C5 is the body's map of the last ``return_layers`` entry."""
    if p6_from not in ("c5", "p5"):
        raise ValueError(f"p6_from must be 'c5' or 'p5', got {p6_from!r}")
    block = LastLevelP6P7(c5_channels if p6_from == "c5" else channels, channels)
    block.use_P5 = p6_from == "p5"  # torchvision infers it from equal channel counts
    return block


@register_model("retinanet", family="one_stage_anchor")
class RetinaNet(TorchvisionDetector):
    """RetinaNet over ``return_layers`` of ``backbone``, with or without an FPN.

    Args:
        backbone, weights: the network and its initialisation (the paper: ImageNet ResNet; ``weights:
            shapes`` pretrains it on the embedded dataset of the trainer's DataModule, see
            :mod:`models.parts.pretrain`; None trains from scratch).
        return_layers, fpn_channels, fpn_extra: see :class:`models.parts.backbones.Backbone` (the paper:
            C3-C5 -> P3-P5, plus P6, P7 with ``fpn_extra: p6p7``).
        p6_from: with ``fpn_extra: p6p7``, P6 from ``c5`` (the paper) or ``p5``; see :func:`p6p7_block`.
        fpn: false keeps one map (one entry in ``return_layers``) with every anchor size on it.
        anchor_sizes: base anchor side per level in pixels (the paper: 32..512 on P3..P7, i.e. 4 x the
            stride; 2 x the stride here for objects of 6-97 px); each gets 3 octave scales.
        anchor_ratios: height/width ratios (0.5, 1, 2).
        loss: ``focal`` or ``ce`` (the ablation); alpha, gamma: focal-loss parameters (0.25, 2).
        prior_probability: initial foreground probability of every anchor (0.01).
        head_norm_groups: group norm in the subnets' convs with this many groups (0: none, as the
            paper). The subnets start with weights of std 0.01 (Sec. 4.1); without normalisation and
            without a pretrained backbone their signal vanishes over the four convs and training from
            scratch stalls, which group norm (as in FCOS and torchvision's RetinaNet v2) prevents.
        box_loss: ``smooth_l1`` (the paper, beta 1/9), ``giou`` or ``l1``.
        fg_iou_thresh, bg_iou_thresh: anchor assignment (0.5, 0.4).
        min_size, max_size: torchvision's resize of the shorter/longer side (the paper: 800).
        score_thresh, nms_thresh, detections_per_img, topk_candidates: decoding (Sec. 4: 0.05, 0.5,
            100 per image, top 1000 per level).
        weights (``torchvision``: COCO ``retinanet_resnet50_fpn``), builder_kwargs, frozen_bn,
            trainable_backbone_layers: see :class:`~models.detection.torchvision_detector.TorchvisionDetector`.
    """

    foreground_classifier = True

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        return_layers: Sequence[str] = ("c3", "c4", "c5"),
        fpn: bool = True,
        fpn_channels: int = 64,
        fpn_extra: Literal["none", "maxpool", "p6p7"] = "none",
        p6_from: Literal["c5", "p5"] = "c5",
        anchor_sizes: Sequence[float] = (16, 32, 64),
        anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        loss: Literal["focal", "ce"] = "focal",
        alpha: float = 0.25,
        gamma: float = 2.0,
        prior_probability: float = 0.01,
        head_norm_groups: int = 16,
        box_loss: Literal["smooth_l1", "giou", "l1"] = "smooth_l1",
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.4,
        min_size: int = 128,
        max_size: int = 128,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        topk_candidates: int = 1000,
        frozen_bn: bool | None = None,
        trainable_backbone_layers: int | None = None,
        builder_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.adopt_pretrained(weights, trainable_backbone_layers, builder_kwargs):
            return
        if not fpn and len(return_layers) != 1:
            raise ValueError(f"without an FPN RetinaNet uses one map; got return_layers={list(return_layers)}")
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
        if fpn_extra == "p6p7":
            c5_channels = features.body.stage_channels[list(return_layers)[-1]]
            features.fpn.extra_blocks = p6p7_block(c5_channels, fpn_channels, p6_from)
        if fpn:
            check_one_size_per_level(anchor_sizes, len(features.strides))
        anchors = retinanet_anchor_generator(anchor_sizes, aspect_ratios=anchor_ratios, single_level=not fpn)
        num_anchors = anchors.num_anchors_per_location()[0]
        norm_layer = partial(nn.GroupNorm, head_norm_groups) if head_norm_groups else None
        head = RetinaNetHead(features.out_channels, num_anchors, self.num_classes, norm_layer)
        # K sigmoids, no background column (foreground_classifier): torchvision sees labels 0..K-1.
        head.classification_head = ClassificationSubnet(
            features.out_channels, num_anchors, self.num_classes, prior_probability, loss, alpha, gamma, norm_layer
        )
        head.regression_head._loss_type = box_loss  # torchvision's switch (its own v2 model sets "giou")
        detector = torchvision.models.detection.RetinaNet(
            features,
            num_classes=self.num_classes,
            min_size=min_size,
            max_size=max_size,
            image_mean=IMAGE_MEAN,
            image_std=IMAGE_STD,
            anchor_generator=anchors,
            head=head,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            fg_iou_thresh=fg_iou_thresh,
            bg_iou_thresh=bg_iou_thresh,
            topk_candidates=topk_candidates,
        )
        self.attach(detector)
