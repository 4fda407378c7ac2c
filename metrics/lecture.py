"""The course's evaluator (slides 101-112), with the function names the slides use.

Matching inside one image (``get_single_image_results``): every (prediction, GT) pair with IoU
*strictly* greater than the threshold, sorted by IoU from high to low; walking that list, a pair
is accepted "if appear firstly", i.e. neither its prediction nor its GT was accepted before.
Accepted pairs are true positives, unmatched predictions false positives, unmatched GT false
negatives. Equal IoUs are ordered as the reference code orders them: it enumerates the pairs
prediction-major (then GT) and walks ``np.argsort(ious)[::-1]``, so among equal IoUs the pair
enumerated *last* comes first. Like the reference, the result can then depend on the input order.
Inside the precision/recall curve the reference first sorts each image's predictions by ascending
score, so there equal IoUs go to the higher-scored prediction (equal scores: the later one).

Boxes are the repo's continuous coordinates by default (``docs/data.md``, "Box convention"). The
course code computes IoU on pixel indices with ``w = x2 - x1 + 1``; pass ``convention="inclusive"``
for boxes in that form (it equals continuous IoU on ``(x1 - 1, y1 - 1, x2, y2)``).

Precision/recall curve (``get_avg_precision_at_iou``): for every distinct score ``p_i``, *including
the lowest one* ("I. Get boxes with p >= p1, i.e. all boxes"), keep the boxes with score >= p_i
in every image, re-run the matching, and sum TP/FP/FN over all images. AP is the mean over the
11 recall levels {0, 0.1, ..., 1} of the highest precision at recall >= r, 0 where no point
reaches r (the slide writes a sum; its code divides by 11). The levels are the doubles nearest to
``k / 10`` as the slide writes them (the reference's ``np.linspace(0, 1, 11)`` gives
0.30000000000000004, 0.6000000000000001 and 0.7000000000000001; they differ only when a recall is
exactly 0.3, 0.6 or 0.7).

How it differs from the VOC devkit (:mod:`metrics.voc`): the devkit ranks detections by score
and lets each one, in turn, claim its best-IoU GT (a high-scoring poor box can take a GT that a
lower-scoring better box would have matched; ties are IoU >= 0.5). Here the matching is by IoU
(best overlaps first, score only decides which boxes take part, IoU > 0.5 strictly) and it is
redone from scratch at every threshold, so a box that is TP at one threshold may be FP at a lower
one. Difficult GT are ordinary GT here (the devkit ignores them); crowd GT are left out.

Departures from the public ``evaluator.py`` that carries these names: it keeps boxes with
score *> threshold* and loops over ``model_thrs[:-1]``, so the lowest threshold ("all boxes") is
never scored; we follow the slides and score every distinct threshold with ``>=``. Its tie order
comes from numpy's default ``argsort`` (stable on these small inputs); we use the stable sort.

The curve is computed incrementally (one greedy matching per image and per score level where
that image gains a box that overlaps some GT) rather than re-matching every image at every
threshold; ``tests/metrics/test_lecture.py`` checks it against the literal re-matching.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np

from .boxes import Convention, box_iou_numpy, pairwise_iou_numpy
from .data import FlatDetections, candidate_pairs
from .voc import TENTHS

__all__ = [
    "get_single_image_results",
    "calc_precision_recall",
    "get_avg_precision_at_iou",
    "lecture_evaluate",
    "lecture_map",
    "eleven_point_ap",
]


def _boxes(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1, 4)


def _greedy(pair_pred: Iterable[int], pair_gt: Iterable[int]) -> list[tuple[int, int]]:
    used_p: set[int] = set()
    used_g: set[int] = set()
    out = []
    for p, g in zip(pair_pred, pair_gt):
        if p not in used_p and g not in used_g:
            used_p.add(p)
            used_g.add(g)
            out.append((p, g))
    return out


def get_single_image_results(
    gt_boxes: Any, pred_boxes: Any, iou_thr: float, convention: Convention = "continuous"
) -> dict[str, int]:
    """TP/FP/FN of one image: greedy one-to-one matching of pairs with IoU > ``iou_thr``, highest
    IoU first, equal IoUs last-enumerated first as the reference (slides 101-102). Boxes are xyxy."""
    gt = _boxes(gt_boxes)
    pred = _boxes(pred_boxes)
    if len(pred) == 0:
        return {"true_pos": 0, "false_pos": 0, "false_neg": len(gt)}
    if len(gt) == 0:
        return {"true_pos": 0, "false_pos": len(pred), "false_neg": 0}
    iou = box_iou_numpy(pred, gt, convention)
    p_idx, g_idx = np.nonzero(iou > iou_thr)  # row-major: prediction-major enumeration
    order = np.argsort(iou[p_idx, g_idx], kind="stable")[::-1]  # the reference's argsort(ious)[::-1]
    tp = len(_greedy(p_idx[order].tolist(), g_idx[order].tolist()))
    return {"true_pos": tp, "false_pos": len(pred) - tp, "false_neg": len(gt) - tp}


def calc_precision_recall(img_results: Mapping[Any, dict] | Iterable[dict]) -> tuple[float, float]:
    """Precision = TP / predicted, recall = TP / GT, summed over all images (slides 103-105);
    0 where the denominator is 0."""
    values = img_results.values() if isinstance(img_results, Mapping) else img_results
    tp = fp = fn = 0
    for r in values:
        tp += int(r["true_pos"])
        fp += int(r["false_pos"])
        fn += int(r["false_neg"])
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    return precision, recall


def eleven_point_ap(precisions: np.ndarray, recalls: np.ndarray) -> float:
    """Mean over r in {0, 0.1, ..., 1} of max precision at recall >= r (0 if none), slide 112."""
    p = np.asarray(precisions, dtype=np.float64)
    r = np.asarray(recalls, dtype=np.float64)
    total = 0.0
    for level in TENTHS:
        sel = p[r >= level]
        total += float(sel.max()) if sel.size else 0.0
    return total / 11.0


def lecture_evaluate(
    flat: FlatDetections, iou_thr: float = 0.5, convention: Convention = "continuous"
) -> dict[int, dict[str, Any]]:
    """Per-class course-evaluator curves and AP over all images of ``flat``.

    Crowd GT are removed; difficult GT count as ordinary GT. Returns, per label,
    ``{"avg_prec", "precisions", "recalls", "model_thrs", "num_gt"}`` with thresholds descending.
    """
    keep_gt = ~flat.gt_crowd
    gt_img, gt_label, gt_box = flat.gt_img[keep_gt], flat.gt_label[keep_gt], flat.gt_box[keep_gt]
    d_idx, g_idx = candidate_pairs(flat.det_img, flat.det_label, gt_img, gt_label)
    ev_score: list[float] = []
    ev_label: list[int] = []
    ev_delta: list[int] = []
    if len(d_idx):
        iou = pairwise_iou_numpy(flat.det_box[d_idx], gt_box[g_idx], convention)
        sel = iou > iou_thr
        d_idx, g_idx, iou = d_idx[sel], g_idx[sel], iou[sel]
        if len(d_idx):
            span = int(flat.det_label.max()) - int(flat.det_label.min()) + 1
            group = flat.det_img[d_idx] * span + (flat.det_label[d_idx] - int(flat.det_label.min()))
            # group, IoU descending, then the reference's tie order: its predictions are sorted by
            # ascending score and ties walked backwards -> higher score, later prediction, later GT
            order = np.lexsort((-g_idx, -d_idx, -flat.det_score[d_idx], -iou, group))
            d_idx, g_idx, group = d_idx[order], g_idx[order], group[order]
            cuts = np.flatnonzero(np.r_[True, group[1:] != group[:-1], True])
            scores = flat.det_score
            for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
                pd = d_idx[a:b]
                pg = g_idx[a:b].tolist()
                ps = scores[pd]
                label = int(flat.det_label[pd[0]])
                prev = 0
                for level in np.unique(ps)[::-1].tolist():
                    active = (ps >= level).tolist()
                    tp = len(
                        _greedy([p for p, on in zip(pd.tolist(), active) if on], [g for g, on in zip(pg, active) if on])
                    )
                    if tp != prev:
                        ev_score.append(level)
                        ev_label.append(label)
                        ev_delta.append(tp - prev)
                        prev = tp
    ev_score_a = np.asarray(ev_score, np.float64)
    ev_label_a = np.asarray(ev_label, np.int64)
    ev_delta_a = np.asarray(ev_delta, np.int64)
    gt_labels, gt_counts = np.unique(gt_label, return_counts=True)
    num_gt_of = dict(zip(gt_labels.tolist(), gt_counts.tolist()))
    out: dict[int, dict[str, Any]] = {}
    for lab in np.union1d(gt_labels, flat.det_label).tolist():
        n_gt = int(num_gt_of.get(lab, 0))
        s = np.sort(flat.det_score[flat.det_label == lab])[::-1]  # descending
        thrs = np.unique(s)[::-1]
        n_pred = np.searchsorted(-s, -thrs, side="right")  # boxes with score >= thr
        m = ev_label_a == lab
        es, ed = ev_score_a[m], ev_delta_a[m]
        o = np.argsort(-es, kind="stable")
        es, cum = es[o], np.cumsum(ed[o])
        k = np.searchsorted(-es, -thrs, side="right")  # events with score >= thr
        tp = np.where(k > 0, cum[np.maximum(k - 1, 0)] if len(cum) else 0, 0)
        precisions = np.divide(tp, n_pred, out=np.zeros(len(thrs)), where=n_pred > 0)
        recalls = tp / n_gt if n_gt > 0 else np.zeros(len(thrs))
        out[lab] = {
            "avg_prec": eleven_point_ap(precisions, recalls),
            "precisions": precisions,
            "recalls": recalls,
            "model_thrs": thrs,
            "num_gt": n_gt,
        }
    return out


def lecture_map(results: Mapping[int, dict[str, Any]]) -> float:
    """Mean of the per-class AP over classes that have GT (-1 if none has)."""
    aps = [r["avg_prec"] for r in results.values() if r["num_gt"] > 0]
    return float(np.mean(aps)) if aps else -1.0


def get_avg_precision_at_iou(
    gt_boxes_by_image: Mapping[Any, Any],
    pred_boxes_and_scores_by_image: Mapping[Any, Mapping[str, Any]],
    iou_thr: float = 0.5,
    convention: Convention = "continuous",
) -> dict[str, Any]:
    """Course AP of one class (slides 106-112).

    ``gt_boxes_by_image``: ``{image_id: [[x1, y1, x2, y2], ...]}``;
    ``pred_boxes_and_scores_by_image``: ``{image_id: {"boxes": [...], "scores": [...]}}``.
    Returns ``{"avg_prec", "precisions", "recalls", "model_thrs"}`` (thresholds descending).
    """
    ids = list(dict.fromkeys([*gt_boxes_by_image.keys(), *pred_boxes_and_scores_by_image.keys()]))
    preds, targets = [], []
    for i in ids:
        g = _boxes(gt_boxes_by_image.get(i, np.zeros((0, 4))))
        p = pred_boxes_and_scores_by_image.get(i, {"boxes": np.zeros((0, 4)), "scores": []})
        pb = _boxes(p["boxes"])
        ps = np.asarray(p["scores"], dtype=np.float64).reshape(-1)
        if len(ps) != len(pb):
            raise ValueError(f"image {i!r}: {len(pb)} boxes but {len(ps)} scores")
        targets.append({"boxes": g, "labels": np.ones(len(g), np.int64)})
        preds.append({"boxes": pb, "scores": ps, "labels": np.ones(len(pb), np.int64)})
    res = lecture_evaluate(FlatDetections.from_lists(preds, targets), iou_thr, convention).get(1)
    if res is None:  # no GT and no predictions anywhere
        return {"avg_prec": 0.0, "precisions": np.zeros(0), "recalls": np.zeros(0), "model_thrs": np.zeros(0)}
    return {k: res[k] for k in ("avg_prec", "precisions", "recalls", "model_thrs")}
