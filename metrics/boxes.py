"""Box overlap (IoU) under the two pixel conventions used by the detection benchmarks.

* ``"continuous"`` (the default, and the repo's one box convention, ``docs/data.md``): a box
  ``[x1, y1, x2, y2]`` covers the real rectangle, width ``x2 - x1`` (COCO, torchvision,
  pycocotools, and every box the repo's readers and models produce).
* ``"inclusive"``: coordinates *index pixels* and both corners are inside the box, width
  ``x2 - x1 + 1`` (the Pascal VOC devkit on raw XML values, the course's evaluator code). Use it
  only for boxes that are still such pixel indices: inclusive IoU of ``[xmin, ymin, xmax, ymax]``
  equals continuous IoU of ``[xmin - 1, ymin - 1, xmax, ymax]``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

Convention = Literal["continuous", "inclusive"]

__all__ = ["box_area", "box_iou", "box_iou_numpy", "pairwise_iou_numpy"]


def _offset(convention: str) -> float:
    if convention == "continuous":
        return 0.0
    if convention == "inclusive":
        return 1.0
    raise ValueError(f"convention must be 'continuous' or 'inclusive', got {convention!r}")


def box_area(boxes: Tensor, convention: Convention = "continuous") -> Tensor:
    """Area of ``N x 4`` xyxy boxes; degenerate boxes get area 0."""
    off = _offset(convention)
    w = (boxes[..., 2] - boxes[..., 0] + off).clamp(min=0)
    h = (boxes[..., 3] - boxes[..., 1] + off).clamp(min=0)
    return w * h


def box_iou(a: Tensor, b: Tensor, convention: Convention = "continuous") -> Tensor:
    """Pairwise IoU of ``N x 4`` and ``M x 4`` xyxy boxes -> ``N x M`` (vectorised).

    ``convention="inclusive"`` is the VOC devkit's +1 pixel rule (``w = x2 - x1 + 1``), for
    pixel-index inputs only.
    Pairs whose union is 0 (two empty boxes) get IoU 0 rather than NaN.
    """
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a = a.to(dtype).reshape(-1, 4)
    b = b.to(dtype).reshape(-1, 4)
    off = _offset(convention)
    area_a = box_area(a, convention)
    area_b = box_area(b, convention)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + off).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(dtype).tiny), torch.zeros_like(inter))


def box_iou_numpy(a: np.ndarray, b: np.ndarray, convention: Convention = "continuous") -> np.ndarray:
    """NumPy float64 twin of :func:`box_iou` (``N x 4``, ``M x 4`` -> ``N x M``)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return pairwise_iou_numpy(np.repeat(a, len(b), axis=0), np.tile(b, (len(a), 1)), convention).reshape(len(a), len(b))


def pairwise_iou_numpy(a: np.ndarray, b: np.ndarray, convention: Convention = "continuous") -> np.ndarray:
    """IoU of row ``i`` of ``a`` with row ``i`` of ``b`` (both ``P x 4`` xyxy, float64)."""
    off = _offset(convention)
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + off
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + off
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0] + off, 0, None) * np.clip(a[:, 3] - a[:, 1] + off, 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0] + off, 0, None) * np.clip(b[:, 3] - b[:, 1] + off, 0, None)
    union = area_a + area_b - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out
