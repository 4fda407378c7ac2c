"""Stacked hourglass network (Newell et al., ECCV 2016), the backbone of CornerNet (Sec. 3.5).

An hourglass module downsamples a feature map step by step, then upsamples it back, adding at every
resolution a skip branch from the way down: every output location sees the whole image and keeps
fine detail, which keypoints (corners) need. CornerNet's choices: stride-2 residual blocks instead of
max pooling to downsample, nearest-neighbour upsampling, a stem that brings the image to stride 4,
and, between stacks, the intermediate output and the input merged by 1x1 convs. The paper's
Hourglass-104 has 2 stacks, depth 5 and 256-512 channels; the defaults here are a light network
that trains on a CPU at 128 px.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from models.parts.backbones import conv_bn_relu


class Residual(nn.Module):
    """Residual block of two 3x3 convs (He et al. 2016) with a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, out_channels, stride),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.skip(x))


class Hourglass(nn.Module):
    """One hourglass module, built recursively: ``channels[0]`` at the input resolution, each further
    entry one stride-2 level deeper (``len(channels) - 1`` downsamplings)."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"an hourglass needs at least two levels of channels, got {list(channels)}")
        outer, inner = channels[0], channels[1]
        self.skip = Residual(outer, outer)
        self.down = Residual(outer, inner, stride=2)
        self.inner = Hourglass(channels[1:]) if len(channels) > 2 else Residual(inner, inner)
        self.up = nn.Sequential(Residual(inner, outer), nn.Upsample(scale_factor=2, mode="nearest"))

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.up(self.inner(self.down(x)))


class StackedHourglass(nn.Module):
    """Stem to stride 4, then ``num_stacks`` hourglass modules; returns every stack's features.

    Each stack's output (``channels[0]`` channels at stride 4) is supervised (intermediate
    supervision, Newell et al. Sec. 3.4; CornerNet Sec. 3.5); the next stack's input is the previous
    input plus 1x1 projections of the previous output. The detector decodes the last one.

    Attributes:
        out_channels: channels of each returned map. stride: 4.
    """

    stride = 4

    def __init__(
        self, num_stacks: int = 1, channels: Sequence[int] = (32, 48, 64, 96), stem_channels: int = 16
    ) -> None:
        super().__init__()
        if num_stacks < 1:
            raise ValueError(f"num_stacks must be >= 1, got {num_stacks}")
        width = channels[0]
        self.out_channels = width
        # CornerNet's stem: a 7x7 stride-2 conv and a stride-2 residual block (image -> stride 4).
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
            Residual(stem_channels, width, stride=2),
        )
        self.hourglasses = nn.ModuleList(Hourglass(channels) for _ in range(num_stacks))
        self.outputs = nn.ModuleList(conv_bn_relu(width, width) for _ in range(num_stacks))
        self.merge_input = nn.ModuleList(self._project(width) for _ in range(num_stacks - 1))
        self.merge_output = nn.ModuleList(self._project(width) for _ in range(num_stacks - 1))
        self.next_input = nn.ModuleList(Residual(width, width) for _ in range(num_stacks - 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _project(channels: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.stem(images)
        features = []
        for i, (hourglass, output) in enumerate(zip(self.hourglasses, self.outputs)):
            y = output(hourglass(x))
            features.append(y)
            if i < len(self.hourglasses) - 1:
                x = self.next_input[i](nn.functional.relu(self.merge_input[i](x) + self.merge_output[i](y)))
        return features
