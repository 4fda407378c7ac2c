"""RoIAlign (He et al., ICCV 2017, Sec. 3) as two matrix products per image, for training on a CPU.

torchvision's ``roi_align`` is the reference: this module computes the same function (the same sample
points, the same clamping at the border, zero for samples more than one pixel outside, the same average),
checked against it in ``tests/models/parts/test_roi_align.py``. Its only reason to exist is speed: on a CPU
torchvision's backward kernel runs one thread over every RoI, channel and sample and took about a third of
a Faster R-CNN training step on the embedded dataset, where the separable form's backward is two more
matrix products (``scripts/bench_roi_align.py`` prints the ratio). On other devices, on large maps, with
adaptive sampling (``sampling_ratio <= 0``) or without gradients, :func:`roi_align` calls torchvision's op.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as torchvision_roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


# The separable op's cost grows with the map's cells (its matrices span the whole map), torchvision's with
# the RoIs' samples only: beyond this many cells torchvision's op is faster (scripts/bench_roi_align.py).
SEPARABLE_MAX_MAP_CELLS = 4096


def _interpolation_matrix(start: Tensor, length: Tensor, bins: int, samples: int, size: int) -> Tensor:
    """(R, bins, size): row ``b`` of RoI ``r`` averages the bilinear weights of bin ``b``'s ``samples``
    sample points along one axis, as torchvision's kernel places and clamps them (a point more than one
    pixel outside the map counts as zero)."""
    step = (length / bins)[:, None]
    offsets = torch.arange(bins * samples, device=start.device, dtype=start.dtype)
    position = start[:, None] + step * (offsets // samples) + step * (offsets % samples + 0.5) / samples
    inside = ((position >= -1.0) & (position <= size)).to(start.dtype)
    position = position.clamp(0, size - 1)
    low = position.floor()
    frac = (position - low) * inside
    low = low.long()
    high = (low + 1).clamp(max=size - 1)
    weights = start.new_zeros((start.shape[0], bins * samples, size))
    weights.scatter_add_(2, low[..., None], (inside - frac)[..., None])
    weights.scatter_add_(2, high[..., None], frac[..., None])
    return weights.reshape(start.shape[0], bins, samples, size).sum(dim=2) / samples


def separable_roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """torchvision's ``roi_align(features, rois, ...)`` for ``sampling_ratio > 0``: (R, C, *output_size).
    ``rois`` are (R, 5) rows ``[batch index, x1, y1, x2, y2]`` in image coordinates. Bilinear sampling is
    separable, so each RoI's output is ``Ay @ feature @ Ax.T`` with (output, map) interpolation matrices per
    axis: two matrix products per image, whose backward is two more, in place of a per-sample scatter."""
    out_h, out_w = output_size
    height, width = features.shape[-2:]
    num_rois, channels = rois.shape[0], features.shape[1]
    if num_rois == 0:
        return features.new_zeros((0, channels, out_h, out_w))
    offset = 0.5 if aligned else 0.0
    boxes = rois[:, 1:].to(features.dtype) * spatial_scale - offset
    box_w, box_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if not aligned:  # the original op's minimum RoI size of one feature pixel
        box_w, box_h = box_w.clamp(min=1.0), box_h.clamp(min=1.0)
    along_y = _interpolation_matrix(boxes[:, 1], box_h, out_h, sampling_ratio, height)  # (R, out_h, H)
    along_x = _interpolation_matrix(boxes[:, 0], box_w, out_w, sampling_ratio, width)  # (R, out_w, W)
    batch_index = rois[:, 0].long()
    order = torch.argsort(batch_index, stable=True)
    images, counts = torch.unique_consecutive(batch_index[order], return_counts=True)
    pooled = []
    for image, index in zip(images.tolist(), torch.split(order, counts.tolist())):
        k = index.numel()
        rows = along_y[index].reshape(k * out_h, height) @ features[image].transpose(0, 1).reshape(height, -1)
        rows = rows.reshape(k, out_h * channels, width)  # (k, out_h, C, W)
        pooled.append((rows @ along_x[index].transpose(1, 2)).reshape(k, out_h, channels, out_w))
    return torch.cat(pooled).transpose(1, 2)[torch.argsort(order)]  # back to the RoIs' order, contiguous


def roi_align(
    features: Tensor,
    rois: Tensor | list[Tensor],
    output_size: tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """``torchvision.ops.roi_align`` (``rois`` (R, 5) or one (R_i, 4) box tensor per image), computed by
    :func:`separable_roi_align` where that is faster: training on a CPU in float32 / float64 (under autocast
    torchvision's op computes in float32), a fixed sampling ratio, a map of at most
    ``SEPARABLE_MAX_MAP_CELLS`` cells."""
    small_map = features.shape[-2] * features.shape[-1] <= SEPARABLE_MAX_MAP_CELLS
    training = torch.is_grad_enabled() and features.requires_grad
    full_precision = features.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled("cpu")
    if features.device.type == "cpu" and sampling_ratio > 0 and small_map and training and full_precision:
        rois = rois if isinstance(rois, Tensor) else _convert_to_roi_format(rois)
        return separable_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    return torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)


class FeaturePyramidRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (FPN, Lin et al. 2017, Eq. 1 picks each RoI's level) with
    :func:`roi_align` per level; the same parameters, level mapping and state."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        levels = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            scales = _setup_scales(levels, image_shapes, self.canonical_scale, self.canonical_level)
            self.scales, self.map_levels = scales
        rois = _convert_to_roi_format(boxes)
        size = tuple(self.output_size)
        if len(levels) == 1:
            return roi_align(levels[0], rois, size, self.scales[0], self.sampling_ratio)
        level_of_roi = self.map_levels(boxes)
        result = levels[0].new_zeros((len(rois), levels[0].shape[1], *size))
        for level, (feature, scale) in enumerate(zip(levels, self.scales)):
            index = torch.nonzero(level_of_roi == level).squeeze(1)
            pooled = roi_align(feature, rois[index], size, scale, self.sampling_ratio)
            result = result.index_copy(0, index, pooled.to(result.dtype))
        return result
