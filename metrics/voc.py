"""Pascal VOC average precision, as computed by the official devkit (``VOCevaldet.m``).

Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010, section 4.2,
and the VOC2010+ devkit documentation (section 3.4.1).

Boxes follow the repo's one convention (``docs/data.md``, "Box convention"): continuous pixel
coordinates, width ``x2 - x1``. The devkit reads the XML's 1-based pixel indices and adds 1
(``w = x2 - x1 + 1``); that is the same IoU as continuous boxes ``(xmin - 1, ymin - 1, xmax, ymax)``,
which is what the repo's VOC reader makes. ``convention="inclusive"`` is only for boxes that are
still devkit pixel indices (raw XML values); applying it to continuous boxes makes every box one
pixel too large each way.

Per class, the detections of all images are ranked by score (descending). Each detection is
compared with the ground truth of *its* image and class and takes the GT object of highest IoU
(among equal IoUs the first GT in the given order):

* IoU >= 0.5 and that GT is "difficult" (or crowd, ``iscrowd=1``): ignored, neither TP nor FP;
* IoU >= 0.5 and that GT not yet matched: true positive, the GT becomes matched;
* otherwise (IoU < 0.5, GT already matched, no GT in the image): false positive.

Ties in score are broken by a *stable* sort: equal scores keep their input order (image order,
then the detection order within the image). MATLAB's ``sort`` is stable too, so this is the
devkit's order; py-faster-rcnn's ``np.argsort(-conf)`` (quicksort) is not.

``npos`` counts the non-difficult, non-crowd GT. AP:

* VOC2007 ("11-point"): sum over the recall levels ``t`` of ``0:0.1:1`` of (max precision at
  recall >= t, 0 if none) / 11. By default the levels are the devkit's: MATLAB's colon operator,
  reproduced by :func:`matlab_colon`, gives 0.30000000000000004 as the fourth level (so a recall of
  exactly 3/10 does *not* reach it) but exact 0.6 and 0.7. ``eleven_point_grid="tenths"`` uses the
  doubles nearest to ``k / 10`` instead (numpy's ``np.arange(0, 1.1, 0.1)``, used by py-faster-rcnn
  and Detectron2, is a third grid: it moves 0.6 and 0.7 as well).
* VOC2010+ ("all-point"): area under the monotone (right-to-left running max) precision
  envelope, summed where recall changes.

mAP is the mean over classes that have at least one non-difficult GT object. A class with GT
but no detection has AP 0; a class without GT has AP undefined (reported as -1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .boxes import Convention, pairwise_iou_numpy
from .data import FlatDetections, candidate_pairs

__all__ = [
    "DEVKIT_POINTS",
    "TENTHS",
    "VOCClassResult",
    "eleven_points",
    "matlab_colon",
    "voc_ap",
    "voc_assign",
    "voc_evaluate",
    "voc_map",
]

Grid = Literal["devkit", "tenths"]


@dataclass
class VOCClassResult:
    """Per-class VOC outcome; curves follow the score ranking (ignored detections removed)."""

    label: int
    npos: int
    scores: np.ndarray
    tp: np.ndarray  # cumulative true positives
    fp: np.ndarray  # cumulative false positives
    ap: float  # all-point (VOC2010+), -1 if npos == 0
    ap07: float  # 11-point (VOC2007), -1 if npos == 0

    @property
    def recall(self) -> np.ndarray:
        return self.tp / self.npos if self.npos > 0 else np.zeros_like(self.tp, dtype=np.float64)

    @property
    def precision(self) -> np.ndarray:
        denom = self.tp + self.fp
        return np.divide(self.tp, denom, out=np.zeros(len(denom)), where=denom > 0)


def matlab_colon(a: float, d: float, b: float) -> np.ndarray:
    """MATLAB's ``a:d:b`` for ``d > 0``, element for element.

    MATLAB counts the first half up from ``a`` (``a + k*d``) and the second half down from ``b``
    (``b - k*d``); with an even number of steps the middle element is ``(a + b) / 2``.
    """
    if not d > 0:
        raise ValueError(f"step must be > 0, got {d}")
    tol = 2.0 * np.finfo(np.float64).eps * max(abs(a), abs(b))
    n = math.floor((b - a) / d + tol)  # number of steps
    if n < 0:
        return np.zeros(0)
    out = np.empty(n + 1, dtype=np.float64)
    half = n // 2
    for k in range(half + 1):
        out[k] = a + k * d
        out[n - k] = b - k * d
    if n % 2 == 0:
        out[half] = (a + b) / 2
    return out


DEVKIT_POINTS = matlab_colon(0.0, 0.1, 1.0)  # the devkit's 0:0.1:1 (4th level 0.30000000000000004)
TENTHS = np.arange(11) / 10.0  # the doubles nearest to k / 10


def eleven_points(grid: Grid = "devkit") -> np.ndarray:
    """The 11 recall levels of the VOC2007 AP: ``"devkit"`` (MATLAB's 0:0.1:1) or ``"tenths"``."""
    if grid == "devkit":
        return DEVKIT_POINTS.copy()
    if grid == "tenths":
        return TENTHS.copy()
    raise ValueError(f"eleven_point_grid must be 'devkit' or 'tenths', got {grid!r}")


def voc_ap(
    recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False, eleven_point_grid: Grid = "devkit"
) -> float:
    """AP from a ranked precision/recall curve (VOC2007 11-point or VOC2010+ all-point)."""
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for t in eleven_points(eleven_point_grid):
            sel = prec[rec >= t]
            total += (float(sel.max()) if sel.size else 0.0) / 11.0  # the devkit's ap = ap + p / 11
        return total
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def voc_assign(flat: FlatDetections, iou_thr: float = 0.5, convention: Convention = "continuous") -> np.ndarray:
    """Devkit outcome of every detection: 1 = TP, 0 = FP, -1 = ignored (difficult/crowd GT).

    ``convention="inclusive"`` only for boxes in the devkit's pixel indices (see module docstring).

    Vectorised over all images and classes: the best GT of a detection does not depend on the
    matching state, so "first detection in rank order to reach a GT" is a first-occurrence query.
    """
    nd = len(flat.det_img)
    outcome = np.zeros(nd, np.int8)
    if nd == 0:
        return outcome
    d_idx, g_idx = candidate_pairs(flat.det_img, flat.det_label, flat.gt_img, flat.gt_label)
    best_gt = np.full(nd, -1, np.int64)
    best_iou = np.full(nd, -np.inf)
    if len(d_idx):
        iou = pairwise_iou_numpy(flat.det_box[d_idx], flat.gt_box[g_idx], convention)
        starts = np.flatnonzero(np.r_[True, d_idx[1:] != d_idx[:-1]])
        dets = d_idx[starts]
        seg_max = np.maximum.reduceat(iou, starts)
        is_max = iou == np.repeat(seg_max, np.diff(np.r_[starts, len(d_idx)]))
        first_pos = np.flatnonzero(is_max)
        _, first_in_seg = np.unique(d_idx[first_pos], return_index=True)
        best_gt[dets] = g_idx[first_pos[first_in_seg]]
        best_iou[dets] = seg_max
    hit = best_iou >= iou_thr
    ignore_gt = flat.gt_difficult | flat.gt_crowd
    ignored = np.zeros(nd, bool)
    ignored[hit] = ignore_gt[best_gt[hit]]
    outcome[ignored] = -1
    cand = np.flatnonzero(hit & ~ignored)
    if len(cand):
        # rank order within class: stable sort by (label, -score)
        rank = np.lexsort((-flat.det_score[cand], flat.det_label[cand]))
        ordered = cand[rank]
        _, first = np.unique(best_gt[ordered], return_index=True)
        outcome[ordered[first]] = 1
    return outcome


def voc_evaluate(
    flat: FlatDetections,
    iou_thr: float = 0.5,
    convention: Convention = "continuous",
    labels: np.ndarray | list[int] | None = None,
    eleven_point_grid: Grid = "devkit",
) -> dict[int, VOCClassResult]:
    """Per-class VOC results (both AP variants) for every label in GT or detections.

    ``convention``: ``"continuous"`` for the repo's boxes, ``"inclusive"`` (the devkit's +1) only
    for raw devkit pixel indices. ``eleven_point_grid``: recall levels of ``ap07``.
    """
    eleven_points(eleven_point_grid)  # validate before the work
    outcome = voc_assign(flat, iou_thr, convention)
    labels = flat.labels if labels is None else np.asarray(labels, dtype=np.int64)
    valid_gt = ~(flat.gt_difficult | flat.gt_crowd)
    pos_labels, pos_counts = np.unique(flat.gt_label[valid_gt], return_counts=True)
    npos_of = dict(zip(pos_labels.tolist(), pos_counts.tolist()))
    keep = outcome >= 0
    order = np.lexsort((-flat.det_score[keep], flat.det_label[keep]))
    lab_sorted = flat.det_label[keep][order]
    tp_sorted = (outcome[keep][order] == 1).astype(np.int64)
    sc_sorted = flat.det_score[keep][order]
    results: dict[int, VOCClassResult] = {}
    for lab in labels.tolist():
        i0, i1 = np.searchsorted(lab_sorted, lab, "left"), np.searchsorted(lab_sorted, lab, "right")
        tp = np.cumsum(tp_sorted[i0:i1])
        fp = np.cumsum(1 - tp_sorted[i0:i1])
        npos = int(npos_of.get(lab, 0))
        res = VOCClassResult(lab, npos, sc_sorted[i0:i1], tp, fp, -1.0, -1.0)
        if npos > 0:
            res.ap = voc_ap(res.recall, res.precision, use_07_metric=False)
            res.ap07 = voc_ap(res.recall, res.precision, True, eleven_point_grid)
        results[lab] = res
    return results


def voc_map(results: dict[int, VOCClassResult], use_07_metric: bool = False) -> float:
    """Mean AP over classes with at least one non-difficult GT (-1 if there is none)."""
    aps = [(r.ap07 if use_07_metric else r.ap) for r in results.values() if r.npos > 0]
    return float(np.mean(aps)) if aps else -1.0
