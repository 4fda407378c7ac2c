"""Losses of the one-stage and keypoint detectors: focal loss, CornerNet's heatmap and embedding losses.

* :func:`focal_loss`: RetinaNet's answer to the imbalance of dense detectors (Lin et al. 2017, Sec. 3,
  course slides 64-65): ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``, cross-entropy whose easy
  (well-classified) terms are scaled down by ``(1 - p_t)^gamma``.
* :func:`penalty_reduced_focal_loss`: CornerNet's variant for Gaussian-smoothed corner heatmaps
  (Law and Deng 2018, Eq. 1): negatives near a ground-truth corner are penalised less.
* :func:`pull_push_losses`: CornerNet's associative-embedding losses (Eq. 4-5) that group the two
  corners of one object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss


def focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "sum"
) -> Tensor:
    """Sigmoid focal loss of Lin et al. 2017 (Eq. 5), one binary classifier per class.

    ``targets`` are 0/1 of the shape of ``logits``. ``alpha`` weighs positives by ``alpha`` and
    negatives by ``1 - alpha`` (Eq. 3); ``alpha < 0`` turns the weighting off. With ``gamma = 0`` and
    ``alpha < 0`` this is plain binary cross-entropy, the ``ce`` ablation of RetinaNet. torchvision's
    :func:`~torchvision.ops.sigmoid_focal_loss` does the work.
    """
    return sigmoid_focal_loss(logits, targets.to(logits.dtype), alpha=alpha, gamma=gamma, reduction=reduction)


def penalty_reduced_focal_loss(logits: Tensor, heatmap: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CornerNet's detection loss (Law and Deng 2018, Eq. 1) on corner heatmaps.

    ``logits`` and ``heatmap`` are B x C x H x W; the heatmap is 1 at ground-truth corners and an
    unnormalised Gaussian ``y`` around them. Positives (``y == 1``) contribute
    ``(1 - p)^alpha log p``; every other location ``(1 - y)^beta p^alpha log(1 - p)``, so a detection
    close to a true corner (``y`` near 1) costs little. Normalised by the number of objects (positives);
    an image batch without objects is normalised by 1.
    """
    prob = logits.sigmoid()
    positive = heatmap.eq(1).to(logits.dtype)
    # log p and log(1 - p) from the logits: stable where p saturates.
    pos_loss = (1 - prob).pow(alpha) * F.logsigmoid(logits) * positive
    neg_loss = (1 - heatmap).pow(beta) * prob.pow(alpha) * F.logsigmoid(-logits) * (1 - positive)
    num_positive = positive.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / num_positive


def pull_push_losses(
    top_left: Tensor, bottom_right: Tensor, mask: Tensor, margin: float = 1.0
) -> tuple[Tensor, Tensor]:
    """CornerNet's grouping losses (Law and Deng 2018, Eq. 4 and 5) on 1-D corner embeddings.

    ``top_left``, ``bottom_right``: B x M embeddings of the two corners of up to M objects per image;
    ``mask`` (B x M, bool) marks the real objects. With ``e_k`` the mean of object k's two embeddings,

        pull = 1/N sum_k (e_tk - e_k)^2 + (e_bk - e_k)^2           (corners of one object together)
        push = 1/(N(N-1)) sum_k sum_{j != k} max(0, margin - |e_k - e_j|)   (objects apart)

    computed per image (N its number of objects) and averaged over the batch. Vectorised over
    images and objects; images with fewer than two objects add no push loss.
    """
    mask = mask.to(top_left.dtype)
    num = mask.sum(1)  # objects per image
    mean = (top_left + bottom_right) / 2
    pull = ((top_left - mean).pow(2) + (bottom_right - mean).pow(2)) * mask
    pull = pull.sum(1) / num.clamp(min=1)

    pair_mask = mask[:, :, None] * mask[:, None, :]
    pair_mask = pair_mask * (1 - torch.eye(mask.shape[1], dtype=mask.dtype, device=mask.device))
    distance = (mean[:, :, None] - mean[:, None, :]).abs()
    push = (F.relu(margin - distance) * pair_mask).sum((1, 2)) / (num * (num - 1)).clamp(min=1)
    return pull.mean(), push.mean()
