"""In-network upsampling of the course's segmentation slides (slides 135-153).

Fixed "unpooling" (nearest neighbour, "bed of nails"), max unpooling with the encoder's pooling
indices (SegNet, Badrinarayanan et al. 2017), learnable transpose convolution initialised to
bilinear interpolation (Long et al. 2015, Sec. 3.3), and plain bilinear interpolation. Every
upsampler keeps the number of channels and multiplies height and width by ``factor``;
:func:`build_upsampler` picks one by name so a decoder can swap them from its config.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UpsamplingKind = Literal["nearest", "bed_of_nails", "max_unpool", "transpose", "bilinear"]
UPSAMPLING_KINDS: tuple[str, ...] = ("nearest", "bed_of_nails", "max_unpool", "transpose", "bilinear")


def nearest_unpool(x: Tensor, factor: int = 2) -> Tensor:
    """Nearest-neighbour unpooling: every value fills its ``factor x factor`` block (slide 136)."""
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def bed_of_nails_unpool(x: Tensor, factor: int = 2) -> Tensor:
    """ "Bed of nails" unpooling: every value goes to the top-left of its ``factor x factor`` block,
    zeros elsewhere (slide 136)."""
    out = x.new_zeros(*x.shape[:-2], x.shape[-2] * factor, x.shape[-1] * factor)
    out[..., ::factor, ::factor] = x
    return out


def max_unpool(x: Tensor, indices: Tensor, factor: int = 2, output_size: list[int] | None = None) -> Tensor:
    """Max unpooling (slide 137): every value goes back where its block's maximum was found by the
    matching ``max_pool2d(..., return_indices=True)``, zeros elsewhere. ``output_size`` restores an
    odd input size the pooling floored.

    A scatter into the flattened output rather than ``F.max_unpool2d``, which has no deterministic
    implementation and fails under ``torch.use_deterministic_algorithms`` (``trainer.deterministic: true``,
    the shapes configs); the indices of non-overlapping windows never collide, so the result is the same."""
    height, width = output_size[-2:] if output_size is not None else (x.shape[-2] * factor, x.shape[-1] * factor)
    out = x.new_zeros(*x.shape[:-2], height * width)
    return out.scatter(-1, indices.flatten(-2), x.flatten(-2)).view(*x.shape[:-2], height, width)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad the bottom and right of ``x`` to a multiple of ``multiple`` in height and width, so
    that every 2x downsampling of an encoder is undone exactly by a 2x upsampling (crop the output
    back with ``[..., :H, :W]``)."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def bilinear_kernel(size: int, factor: int) -> Tensor:
    """``size x size`` weights of bilinear interpolation by ``factor``: a transpose convolution with
    these weights (stride ``factor``) interpolates, the initialisation of FCN's upsampling layers."""
    centre = (size - 1) / 2 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    taps = taps.clamp(min=0)
    return taps[:, None] * taps[None, :]


class Upsampler(nn.Module):
    """Common call signature: ``forward(x, pool_indices=None)``; only max unpooling reads the
    indices (and the size of the map they were pooled from)."""

    needs_pool_indices = False

    def __init__(self, factor: int) -> None:
        super().__init__()
        if factor < 2:
            raise ValueError(f"upsampling factor must be >= 2, got {factor}")
        self.factor = factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class NearestUnpool(Upsampler):
    def forward(self, x: Tensor, pool_indices: Tensor | None = None, output_size: list[int] | None = None) -> Tensor:
        return nearest_unpool(x, self.factor)


class BedOfNailsUnpool(Upsampler):
    def forward(self, x: Tensor, pool_indices: Tensor | None = None, output_size: list[int] | None = None) -> Tensor:
        return bed_of_nails_unpool(x, self.factor)


class MaxUnpool(Upsampler):
    needs_pool_indices = True

    def forward(self, x: Tensor, pool_indices: Tensor | None = None, output_size: list[int] | None = None) -> Tensor:
        if pool_indices is None:
            raise ValueError("max unpooling needs the indices of the matching max pooling")
        return max_unpool(x, pool_indices, self.factor, output_size)


class BilinearUpsample(Upsampler):
    def forward(self, x: Tensor, pool_indices: Tensor | None = None, output_size: list[int] | None = None) -> Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


class TransposeConvUpsample(Upsampler):
    """Learnable upsampling: a ``channels -> channels`` transpose convolution of stride ``factor``
    (kernel ``2 * factor - factor % 2``, so the output is exactly ``factor`` times larger),
    initialised to per-channel bilinear interpolation as in FCN (Long et al. 2015, Sec. 3.3)."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__(factor)
        kernel = 2 * factor - factor % 2
        self.conv = nn.ConvTranspose2d(
            channels, channels, kernel, stride=factor, padding=(kernel - factor) // 2, bias=False
        )
        with torch.no_grad():
            self.conv.weight.zero_()
            weights = bilinear_kernel(kernel, factor)
            for c in range(channels):
                self.conv.weight[c, c] = weights

    def forward(self, x: Tensor, pool_indices: Tensor | None = None, output_size: list[int] | None = None) -> Tensor:
        return self.conv(x)


def build_upsampler(kind: UpsamplingKind, channels: int, factor: int = 2) -> Upsampler:
    """An upsampler by name (see :data:`UPSAMPLING_KINDS`) keeping ``channels`` channels."""
    if kind == "nearest":
        return NearestUnpool(factor)
    if kind == "bed_of_nails":
        return BedOfNailsUnpool(factor)
    if kind == "max_unpool":
        return MaxUnpool(factor)
    if kind == "transpose":
        return TransposeConvUpsample(channels, factor)
    if kind == "bilinear":
        return BilinearUpsample(factor)
    raise ValueError(f"unknown upsampling {kind!r}; expected one of {UPSAMPLING_KINDS}")
