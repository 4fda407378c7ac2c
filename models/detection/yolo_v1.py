"""YOLO v1: You Only Look Once (Redmon et al., CVPR 2016; course slide 63).

Detection as one regression: the image is divided into an S x S grid; the cell that holds an
object's centre is responsible for it. Each cell predicts B boxes (x, y relative to the cell, w, h
relative to the image, and a confidence = P(object) x IoU) and one set of C conditional class
probabilities, so the whole output is S x S x (5B + C) (Sec. 2). In the paper fully connected layers
on top of the backbone produce it, so every prediction sees the whole image (``head: fc``); ``head:
conv`` predicts every cell with one shared 1x1 conv instead (see :class:`YOLOv1Head`). The loss is
sum-squared error with lambda_coord = 5, lambda_noobj = 0.5 and square roots of w and h (Eq. 3); at test time the
class-specific confidence is P(class | object) x confidence, followed by per-class NMS (Sec. 2.2).

Layout of a cell (ours and the targets'): ``B x (x, y, sqrt(w), sqrt(h), confidence)`` then ``C``
class probabilities. The network predicts ``sqrt(w)`` and ``sqrt(h)`` directly, so the loss on square
roots is a plain squared error. The paper's last layer is linear (and needs a slow learning-rate
warm-up not to diverge, Sec. 2.2); with linear outputs our network diverged within ten steps on a fixed
batch at learning rates 3e-3 and 1e-2, so the outputs are squashed into the targets' ranges (sigmoid,
softmax for the classes).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import box_convert

from models.base import DetectionModule
from models.parts.backbones import Backbone, build_body, conv_bn_relu
from models.parts.postprocess import class_candidates, select_detections
from models.parts.image_ops import IMAGE_MEAN, IMAGE_STD
from models.registry import register_model


def encode_yolo_targets(
    boxes: Tensor, labels: Tensor, num_classes: int, grid_size: int, image_size: tuple[int, int]
) -> Tensor:
    """Ground truth of one image as an S x S x (5 + C) grid (the output layout with B = 1).

    ``boxes`` are xyxy pixels of an image of ``image_size`` (height, width); ``labels`` 1..C. The cell
    holding a box's centre gets (x, y) = the centre's offset within the cell in [0, 1), sqrt of the
    width and height as fractions of the image, confidence 1 and the one-hot class. A cell predicts
    one class, so when several centres fall in one cell the largest box is kept (the paper's model
    cannot detect the others either).
    """
    height, width = image_size
    target = boxes.new_zeros(grid_size * grid_size, 5 + num_classes)
    if len(boxes) == 0:
        return target.view(grid_size, grid_size, -1)
    cx, cy, w, h = box_convert(boxes, "xyxy", "cxcywh").unbind(1)
    gx, gy = cx / width * grid_size, cy / height * grid_size
    col = gx.floor().clamp(0, grid_size - 1)
    row = gy.floor().clamp(0, grid_size - 1)
    cell = (row * grid_size + col).long()
    # Largest box first; the first box of each cell wins.
    order = (w * h).argsort(descending=True, stable=True)
    cells, inverse = torch.unique(cell[order], return_inverse=True)
    positions = torch.arange(len(order), device=cell.device)
    first = torch.full_like(cells, len(order)).scatter_reduce(0, inverse, positions, "amin")
    keep = order[first]
    values = torch.stack(
        [
            (gx - col)[keep],
            (gy - row)[keep],
            (w[keep] / width).clamp(min=0).sqrt(),
            (h[keep] / height).clamp(min=0).sqrt(),
            torch.ones_like(w[keep]),
        ],
        dim=1,
    )
    target[cells, :5] = values
    target[cells, 5 + labels[keep] - 1] = 1.0
    return target.view(grid_size, grid_size, -1)


def _cell_boxes(grid: Tensor, grid_size: int) -> Tensor:
    """(x, y, sqrt w, sqrt h) in a cell -> xyxy as fractions of the image, relative to the cell's corner.

    Boxes of the same cell can be compared (IoU) without the cell's position, which cancels out."""
    cx, cy = grid[..., 0] / grid_size, grid[..., 1] / grid_size
    w, h = grid[..., 2].pow(2), grid[..., 3].pow(2)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def _paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes a[i] and b[i] (xyxy, any leading shape, broadcast)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).prod(-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


def yolo_v1_loss(
    prediction: Tensor, target: Tensor, num_classes: int, lambda_coord: float = 5.0, lambda_noobj: float = 0.5
) -> dict[str, Tensor]:
    """The sum-squared-error loss of YOLO v1 (Eq. 3), summed over the grid, averaged over images.

    ``prediction``: N x S x S x (5B + C) (activated); ``target``: N x S x S x (5 + C) from
    :func:`encode_yolo_targets`. In a cell with an object, the one of the B predictors whose box has
    the highest IoU with the ground truth is "responsible": it gets the coordinate loss (x, y,
    sqrt w, sqrt h, weighted by lambda_coord) and its confidence is pulled to that IoU; every other
    predictor's confidence is pushed to 0 with weight lambda_noobj. Class probabilities are penalised
    only in cells with an object.
    """
    n, s = prediction.shape[:2]
    num_boxes = (prediction.shape[-1] - num_classes) // 5
    boxes = prediction[..., : 5 * num_boxes].reshape(n, s, s, num_boxes, 5)
    class_probs = prediction[..., 5 * num_boxes :]
    has_object = target[..., 4]
    gt = target[..., None, :4]

    iou = _paired_iou(_cell_boxes(boxes, s), _cell_boxes(gt, s))  # N x S x S x B
    best = iou.argmax(-1, keepdim=True)
    responsible = torch.zeros_like(iou).scatter_(-1, best, 1.0) * has_object[..., None]

    coord = responsible * (boxes[..., :4] - gt).pow(2).sum(-1)
    confidence = boxes[..., 4]
    obj = responsible * (confidence - iou.detach()).pow(2)
    noobj = (1 - responsible) * confidence.pow(2)
    cls = has_object[..., None] * (class_probs - target[..., 5:]).pow(2)
    return {
        "loss_coord": lambda_coord * coord.sum() / n,
        "loss_obj": obj.sum() / n,
        "loss_noobj": lambda_noobj * noobj.sum() / n,
        "loss_class": cls.sum() / n,
    }


def decode_yolo_output(
    output: Tensor,
    num_classes: int,
    image_size: tuple[int, int],
    score_thresh: float = 0.01,
    nms_thresh: float = 0.5,
    max_detections: int = 100,
) -> dict[str, Tensor]:
    """Detections of one image from its S x S x (5B + C) grid (B inferred; targets decode too).

    Every box gets C class-specific scores ``P(class | object) x confidence`` (Sec. 2.2); pairs above
    ``score_thresh``, clipped to the image, go through per-class NMS
    (:func:`models.parts.postprocess.select_detections`); the ``max_detections`` best are returned as
    ``{boxes (xyxy pixels), scores, labels (1..C)}``.
    """
    s = output.shape[0]
    height, width = image_size
    num_boxes = (output.shape[-1] - num_classes) // 5
    boxes = output[..., : 5 * num_boxes].reshape(s, s, num_boxes, 5)
    steps = torch.arange(s, device=output.device)
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")
    cx = (cols[..., None] + boxes[..., 0]) / s * width
    cy = (rows[..., None] + boxes[..., 1]) / s * height
    w, h = boxes[..., 2].pow(2) * width, boxes[..., 3].pow(2) * height
    xyxy = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1).reshape(-1, 4)
    scores = (output[..., None, 5 * num_boxes :] * boxes[..., 4:5]).reshape(-1, num_classes)  # (S*S*B) x C
    candidates = class_candidates(xyxy, scores, score_thresh)
    return select_detections(*candidates, score_thresh, nms_thresh, max_detections, image_size)


class YOLOv1Head(nn.Module):
    """Two 3x3 convs on the backbone's map (the first with stride ``stride``), then the predictor of
    the S x S x (5B + C) grid, squashed into the targets' ranges.

    ``kind="fc"`` is the paper's (Fig. 3: four convs of 1024 channels, one of stride 2, then fully
    connected layers of 4096 units with dropout 0.5 and S x S x (5B + C)): every cell has its own
    weights and sees the whole image. ``kind="conv"`` average-pools the map to S x S and predicts every
    cell with one shared 1x1 conv (what YOLO v2 moved to): far fewer weights per cell, so it learns
    from a small dataset where the fully connected head memorises it.
    """

    def __init__(
        self,
        in_channels: int,
        in_cells: int,
        grid_size: int,
        num_boxes: int,
        num_classes: int,
        channels: int = 128,
        stride: int = 1,
        hidden_size: int = 512,
        dropout: float = 0.5,
        kind: Literal["fc", "conv"] = "fc",
    ) -> None:
        super().__init__()
        if kind not in ("fc", "conv"):
            raise ValueError(f"kind must be 'fc' or 'conv', got {kind!r}")
        self.grid_size, self.num_boxes, self.num_classes, self.kind = grid_size, num_boxes, num_classes, kind
        outputs = 5 * num_boxes + num_classes
        self.convs = nn.Sequential(conv_bn_relu(in_channels, channels, stride), conv_bn_relu(channels, channels))
        if kind == "fc":
            self.predictor = nn.Sequential(
                nn.Flatten(),
                nn.Linear(channels * in_cells, hidden_size),
                nn.LeakyReLU(0.1, inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden_size, grid_size * grid_size * outputs),
            )
        else:
            self.predictor = nn.Sequential(
                nn.AdaptiveAvgPool2d(grid_size), nn.Dropout(dropout), nn.Conv2d(channels, outputs, 1)
            )

    def forward(self, features: Tensor) -> Tensor:
        s = self.grid_size
        raw = self.predictor(self.convs(features))
        raw = raw.view(len(features), s, s, -1) if self.kind == "fc" else raw.permute(0, 2, 3, 1)
        boxes, classes = raw[..., : 5 * self.num_boxes], raw[..., 5 * self.num_boxes :]
        return torch.cat((boxes.sigmoid(), classes.softmax(-1)), dim=-1)


@register_model("yolo_v1", family="one_stage_anchor")
class YOLOv1(DetectionModule):
    """YOLO v1 on one map of ``backbone``.

    Args:
        backbone, weights: the network and its initialisation (the paper: 20 conv layers pretrained on
            ImageNet; ``weights: shapes`` pretrains it on the embedded dataset of the trainer's DataModule,
            see :mod:`models.parts.pretrain`; None trains from scratch).
        return_layer: the map the head reads (stride 32).
        image_size: images are resized to image_size x image_size (the paper: 448).
        grid_size, num_boxes: S and B (7 and 2 in the paper).
        head: ``fc`` (the paper's fully connected layers) or ``conv`` (one 1x1 conv shared by the
            cells), see :class:`YOLOv1Head`.
        head_channels, head_stride: the head's convs (the paper: 1024, stride 2 to reach 7 x 7).
        hidden_size, dropout: the first fully connected layer (the paper: 4096, 0.5); ``conv`` uses
            the dropout before its predictor.
        lambda_coord, lambda_noobj: loss weights (5 and 0.5).
        score_thresh, nms_thresh, detections_per_img: test-time decoding.
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: str | None = None,
        return_layer: str = "c5",
        image_size: int = 128,
        grid_size: int = 7,
        num_boxes: int = 2,
        head: Literal["fc", "conv"] = "fc",
        head_channels: int = 128,
        head_stride: int = 1,
        hidden_size: int = 512,
        dropout: float = 0.5,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.grid_size, self.lambda_coord, self.lambda_noobj = grid_size, lambda_coord, lambda_noobj
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.transform = GeneralizedRCNNTransform(
            image_size, image_size, IMAGE_MEAN, IMAGE_STD, size_divisible=1, fixed_size=(image_size, image_size)
        )
        body = build_body(backbone, weights, pretrained_bodies=self.pretrained_bodies)  # shapes: loaded at fit
        self.backbone = Backbone(body, (return_layer,))
        cells = math.ceil(image_size / (self.backbone.strides[0] * head_stride)) ** 2
        self.head = YOLOv1Head(
            self.backbone.out_channels,
            cells,
            grid_size,
            num_boxes,
            self.num_classes,
            head_channels,
            head_stride,
            hidden_size,
            dropout,
            head,
        )
        self.stage_timer.instrument(self.backbone, "backbone")
        self.stage_timer.instrument(self.head, "head")

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        batch, targets = self.transform(images, targets)
        (features,) = self.backbone(batch.tensors).values()
        output = self.head(features)
        size = tuple(batch.tensors.shape[-2:])
        if self.training:
            encoded = torch.stack(
                [encode_yolo_targets(t["boxes"], t["labels"], self.num_classes, self.grid_size, size) for t in targets]
            )
            return yolo_v1_loss(output, encoded, self.num_classes, self.lambda_coord, self.lambda_noobj)
        with self.stage_timer.stage("decode_nms"):
            detections = [
                decode_yolo_output(
                    o, self.num_classes, size, self.score_thresh, self.nms_thresh, self.detections_per_img
                )
                for o in output
            ]
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)
