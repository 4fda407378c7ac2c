"""Flat, per-image-indexed storage of detections and ground truth shared by every protocol.

All protocols (course evaluator, VOC, COCO) read the same :class:`FlatDetections`: one row per
detection / GT object with the index of the image it belongs to. This is also the layout the
torchmetrics states use, so gathered (DDP) results keep their per-image grouping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["FlatDetections", "candidate_pairs"]


def _np(x: Any, dtype: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if x is None:
        return np.zeros((0, *shape_tail), dtype=dtype)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=dtype)
    if shape_tail:
        arr = arr.reshape(-1, *shape_tail)
    return arr.reshape(-1, *shape_tail) if arr.ndim == 0 else arr


@dataclass
class FlatDetections:
    """Detections and GT of ``num_images`` images as flat arrays (boxes xyxy float64, pixels).

    ``det_masks`` / ``gt_masks`` (optional) are COCO compressed RLE dicts, one per row;
    ``gt_area`` holds the COCO area of each GT (NaN: compute it from the box or mask).
    """

    num_images: int
    det_img: np.ndarray
    det_label: np.ndarray
    det_score: np.ndarray
    det_box: np.ndarray
    gt_img: np.ndarray
    gt_label: np.ndarray
    gt_box: np.ndarray
    gt_difficult: np.ndarray
    gt_crowd: np.ndarray
    gt_area: np.ndarray | None = None
    det_masks: list[dict] | None = None
    gt_masks: list[dict] | None = None
    image_sizes: np.ndarray | None = None  # num_images x 2 (height, width), 0 when unknown
    image_ids: np.ndarray | None = None  # original image ids (for reporting); defaults to 1..n
    extra: dict = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """Sorted class labels present in GT or detections."""
        return np.union1d(self.gt_label, self.det_label).astype(np.int64)

    @classmethod
    def from_lists(cls, preds: Sequence[dict], targets: Sequence[dict]) -> "FlatDetections":
        """Build from torchvision-style per-image dicts (``boxes``, ``scores``, ``labels``,
        optional ``difficult`` / ``iscrowd``); masks are not read here."""
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} prediction dicts but {len(targets)} target dicts")
        n = len(targets)
        dn = [len(_np(p.get("labels"), np.int64)) for p in preds]
        gn = [len(_np(t.get("labels"), np.int64)) for t in targets]

        def cat(items: list[np.ndarray], dtype: Any, tail: tuple[int, ...] = ()) -> np.ndarray:
            return np.concatenate(items).astype(dtype, copy=False) if items else np.zeros((0, *tail), dtype)

        gt_flag = []
        for key in ("difficult", "iscrowd"):
            vals = []
            for t, k in zip(targets, gn):
                v = t.get(key)
                vals.append(np.zeros(k, bool) if v is None else _np(v, np.int64).reshape(-1) != 0)
            gt_flag.append(cat(vals, bool))
        return cls(
            num_images=n,
            det_img=np.repeat(np.arange(n, dtype=np.int64), dn),
            det_label=cat([_np(p.get("labels"), np.int64).reshape(-1) for p in preds], np.int64),
            det_score=cat([_np(p.get("scores"), np.float64).reshape(-1) for p in preds], np.float64),
            det_box=cat([_np(p.get("boxes"), np.float64, (4,)) for p in preds], np.float64, (4,)),
            gt_img=np.repeat(np.arange(n, dtype=np.int64), gn),
            gt_label=cat([_np(t.get("labels"), np.int64).reshape(-1) for t in targets], np.int64),
            gt_box=cat([_np(t.get("boxes"), np.float64, (4,)) for t in targets], np.float64, (4,)),
            gt_difficult=gt_flag[0],
            gt_crowd=gt_flag[1],
        )

    def validate(self) -> None:
        """Raise ``ValueError`` on inconsistent lengths (a cheap guard before evaluating)."""
        nd, ng = len(self.det_img), len(self.gt_img)
        for name, arr, n in (
            ("det_label", self.det_label, nd),
            ("det_score", self.det_score, nd),
            ("det_box", self.det_box, nd),
            ("gt_label", self.gt_label, ng),
            ("gt_box", self.gt_box, ng),
            ("gt_difficult", self.gt_difficult, ng),
            ("gt_crowd", self.gt_crowd, ng),
        ):
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows, expected {n}")


def candidate_pairs(
    det_img: np.ndarray, det_label: np.ndarray, gt_img: np.ndarray, gt_label: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All (detection, GT) index pairs that share image and class, fully vectorised.

    Pairs come detection-major (detections in their given order), and within one detection
    the GT objects in their given order; the matchers rely on this order to break ties.
    """
    if len(det_img) == 0 or len(gt_img) == 0:
        e = np.zeros(0, np.int64)
        return e, e
    span = int(max(det_label.max(initial=0), gt_label.max(initial=0))) + 1
    lo_label = int(min(det_label.min(initial=0), gt_label.min(initial=0)))
    gkey = gt_img.astype(np.int64) * (span - lo_label) + (gt_label - lo_label)
    dkey = det_img.astype(np.int64) * (span - lo_label) + (det_label - lo_label)
    gorder = np.argsort(gkey, kind="stable")
    skey = gkey[gorder]
    lo = np.searchsorted(skey, dkey, side="left")
    hi = np.searchsorted(skey, dkey, side="right")
    cnt = hi - lo
    total = int(cnt.sum())
    d_idx = np.repeat(np.arange(len(dkey), dtype=np.int64), cnt)
    starts = np.cumsum(cnt) - cnt
    within = np.arange(total, dtype=np.int64) - np.repeat(starts, cnt)
    g_idx = gorder[np.repeat(lo, cnt) + within]
    return d_idx, g_idx
