"""Sliding-window detection: apply a CNN classifier to many crops of the image (course slides 12-16).

Every window of a grid of positions, sizes and aspect ratios is cropped, warped to a fixed input size
and classified as one of the K classes or background; the windows that score a class are kept after
per-class non-maximum suppression. The course's point is the cost: the CNN runs once per window, and
the number of windows grows with every size, ratio and finer stride (:attr:`SlidingWindow.num_windows`,
logged), which is what region proposals (R-CNN) and then shared features (Fast/Faster R-CNN) remove.
Overfeat (Sermanet et al., ICLR 2014) is the CNN version of the idea; training follows R-CNN's
fine-tuning (Girshick et al. 2014, Sec. 2.3): windows with IoU >= 0.5 with an object are positives
of its class, windows with IoU < 0.3 with every object are background, sampled in balanced batches.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.base import DetectionModule
from models.parts.postprocess import class_candidates, select_detections
from models.parts.backbones import build_body
from models.parts.image_ops import crop_windows, normalize
from models.parts.pretrain import CropClassifier
from models.parts.proposals import RoISampler
from models.registry import register_model


def window_shapes(
    window_sizes: Sequence[int], aspect_ratios: Sequence[float], stride_fraction: float
) -> list[tuple[int, int, int, int]]:
    """(width, height, x stride, y stride) per window shape: area ``size**2``, height / width = ratio,
    stepped by ``stride_fraction`` of its own width and height."""
    shapes = []
    for size in window_sizes:
        for ratio in aspect_ratios:
            w, h = round(size / math.sqrt(ratio)), round(size * math.sqrt(ratio))
            shapes.append((w, h, max(1, round(stride_fraction * w)), max(1, round(stride_fraction * h))))
    return shapes


def count_windows(
    image_size: tuple[int, int], window_sizes: Sequence[int], aspect_ratios: Sequence[float], stride_fraction: float
) -> int:
    """Windows in an H x W image: sum over shapes of ((W - w) // sx + 1) * ((H - h) // sy + 1), for the
    shapes that fit in the image."""
    height, width = image_size
    return sum(
        ((width - w) // sx + 1) * ((height - h) // sy + 1)
        for w, h, sx, sy in window_shapes(window_sizes, aspect_ratios, stride_fraction)
        if w <= width and h <= height
    )


def sliding_windows(
    image_size: tuple[int, int], window_sizes: Sequence[int], aspect_ratios: Sequence[float], stride_fraction: float
) -> Tensor:
    """All windows (N x 4, xyxy integer pixels) of an H x W image, each shape's grid centred in the image."""
    height, width = image_size
    windows = []
    for w, h, sx, sy in window_shapes(window_sizes, aspect_ratios, stride_fraction):
        if w > width or h > height:
            continue
        nx, ny = (width - w) // sx + 1, (height - h) // sy + 1
        xs = torch.arange(nx) * sx + (width - w - (nx - 1) * sx) // 2
        ys = torch.arange(ny) * sy + (height - h - (ny - 1) * sy) // 2
        y1, x1 = torch.meshgrid(ys, xs, indexing="ij")
        windows.append(torch.stack([x1, y1, x1 + w, y1 + h], dim=-1).reshape(-1, 4))
    return torch.cat(windows).float() if windows else torch.zeros(0, 4)


@register_model("sliding_window", family="sliding_window")
class SlidingWindow(DetectionModule):
    """A crop classifier (backbone, global pooling, linear over K+1 classes) run on every window.

    Args:
        backbone, weights: the classifier's body and its initialisation (``weights: shapes``: pretrained
            on the embedded dataset of the trainer's DataModule, see :mod:`models.parts.pretrain`).
        window_sizes: window side lengths (pixels; a window of ratio r has the area of the square).
        aspect_ratios: height / width of the windows.
        stride_fraction: windows step by this fraction of their own width / height.
        crop_size: every window is warped to crop_size x crop_size (R-CNN warps to 227).
        image_size: the (square) image side :attr:`num_windows` is reported for.
        fg_iou, bg_iou: positives (IoU >= fg_iou, the object's class) and background (IoU < bg_iou);
            windows in between are not trained on.
        windows_per_image, positive_fraction: windows sampled per training image and the largest share
            of positives among them (R-CNN: 128 per batch, a quarter positive; balanced here), by the
            R-CNN family's :class:`models.parts.proposals.RoISampler`.
        score_thresh, nms_thresh, detections_per_img: test-time decoding (per-class NMS).
        crop_batch: windows classified per CNN call at test time (bounds memory).
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        window_sizes: Sequence[int] = (16, 24, 32, 48, 64, 96),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        stride_fraction: float = 0.25,
        crop_size: int = 32,
        image_size: int = 128,
        fg_iou: float = 0.5,
        bg_iou: float = 0.3,
        windows_per_image: int = 64,
        positive_fraction: float = 0.5,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_img: int = 100,
        crop_batch: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        body = build_body(backbone, weights, pretrained_bodies=self.pretrained_bodies)  # shapes: loaded at fit
        self.classifier = CropClassifier(body, self.num_classes + 1)
        self.window_sizes, self.aspect_ratios = tuple(window_sizes), tuple(aspect_ratios)
        self.stride_fraction = stride_fraction
        self.crop_size, self.image_size, self.crop_batch = crop_size, image_size, crop_batch
        self.sampler = RoISampler(windows_per_image, positive_fraction, fg_iou, (0.0, bg_iou))
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self._windows: dict[tuple[int, int, torch.device], Tensor] = {}

    @property
    def num_windows(self) -> int:
        """Windows (CNN evaluations) per ``image_size`` x ``image_size`` image."""
        size = (self.image_size, self.image_size)
        return count_windows(size, self.window_sizes, self.aspect_ratios, self.stride_fraction)

    def windows_for(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        key = (height, width, image.device)
        if key not in self._windows:
            grid = sliding_windows((height, width), self.window_sizes, self.aspect_ratios, self.stride_fraction)
            self._windows[key] = grid.to(image.device)
        return self._windows[key]

    def on_train_start(self) -> None:
        self.log("num_windows", float(self.num_windows))

    def on_test_start(self) -> None:
        self.log("test/num_windows", float(self.num_windows))

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            return self.training_losses(images, targets)
        return [self.detect(image) for image in images]

    def training_losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Cross-entropy over balanced samples of labelled windows (ground-truth boxes included, as R-CNN)."""
        samples = self.sampler([self.windows_for(image) for image in images], targets)
        crops = [crop_windows(normalize(im), boxes, self.crop_size) for im, boxes in zip(images, samples.boxes)]
        logits = self.classifier(torch.cat(crops))
        return {"loss_classifier": F.cross_entropy(logits, samples.labels)}

    @torch.no_grad()
    def detect(self, image: Tensor) -> dict[str, Tensor]:
        """Classify every window of one image, keep class scores above the threshold, per-class NMS."""
        windows = self.windows_for(image)
        normalized, chunks = normalize(image), []
        # crop_batch windows at a time: all windows at once can be thousands of crops (~16,700 at 32 px on a
        # COCO image: 10 GB), so memory is bounded by the batch, not by the image
        for part in windows.split(self.crop_batch):
            with self.stage_timer.stage("crops"):
                crops = crop_windows(normalized, part, self.crop_size)
            with self.stage_timer.stage("cnn"):
                chunks.append(self.classifier(crops).softmax(1))
        scores = torch.cat(chunks)
        with self.stage_timer.stage("nms"):
            candidates = class_candidates(windows, scores[:, 1:], self.score_thresh)
            return select_detections(*candidates, self.score_thresh, self.nms_thresh, self.detections_per_img)
