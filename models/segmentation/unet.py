"""U-Net: convolutional networks for biomedical image segmentation (Ronneberger et al., MICCAI 2015).

A contracting path (two 3x3 convolutions, then 2x2 max pooling, doubling the channels each level)
and a symmetric expanding path: a 2x2 "up-convolution" (stride-2 transpose convolution) halving
the channels, concatenation with the contracting path's map of the same level, two 3x3
convolutions (Sec. 2, Fig. 1). A 1x1 convolution scores the classes. Unlike the paper, the 3x3
convolutions are padded and followed by batch norm, so the output has the input's size and no
cropping of the skip connections is needed (the image is padded to a multiple of 2**depth).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import Normalize

from models.base import SemanticSegmentationModule
from models.parts.backbones import conv_bn_relu
from models.parts.pretrain import IMAGE_MEAN, IMAGE_STD
from models.parts.upsampling import pad_to_multiple
from models.registry import register_model


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """The unit of both paths: two 3x3 conv-BN-ReLU layers."""
    return nn.Sequential(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))


class ExpandingStep(nn.Module):
    """One level of the expanding path: 2x2 up-convolution, concatenation with the skip, two 3x3 convs."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.convs = double_conv(out_channels + skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.convs(torch.cat([skip, self.up(x)], dim=1))


@register_model("unet", family="semantic_segmentation", task="semantic")
class UNet(SemanticSegmentationModule):
    """U-Net with ``len(channels) - 1`` poolings.

    Args:
        channels: widths of the levels, finest first (the paper: 64, 128, 256, 512, 1024).
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128, 256), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(channels) < 2:
            raise ValueError(f"U-Net needs at least two levels, got channels={list(channels)}")
        self.normalize = Normalize(IMAGE_MEAN, IMAGE_STD)
        widths = list(channels)
        self.contracting = nn.ModuleList(double_conv(c_in, c_out) for c_in, c_out in zip([3] + widths[:-1], widths))
        self.expanding = nn.ModuleList(
            ExpandingStep(widths[i + 1], widths[i], widths[i]) for i in reversed(range(len(widths) - 1))
        )
        self.classifier = nn.Conv2d(widths[0], self.num_classes + 1, 1)
        self.size_multiple = 2 ** (len(widths) - 1)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        x = pad_to_multiple(self.normalize(images), self.size_multiple)
        skips = []
        with self.stage_timer.stage("contracting"):
            for i, level in enumerate(self.contracting):
                x = level(x if i == 0 else F.max_pool2d(x, 2))
                skips.append(x)
        skips.pop()  # the bottom of the "U" feeds the expanding path directly
        with self.stage_timer.stage("expanding"):
            for step in self.expanding:
                x = step(x, skips.pop())
            return self.classifier(x)[..., :height, :width]
