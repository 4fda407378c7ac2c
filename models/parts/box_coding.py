"""Box regression targets: R-CNN's (dx, dy, dw, dh) parameterisation, shared by every box regressor.

Girshick et al. 2014, Appendix C: a proposal P (centre px, py, size pw, ph) is moved onto a box G by
    dx = (gx - px) / pw,  dy = (gy - py) / ph,  dw = log(gw / pw),  dh = log(gh / ph)
so the targets are invariant to the proposal's position and scale. Fast/Faster R-CNN (Girshick 2015,
Sec. 2.3; Ren et al. 2015, Sec. 3.1.2) keep it and multiply the deltas by fixed weights (10, 10, 5, 5)
so that they have roughly unit variance for the smooth-L1 loss.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _centres_and_sizes(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


class BoxCoder:
    """Encode boxes as deltas relative to proposals and decode them back (vectorised, any N).

    ``weights`` scale (dx, dy, dw, dh); ``bbox_xform_clip`` caps the decoded dw, dh so that
    ``exp`` cannot overflow early in training (log(1000 / 16): no box grows more than 62x).
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        bbox_xform_clip: float = math.log(1000.0 / 16),
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def encode(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Deltas (N x 4) that move each proposal (N x 4, xyxy) onto its reference box (N x 4, xyxy)."""
        wx, wy, ww, wh = self.weights
        gx, gy, gw, gh = _centres_and_sizes(reference_boxes.float())
        px, py, pw, ph = _centres_and_sizes(proposals.float())
        deltas = torch.stack(
            (
                wx * (gx - px) / pw,
                wy * (gy - py) / ph,
                ww * torch.log(gw / pw),
                wh * torch.log(gh / ph),
            ),
            dim=1,
        )
        return deltas.to(reference_boxes.dtype)

    def decode(self, deltas: Tensor, proposals: Tensor) -> Tensor:
        """Boxes (N x 4k, xyxy) from deltas (N x 4k: k boxes per proposal, e.g. one per class)."""
        wx, wy, ww, wh = self.weights
        proposals = proposals.to(deltas.dtype)
        px, py, pw, ph = (t[:, None] for t in _centres_and_sizes(proposals))
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        cx = dx * pw + px
        cy = dy * ph + py
        half_w = 0.5 * torch.exp(dw) * pw
        half_h = 0.5 * torch.exp(dh) * ph
        boxes = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=2)
        return boxes.reshape(deltas.shape)
