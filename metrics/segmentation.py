"""Semantic-segmentation metrics from one confusion matrix (course slides 154-158).

Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, section 5
defines pixel accuracy, mean accuracy and mean IU. Rows of the confusion matrix are the ground
truth, columns the prediction: ``cm[i, j]`` = pixels of class ``i`` predicted as ``j``. Pixels whose
GT equals ``ignore_index`` (255, the VOC border/void label) are left out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["confusion_matrix", "segmentation_scores"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """``num_classes x num_classes`` int64 confusion matrix with one ``bincount``.

    ``pred``: label map (any shape) or logits ``B x C x H x W`` (arg-maxed over dim 1);
    ``target``: label map of the same shape as the label ``pred``. GT pixels equal to
    ``ignore_index`` are skipped; any other GT value outside ``[0, num_classes)`` or predicted
    label outside it raises ``ValueError``.
    """
    from_logits = pred.is_floating_point()
    if from_logits:
        if pred.ndim != target.ndim + 1 or pred.shape[1] != num_classes:
            raise ValueError(f"logits must be B x {num_classes} x H x W, got {tuple(pred.shape)}")
        pred = pred.argmax(1)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    c = int(num_classes)
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    if not from_logits and p.numel():
        plo, phi = (int(v) for v in torch.aminmax(p))
        if plo < 0 or phi >= c:
            raise ValueError(f"prediction contains label {plo if plo < 0 else phi} outside [0, {c})")
    if ignore_index is not None and ignore_index >= c:
        # Fast path, no boolean masking: GT rows >= c land beyond c*c; only ignore_index's row
        # [ignore_index*c, ignore_index*c + c) may be filled there, anything else is invalid GT.
        if t.numel() and int(t.min()) < 0:
            raise ValueError(f"target contains negative label {int(t.min())}")
        counts = torch.bincount(t * c + p, minlength=c * c)
        tail = counts[c * c :].clone()
        tail[ignore_index * c - c * c : ignore_index * c - c * c + c] = 0
        if bool(tail.any()):
            bad = int(torch.nonzero(tail)[0]) // c + c
            raise ValueError(f"target contains label {bad} outside [0, {c}) and != ignore_index {ignore_index}")
        return counts[: c * c].reshape(c, c)
    if ignore_index is not None:
        valid = t != ignore_index
        t, p = t[valid], p[valid]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= c):
        raise ValueError(f"target contains labels outside [0, {c})")
    return torch.bincount(t * c + p, minlength=c * c).reshape(c, c)


def segmentation_scores(cm: Tensor | np.ndarray, ignore_index: int | None = None) -> dict[str, object]:
    """Metrics of a confusion matrix (rows GT, columns prediction).

    An ``ignore_index`` inside ``[0, C)`` names a class that is not scored: its per-class values
    are NaN and it is left out of every mean (its GT pixels are already out of ``cm``; pixels of
    other classes predicted as it still count as their false negatives).

    * ``pixel_accuracy`` = trace / total;
    * ``mean_pixel_accuracy`` = mean over classes *with GT pixels* of ``cm[i,i] / sum_j cm[i,j]``;
    * ``iou`` per class = TP / (TP + FP + FN), ``dice`` = 2TP / (2TP + FP + FN) = F1,
      ``precision`` = TP / (TP + FP), ``recall`` = TP / (TP + FN) (per class; NaN where undefined);
    * ``mean_iou`` / ``mean_dice``: means over classes present in GT *or* prediction (a class absent
      from both has 0/0 and is left out), as are ``mean_precision``/``mean_recall``/``mean_f1``.
    Everything is NaN-free in the means; an empty matrix gives NaN means.
    """
    m = torch.as_tensor(cm).double()
    tp = m.diag()
    gt = m.sum(1)
    pr = m.sum(0)
    total = m.sum()
    fp, fn = pr - tp, gt - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    present = (gt + pr) > 0
    if ignore_index is not None and 0 <= ignore_index < m.shape[0]:
        present[ignore_index] = False
        gt = gt.clone()
        gt[ignore_index] = 0
        pr = pr.clone()
        pr[ignore_index] = 0
    iou = torch.where(present, tp / (tp + fp + fn).clamp(min=1e-300), nan)
    dice = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp(min=1e-300), nan)
    precision = torch.where(pr > 0, tp / pr.clamp(min=1e-300), nan)
    recall = torch.where(gt > 0, tp / gt.clamp(min=1e-300), nan)

    def mean(x: Tensor, keep: Tensor) -> float:
        return float(x[keep].mean()) if bool(keep.any()) else float("nan")

    return {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_pixel_accuracy": mean(recall, gt > 0),
        "mean_iou": mean(iou, present),
        "mean_dice": mean(dice, present),
        "mean_precision": mean(torch.nan_to_num(precision, nan=0.0), present),
        "mean_recall": mean(torch.nan_to_num(recall, nan=0.0), present),
        "mean_f1": mean(dice, present),
        "iou": iou,
        "dice": dice,
        "precision": precision,
        "recall": recall,
        "f1": dice,
    }
