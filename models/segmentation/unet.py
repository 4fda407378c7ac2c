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
from models.parts.image_ops import IMAGE_MEAN, IMAGE_STD
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


@register_model("unet", family="semantic_segmentation")
class UNet(SemanticSegmentationModule):
    """U-Net with ``len(channels) - 1`` poolings, or on a backbone's stages.

    Args:
        channels: widths of the levels, finest first (the paper: 64, 128, 256, 512, 1024).
        backbone, weights: instead of the paper's contracting path, the stages of a
            ``build_backbone`` body (as U-Nets on pretrained encoders do, e.g. TernausNet): ``small_cnn``
            with ``weights: shapes`` (pretrained on the embedded dataset's crops, like every other
            model here) or a torchvision network with its weights. The expanding path is the paper's,
            one step per encoder stage, then 2x up-convolutions without skip back to full resolution.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        backbone: str | None = None,
        weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.normalize = Normalize(IMAGE_MEAN, IMAGE_STD)
        if backbone is None:
            if len(channels) < 2:
                raise ValueError(f"U-Net needs at least two levels, got channels={list(channels)}")
            widths = list(channels)
            self.encoder: nn.Module | None = None
            self.contracting = nn.ModuleList(double_conv(c_in, c_out) for c_in, c_out in zip([3] + widths[:-1], widths))
            self.stage_widths = {2**i: w for i, w in enumerate(widths)}  # level i at stride 2**i
        else:
            from models.segmentation.fcn import BackboneEncoder

            self.encoder = BackboneEncoder(backbone, weights, self.pretrained_bodies)
            self.stage_widths = dict(self.encoder.stage_channels)
        strides = sorted(self.stage_widths)
        self.expanding = nn.ModuleList(
            ExpandingStep(self.stage_widths[coarse], self.stage_widths[fine], self.stage_widths[fine])
            for fine, coarse in reversed(list(zip(strides[:-1], strides[1:])))
        )
        finest = strides[0]
        width = self.stage_widths[finest]
        self.to_full_resolution = nn.Sequential(
            *[
                nn.Sequential(nn.ConvTranspose2d(width, width, 2, stride=2), double_conv(width, width))
                for _ in range(finest.bit_length() - 1)
            ]
        )
        self.classifier = nn.Conv2d(width, self.num_classes + 1, 1)
        self.size_multiple = strides[-1]

    def contract(self, x: Tensor) -> dict[int, Tensor]:
        """The contracting path's maps by stride."""
        if self.encoder is not None:
            return dict(self.encoder(x)[0])
        maps = {}
        for i, level in enumerate(self.contracting):
            x = level(x if i == 0 else F.max_pool2d(x, 2))
            maps[2**i] = x
        return maps

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        x = pad_to_multiple(self.normalize(images), self.size_multiple)
        with self.stage_timer.stage("contracting"):
            maps = self.contract(x)
        with self.stage_timer.stage("expanding"):
            strides = sorted(maps)
            x = maps[strides[-1]]  # the bottom of the "U"
            for step, stride in zip(self.expanding, reversed(strides[:-1])):
                x = step(x, maps[stride])
            x = self.to_full_resolution(x)
            return self.classifier(x)[..., :height, :width]
