"""Pascal VOC average precision, as computed by the official devkit (``VOCevaldet.m``).

Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010, section 4.2,
and the VOC2010+ devkit documentation (section 3.4.1).

Per class, the detections of all images are ranked by score (descending). Each detection is
compared with the ground truth of *its* image and class and takes the GT object of highest IoU
(inclusive-pixel IoU, ``w = x2 - x1 + 1``; among equal IoUs the first GT in the given order):

* IoU >= 0.5 and that GT is "difficult" (or crowd, ``iscrowd=1``): ignored, neither TP nor FP;
* IoU >= 0.5 and that GT not yet matched: true positive, the GT becomes matched;
* otherwise (IoU < 0.5, GT already matched, no GT in the image): false positive.

Ties in score are broken by a *stable* sort: equal scores keep their input order (image order,
then the detection order within the image). MATLAB's ``sort`` is stable too, so this is the
devkit's order; py-faster-rcnn's ``np.argsort(-conf)`` (quicksort) is not.

``npos`` counts the non-difficult, non-crowd GT. AP:

* VOC2007 ("11-point"): mean over r in {0, 0.1, ..., 1} of max precision at recall >= r (0 if
  none). The recall levels are the *exact tenths* ``k / 10`` (the doubles nearest to 0.3, 0.6,
  0.7, ...), not numpy's ``np.arange(0, 1.1, 0.1)`` whose 4th element is 0.30000000000000004: a
  recall of exactly 3/10 therefore counts as reaching 0.3.
* VOC2010+ ("all-point"): area under the monotone (right-to-left running max) precision
  envelope, summed where recall changes.

mAP is the mean over classes that have at least one non-difficult GT object. A class with GT
but no detection has AP 0; a class without GT has AP undefined (reported as -1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boxes import Convention, pairwise_iou_numpy
from .data import FlatDetections, candidate_pairs

__all__ = ["VOCClassResult", "voc_ap", "voc_assign", "voc_evaluate", "voc_map"]


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


ELEVEN_POINTS = np.arange(11) / 10.0  # exact tenths, see module docstring


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from a ranked precision/recall curve (VOC2007 11-point or VOC2010+ all-point)."""
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for t in ELEVEN_POINTS:
            sel = prec[rec >= t]
            total += float(sel.max()) if sel.size else 0.0
        return total / 11.0
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def voc_assign(
    flat: FlatDetections, iou_thr: float = 0.5, convention: Convention = "inclusive"
) -> np.ndarray:
    """Devkit outcome of every detection: 1 = TP, 0 = FP, -1 = ignored (difficult/crowd GT).

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
    convention: Convention = "inclusive",
    labels: np.ndarray | list[int] | None = None,
) -> dict[int, VOCClassResult]:
    """Per-class VOC results (both AP variants) for every label in GT or detections."""
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
            res.ap07 = voc_ap(res.recall, res.precision, use_07_metric=True)
        results[lab] = res
    return results


def voc_map(results: dict[int, VOCClassResult], use_07_metric: bool = False) -> float:
    """Mean AP over classes with at least one non-difficult GT (-1 if there is none)."""
    aps = [(r.ap07 if use_07_metric else r.ap) for r in results.values() if r.npos > 0]
    return float(np.mean(aps)) if aps else -1.0
