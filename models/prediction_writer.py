"""Predictions as files: COCO results JSON, VOC palette label maps, images with the predictions drawn.

* detections / instance masks -> ``coco_instances_results.json``: a list of ``{image_id, category_id,
  bbox [x, y, w, h], score}`` (plus ``segmentation``, a compressed RLE of the mask thresholded at 0.5,
  for instance models) in the coordinates of the original image: the format ``COCO.loadRes``,
  ``scripts/evaluate.py detection --dt`` and the COCO test-dev server read;
* semantic label maps -> ``label_maps/<image stem>.png`` (VOC palette, pixel value = class), the
  layout ``scripts/evaluate.py semantic --pred`` reads.

Category ids: model label ``i`` (1..K) becomes ``label_to_category_id[i]``, the map of the COCO
DataModule (sorted category ids, so COCO's 1..80 labels become its 1..90 ids); without a map (VOC,
shapes) the category id is the label itself. :class:`PredictionWriter` writes the files during
``trainer.test`` (results of the test split) and ``trainer.predict`` (also drawn images).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from datamodules.palette import save_palette_png, voc_palette
from models.callbacks import instance_label_map
from models.segmentation.io import overlay_mask

__all__ = [
    "RESULTS_FILE",
    "LABEL_MAP_DIR",
    "rescale_prediction",
    "coco_results",
    "draw_detections",
    "draw_semantic",
    "save_rgb",
    "save_label_map",
    "write_json",
    "PredictionWriter",
]

RESULTS_FILE = "coco_instances_results.json"
LABEL_MAP_DIR = "label_maps"
_COLOURS = np.asarray(voc_palette(256), np.uint8).reshape(256, 3)


def rescale_prediction(
    pred: Mapping[str, Tensor], size: tuple[int, int], orig_size: tuple[int, int]
) -> dict[str, Tensor]:
    """Boxes (and mask probabilities) of an image of ``size`` (H, W) mapped to ``orig_size`` (a resize)."""
    out = {k: v.detach().cpu() for k, v in pred.items() if torch.is_tensor(v)}
    if tuple(size) == tuple(orig_size):
        return out
    sy, sx = orig_size[0] / size[0], orig_size[1] / size[1]
    out["boxes"] = out["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=out["boxes"].dtype)
    if "masks" in out and len(out["masks"]):
        masks = out["masks"].float()
        masks = masks if masks.ndim == 4 else masks[:, None]
        out["masks"] = torch.nn.functional.interpolate(
            masks, size=tuple(orig_size), mode="bilinear", align_corners=False
        )
    return out


def _category(label: int, label_to_category_id: Mapping[int, int] | None) -> int:
    if label_to_category_id is None:
        return int(label)
    if label not in label_to_category_id:
        raise KeyError(f"label {label} has no category id in the label map ({len(label_to_category_id)} labels)")
    return int(label_to_category_id[label])


def coco_results(
    pred: Mapping[str, Tensor],
    image_id: int,
    label_to_category_id: Mapping[int, int] | None = None,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """COCO result entries of one image's ``{boxes xyxy, labels, scores[, masks]}``."""
    boxes = pred["boxes"].detach().cpu().double().reshape(-1, 4).tolist()
    labels = pred["labels"].detach().cpu().tolist()
    scores = pred["scores"].detach().cpu().tolist()
    rles: list[dict[str, Any]] | None = None
    if "masks" in pred:
        from pycocotools import mask as mask_utils

        masks = pred["masks"].detach().cpu()
        masks = (masks[:, 0] if masks.ndim == 4 else masks).float() > mask_threshold
        binary = np.asfortranarray(masks.numpy().transpose(1, 2, 0).astype(np.uint8))
        with warnings.catch_warnings():  # pycocotools' numpy-2 DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            encoded = mask_utils.encode(binary) if len(boxes) else []
        rles = [
            {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in encoded
        ]
    out = []
    for k, ((x1, y1, x2, y2), label, score) in enumerate(zip(boxes, labels, scores)):
        entry: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": _category(int(label), label_to_category_id),
            "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
            "score": round(float(score), 5),
        }
        if rles is not None:
            entry["segmentation"] = rles[k]
        out.append(entry)
    return out


def _as_uint8(image: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(image, Tensor):
        image = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(image, dtype=np.uint8)


def draw_detections(
    image: np.ndarray | Tensor,
    pred: Mapping[str, Tensor],
    class_names: Sequence[str],
    score_threshold: float = 0.3,
    mask_threshold: float = 0.5,
) -> np.ndarray:
    """``image`` (H x W x 3 uint8 or a 3 x H x W [0, 1] tensor) with the boxes scoring at least
    ``score_threshold`` drawn, each captioned ``<class> <score>``, and their masks blended in."""
    import cv2

    canvas = _as_uint8(image).copy()
    keep = pred["scores"].detach().cpu() >= score_threshold
    boxes, labels, scores = (pred[k].detach().cpu()[keep] for k in ("boxes", "labels", "scores"))
    if "masks" in pred and keep.any():
        canvas = overlay_mask(
            canvas, instance_label_map(pred["masks"].detach().cpu()[keep], labels, canvas.shape[:2], mask_threshold)
        )
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    scale = max(0.35, min(canvas.shape[:2]) / 900)
    for (x1, y1, x2, y2), label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
        colour = tuple(int(c) for c in _COLOURS[int(label) % 255 or 1])
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(canvas, p1, p2, colour, thickness)
        name = class_names[label - 1] if 1 <= label <= len(class_names) else str(label)
        caption = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(p1[1] - th - base, 0)
        cv2.rectangle(canvas, (p1[0], top), (p1[0] + tw, top + th + base), colour, -1)
        text = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        cv2.putText(canvas, caption, (p1[0], top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, text, 1, cv2.LINE_AA)
    return canvas


def draw_semantic(image: np.ndarray | Tensor, label_map: np.ndarray | Tensor, alpha: float = 0.5) -> np.ndarray:
    """``image`` with the VOC colour of every predicted class blended in (background left as is)."""
    return overlay_mask(_as_uint8(image), label_map, alpha)


def save_rgb(path: str | Path, image: np.ndarray) -> Path:
    """Write an H x W x 3 uint8 RGB image (JPEG quality 95 for ``.jpg``; the format follows the suffix)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
    return path


def save_label_map(path: str | Path, label_map: np.ndarray) -> Path:
    """Write an H x W label map as a VOC palette PNG (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_palette_png(path, label_map)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _label_map_at(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if label_map.shape == tuple(size):
        return label_map
    t = torch.from_numpy(label_map.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="nearest")[0, 0].numpy().astype(np.uint8)


class PredictionWriter(pl.Callback):
    """Writes the predictions of ``trainer.test`` and ``trainer.predict`` into ``out_dir``.

    Test: ``<out_dir>/coco_instances_results.json`` (detection / instance) or ``<out_dir>/label_maps/``
    (semantic) for the test split, in the original image sizes. Predict: the same under
    ``<out_dir>/predictions/``, plus each image with its predictions drawn (at the size the model saw).
    ``out_dir`` defaults to the trainer's log dir. Under DDP the results are gathered on rank 0.

    Args:
        out_dir: where to write; ``None`` = ``trainer.log_dir``.
        score_threshold: the least score of a drawn box (the JSON keeps every prediction).
        mask_threshold: mask probability counted as foreground.
    """

    def __init__(self, out_dir: str | None = None, score_threshold: float = 0.3, mask_threshold: float = 0.5) -> None:
        self.out_dir, self.score_threshold, self.mask_threshold = out_dir, score_threshold, mask_threshold
        self._results: list[dict[str, Any]] = []
        self._indices: list[int] | None = None
        self._seen = 0

    # -- where ----------------------------------------------------------------------------------------
    def _dir(self, trainer: pl.Trainer, stage: str) -> Path:
        base = Path(self.out_dir) if self.out_dir else Path(trainer.log_dir or ".")
        return base / "predictions" if stage == "predict" else base

    def _start(self) -> None:
        self._results, self._indices, self._seen = [], None, 0

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

    # -- per batch ------------------------------------------------------------------------------------
    @staticmethod
    def _loader(trainer: pl.Trainer, stage: str, dataloader_idx: int) -> Any:
        loaders = trainer.test_dataloaders if stage == "test" else trainer.predict_dataloaders
        return loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders

    def _records(self, trainer: pl.Trainer, stage: str, dataloader_idx: int, n: int) -> list[Any]:
        """The dataset records of the next ``n`` images of the (unshuffled, possibly sharded) loader."""
        loader = self._loader(trainer, stage, dataloader_idx)
        records = getattr(getattr(loader, "dataset", None), "records", None)
        if records is None:
            return [None] * n
        if self._indices is None:
            sampler = getattr(loader, "sampler", None)
            self._indices = [int(i) for i in sampler] if sampler is not None else list(range(len(records)))
        picked = [records[i] for i in self._indices[self._seen : self._seen + n]]
        self._seen += n
        return picked

    def _handle(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        stage: str,
        dataloader_idx: int,
    ) -> None:
        if outputs is None:
            return
        images, targets = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (batch, None)
        out = self._dir(trainer, stage)
        names = list(getattr(pl_module, "class_names", []))
        records = self._records(trainer, stage, dataloader_idx, len(images))
        if isinstance(outputs, Tensor):  # semantic: logits (test) or label maps (predict)
            maps = (outputs.argmax(1) if outputs.ndim == 4 else outputs).to(torch.uint8).cpu().numpy()
            for k, label_map in enumerate(maps):
                rec = records[k]
                stem = Path(rec.file_name).stem if rec is not None else f"{self._seen - len(maps) + k:06d}"
                size = label_map.shape
                if rec is not None:
                    from PIL import Image

                    with Image.open(rec.path) as im:  # header only: the original size
                        size = (im.height, im.width)
                save_label_map(out / LABEL_MAP_DIR / f"{stem}.png", _label_map_at(label_map, size))
                if stage == "predict":
                    save_rgb(out / f"{stem}.jpg", draw_semantic(images[k], label_map))
            return
        mapping = getattr(getattr(trainer, "datamodule", None), "label_to_category_id", None)
        for k, pred in enumerate(outputs):
            target = targets[k] if targets is not None else {}
            size = tuple(images[k].shape[-2:])
            orig = tuple(target.get("orig_size", size))
            image_id = target.get("image_id", records[k].image_id if records[k] is not None else self._seen + k)
            scaled = rescale_prediction(pred, size, orig)
            self._results += coco_results(scaled, int(image_id), mapping, self.mask_threshold)
            if stage == "predict":
                stem = Path(target.get("file_name", f"{int(image_id):06d}")).stem
                save_rgb(
                    out / f"{stem}.jpg",
                    draw_detections(images[k], pred, names, self.score_threshold, self.mask_threshold),
                )

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._handle(trainer, pl_module, outputs, batch, "test", dataloader_idx)

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._handle(trainer, pl_module, outputs, batch, "predict", dataloader_idx)

    # -- at the end -----------------------------------------------------------------------------------
    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if getattr(pl_module, "task", "") == "semantic":
            return
        results = self._results
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, results)
            results = [r for part in gathered for r in part]
        if trainer.is_global_zero:
            write_json(self._dir(trainer, stage) / RESULTS_FILE, results)
        self._results = []

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "predict")
