"""Corner pooling (Law and Deng, CornerNet, ECCV 2018, Sec. 3.4; course slides 92-93).

A box corner usually lies outside the object, so there is no local evidence for it. Top-left corner
pooling looks to the right for the object's top edge and down for its left edge: at (i, j) it takes
the max of one feature map over everything below (rows i..H) plus the max of another map over
everything to the right (columns j..W). Bottom-right pooling looks up and to the left.

A running maximum from a border is a cumulative max: ``torch.cummax`` along the dimension, on the
flipped tensor when the maximum runs towards the start. No loops, O(HW) per channel.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from models.parts.backbones import conv_bn_relu


def _max_to_end(x: Tensor, dim: int) -> Tensor:
    """out[..., i, ...] = max(x[..., i:, ...]) along ``dim``: cumulative max of the flipped tensor."""
    return torch.cummax(x.flip(dim), dim).values.flip(dim)


def _max_from_start(x: Tensor, dim: int) -> Tensor:
    """out[..., i, ...] = max(x[..., :i + 1, ...]) along ``dim``."""
    return torch.cummax(x, dim).values


def corner_pool_top_left(top: Tensor, left: Tensor) -> Tensor:
    """Top-left corner pooling of B x C x H x W maps: max of ``top`` over the rows below (inclusive)
    plus max of ``left`` over the columns to the right (inclusive), as Eq. 6 of the paper."""
    return _max_to_end(top, dim=2) + _max_to_end(left, dim=3)


def corner_pool_bottom_right(bottom: Tensor, right: Tensor) -> Tensor:
    """Bottom-right corner pooling: max of ``bottom`` over the rows above (inclusive) plus max of
    ``right`` over the columns to the left (inclusive)."""
    return _max_from_start(bottom, dim=2) + _max_from_start(right, dim=3)


class CornerPooling(nn.Module):
    """The corner pooling module of CornerNet's prediction module (Fig. 7).

    Two 3x3 conv-BN-ReLU branches feed the two directions of corner pooling; the pooled sum goes
    through a 3x3 conv-BN and is added to a 1x1 conv-BN shortcut of the input (a residual block
    whose first conv is replaced by pooling), then ReLU and a 3x3 conv-BN-ReLU.

    ``pool=False`` keeps the module and skips the pooling (the branches are simply summed): the
    paper's "without corner pooling" ablation (Table 1) at equal parameter count.
    """

    def __init__(self, channels: int, corner: Literal["top_left", "bottom_right"], pool: bool = True) -> None:
        super().__init__()
        if corner not in ("top_left", "bottom_right"):
            raise ValueError(f"corner must be 'top_left' or 'bottom_right', got {corner!r}")
        self.pool_fn = corner_pool_top_left if corner == "top_left" else corner_pool_bottom_right
        self.pool = pool
        self.branch_vertical = conv_bn_relu(channels, channels)
        self.branch_horizontal = conv_bn_relu(channels, channels)
        self.merge = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.shortcut = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.relu = nn.ReLU(inplace=True)
        self.out = conv_bn_relu(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        vertical, horizontal = self.branch_vertical(x), self.branch_horizontal(x)
        pooled = self.pool_fn(vertical, horizontal) if self.pool else vertical + horizontal
        return self.out(self.relu(self.merge(pooled) + self.shortcut(x)))
