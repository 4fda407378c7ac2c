"""DeepLabv3: atrous convolution and Atrous Spatial Pyramid Pooling (Chen et al., arXiv 1706.05587).

The backbone's last stages trade their stride for dilation (Sec. 3.1-3.2) so the features stay at
output stride 16 or 8; ASPP (Sec. 3.3: a 1x1 branch, three 3x3 atrous branches, image pooling,
torchvision's ``ASPP``) and a 3x3 conv score the classes, and the logits are bilinearly upsampled
to the input size (Sec. 4.1). torchvision's ``DeepLabHead`` is this head with 256 channels; the
width here is an option so the embedded dataset trains on a CPU.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from models.parts.backbones import Backbone, build_body, conv_bn_relu
from models.registry import register_model
from models.segmentation.torchvision_segmenter import TorchvisionSegmenter


def dilate_stage(stage: nn.Module, dilation: int, previous_dilation: int = 1) -> None:
    """Replace the stride of ``stage`` by atrous convolution (DeepLabv3 Sec. 3.1).

    The stage's strided convolution gets stride 1 and keeps the rate its input was computed at,
    ``previous_dilation``, as does every k x k convolution (k > 1) before it; every k x k convolution
    after it gets ``dilation`` (= ``previous_dilation`` x the removed stride); 1x1 convolutions only lose
    their stride. Padding stays "same" (dilation x (k - 1) / 2). This is torchvision's
    ``replace_stride_with_dilation`` (the first block's conv at the previous dilation, the later ones
    at the new): with it the dilated network, sampled every ``dilation``-th position, equals the
    strided one with the same weights, so pretrained weights keep their meaning on the denser grid.
    """
    strided_seen = False
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            stride = module.stride[0]
            if stride > 1 and module.kernel_size[0] > 1:
                if strided_seen:
                    raise ValueError("dilate_stage: the stage has more than one strided k x k convolution")
                if dilation != previous_dilation * stride:
                    raise ValueError(
                        f"dilate_stage: replacing stride {stride} at rate {previous_dilation} needs dilation "
                        f"{previous_dilation * stride}, got {dilation}"
                    )
            rate = previous_dilation if not strided_seen else dilation
            strided_seen = strided_seen or (stride > 1 and module.kernel_size[0] > 1)
            module.stride = (1, 1)
            if module.kernel_size[0] > 1:
                module.dilation = (rate, rate)
                module.padding = tuple(rate * (k - 1) // 2 for k in module.kernel_size)
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            raise ValueError("dilate_stage: the stage has a pooling layer; only strided convolutions can be dilated")


def deeplab_head(in_channels: int, num_outputs: int, atrous_rates: Sequence[int], channels: int = 256) -> nn.Sequential:
    """ASPP, a 3x3 conv-BN-ReLU and a 1x1 classifier: torchvision's ``DeepLabHead`` at any width."""
    return nn.Sequential(
        ASPP(in_channels, atrous_rates, channels), conv_bn_relu(channels, channels), nn.Conv2d(channels, num_outputs, 1)
    )


@register_model("deeplabv3", family="semantic_segmentation")
class DeepLabV3(TorchvisionSegmenter):
    """DeepLabv3 on ``backbone``'s ``c5``, dilated to ``output_stride``.

    Args:
        backbone, weights: see :func:`models.parts.backbones.build_backbone` (``c5`` at stride 32:
            ``small_cnn``, ``resnet18``, ``resnet50``); ``weights: shapes`` pretrains the body as a
            classifier on the embedded dataset of the trainer's DataModule (:mod:`models.parts.pretrain`).
        output_stride: 16 dilates ``c5`` (rate 2); 8 dilates ``c4`` (rate 2) and ``c5`` (rate 4), each
            stage's formerly strided conv at the rate before it (1, resp. 2; see :func:`dilate_stage`).
        atrous_rates: ASPP's rates (the paper: 6, 12, 18 at output stride 16 on 513 px crops,
            doubled at 8; scaled down here for 128 px images).
        aspp_channels: width of ASPP and the head (the paper: 256).
        weights: besides body weights, ``torchvision`` (or ``COCO_WITH_VOC_LABELS_V1``) loads torchvision's
            whole ``deeplabv3_resnet50`` (COCO's 20 VOC classes, :mod:`models.parts.torchvision_weights`), the other
            options unused; ``eval_size``: eval inputs resized to this shorter side and the logits back
            (its weights' transform: 520); ``aux_loss_weight``: its auxiliary head's loss (0.5).
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        output_stride: Literal[8, 16] = 8,
        atrous_rates: Sequence[int] = (3, 6, 9),
        aspp_channels: int = 64,
        eval_size: int | None = None,
        aux_loss_weight: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(eval_size, aux_loss_weight, **kwargs)
        if self.adopt_pretrained(weights, stages=("backbone", "aspp_head")):
            return
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        body = build_body(backbone, weights, pretrained_bodies=self.pretrained_bodies)  # shapes: loaded at fit
        self.backbone = Backbone(body, return_layers=("c5",))
        if self.backbone.strides[-1] != 32:
            raise ValueError(
                f"deeplabv3 needs a backbone whose c5 has stride 32; {backbone}'s has {self.backbone.strides[-1]}"
            )
        stages = self.backbone.body.stages
        stages = stages if isinstance(stages, nn.ModuleDict) else {f"c{i + 1}": stage for i, stage in enumerate(stages)}
        if output_stride == 8:
            dilate_stage(stages["c4"], 2)
        previous = 1 if output_stride == 16 else 2
        dilate_stage(stages["c5"], 2 * previous, previous_dilation=previous)
        self.output_stride = output_stride
        self.head = deeplab_head(self.backbone.out_channels, self.num_classes + 1, atrous_rates, aspp_channels)
        self.stage_timer.instrument(self.backbone, "backbone")
        self.stage_timer.instrument(self.head, "aspp_head")

    def segment(self, images: Tensor) -> Tensor:
        features = self.backbone(self.normalize(images))["c5"]
        logits = self.head(features)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
