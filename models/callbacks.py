"""Lightning callbacks that every run of ``scripts/train.py`` can use.

* :class:`RunMetadata`: writes ``run_info.json`` (seed, library versions, git commit, command line,
  devices) beside the run's logs and into the W&B config, so any number can be traced to its code.
* :class:`WandbPredictionImages`: each validation epoch, a few validation images with predicted and
  ground-truth boxes (``wandb.Image(boxes=)``) or masks (``masks=``), and the precision/recall curves.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "numpy", "albumentations", "wandb",
             "faster-coco-eval", "pycocotools", "opencv-contrib-python-headless")


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and whether the working tree had uncommitted changes (``None`` outside a git checkout)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                                    text=True, timeout=10, check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def run_info(trainer: pl.Trainer | None = None) -> dict[str, Any]:
    """What a run needs to be reproduced: seed, versions, code, command and hardware."""
    versions = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    info: dict[str, Any] = {
        "seed": int(os.environ["PL_GLOBAL_SEED"]) if "PL_GLOBAL_SEED" in os.environ else None,
        "versions": versions,
        "git": git_state(),
        "command": [sys.executable, *sys.argv],
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    if trainer is not None:
        info.update(world_size=trainer.world_size, num_nodes=trainer.num_nodes, precision=str(trainer.precision),
                    accelerator=type(trainer.accelerator).__name__)
    return info


class RunMetadata(pl.Callback):
    """Saves :func:`run_info` as ``<log_dir>/run_info.json`` and in every W&B run's config."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # trainer.log_dir is a collective under DDP (broadcast): every rank asks, rank 0 writes. Without a
        # logger it is the working directory: nothing is written there.
        log_dir = trainer.log_dir if trainer.loggers else None
        self._write(trainer, stage, log_dir)

    @rank_zero_only
    def _write(self, trainer: pl.Trainer, stage: str, log_dir: str | None) -> None:
        info = dict(run_info(trainer), stage=stage)
        if log_dir is not None:
            path = Path(log_dir) / "run_info.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(info, indent=2))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"run_info": info}, allow_val_change=True)


def _class_labels(class_names: list[str]) -> dict[int, str]:
    return {0: "background", **{i + 1: name for i, name in enumerate(class_names)}}


def _image_array(image: torch.Tensor) -> np.ndarray:
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


def _box_data(boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None, names: dict[int, str]) -> list[dict[str, Any]]:
    out = []
    for i, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        item: dict[str, Any] = {"position": {"minX": box[0], "minY": box[1], "maxX": box[2], "maxY": box[3]},
                                "domain": "pixel", "class_id": int(label)}
        if scores is not None:
            item["scores"] = {"score": float(scores[i])}
            item["box_caption"] = f"{names.get(int(label), label)} {float(scores[i]):.2f}"
        else:
            item["box_caption"] = names.get(int(label), str(label))
        out.append(item)
    return out


def instance_label_map(masks: torch.Tensor, labels: torch.Tensor, shape: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """One H x W class map from instance masks (N x 1 x H x W probabilities or N x H x W binary):
    later (lower-scored) instances never overwrite earlier ones."""
    out = np.zeros(shape, np.int64)
    if len(masks) == 0:
        return out
    binary = (masks[:, 0] if masks.ndim == 4 else masks).float() > threshold
    for m, label in zip(binary.cpu().numpy()[::-1], labels.cpu().numpy()[::-1]):
        out[m] = int(label)
    return out


class WandbPredictionImages(pl.Callback):
    """Log ``num_images`` validation images with predictions and ground truth to W&B each validation epoch.

    Args:
        num_images: how many images (the first of the validation set, so epochs are comparable).
        score_threshold: boxes below this score are not drawn (all are still scored by the metrics).
        pr_curves: also log the per-class precision/recall curves of detectors as an image.
    """

    def __init__(self, num_images: int = 8, score_threshold: float = 0.3, pr_curves: bool = True) -> None:
        self.num_images, self.score_threshold, self.pr_curves = num_images, score_threshold, pr_curves
        self._items: list[Any] = []

    @staticmethod
    def _loggers(trainer: pl.Trainer) -> list[WandbLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._items = []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or len(self._items) >= self.num_images or outputs is None:
            return
        images, targets = batch
        for k in range(len(images)):
            if len(self._items) >= self.num_images:
                break
            pred = outputs[k]
            pred = {n: v.detach().cpu() for n, v in pred.items() if torch.is_tensor(v)} if isinstance(pred, dict) else pred.detach().cpu()
            target = targets[k]
            target = {n: v.cpu() for n, v in target.items() if torch.is_tensor(v)} if isinstance(target, dict) else target.cpu()
            self._items.append((images[k].detach().cpu(), pred, target))

    def overlays(self, class_names: list[str]) -> list[dict[str, Any]]:
        """For each collected image, the ``wandb.Image`` arguments: ``data``, ``boxes`` and / or ``masks``."""
        names = _class_labels(class_names)
        out = []
        for image, pred, target in self._items:
            array = _image_array(image)
            if isinstance(pred, torch.Tensor):  # semantic: label maps (255 = ignore, shown as background)
                gt = target.numpy().astype(np.int64)
                out.append({"data_or_path": array, "masks": {
                    "predictions": {"mask_data": pred.numpy().astype(np.int64), "class_labels": names},
                    "ground_truth": {"mask_data": np.where(gt == 255, 0, gt), "class_labels": names}}})
                continue
            keep = pred["scores"] >= self.score_threshold
            item: dict[str, Any] = {"data_or_path": array, "boxes": {
                "predictions": {"box_data": _box_data(pred["boxes"][keep], pred["labels"][keep], pred["scores"][keep], names),
                                "class_labels": names},
                "ground_truth": {"box_data": _box_data(target["boxes"], target["labels"], None, names), "class_labels": names}}}
            if "masks" in pred:
                shape = array.shape[:2]
                item["masks"] = {"predictions": {"mask_data": instance_label_map(pred["masks"][keep], pred["labels"][keep], shape),
                                                 "class_labels": names}}
                if "masks" in target:
                    item["masks"]["ground_truth"] = {"mask_data": instance_label_map(target["masks"], target["labels"], shape),
                                                     "class_labels": names}
            out.append(item)
        return out

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = self._loggers(trainer)
        if trainer.sanity_checking or not loggers:
            return
        curves = None
        collection = getattr(pl_module, "val_metrics", None)
        metric = collection["bbox"] if self.pr_curves and collection is not None and "bbox" in collection else None
        if metric is not None and hasattr(metric, "pr_curves"):
            with metric.sync_context(should_unsync=True):  # every rank joins the gather, rank 0 plots
                curves = metric.pr_curves()
        if not trainer.is_global_zero:
            return
        import wandb

        payload: dict[str, Any] = {"val/examples": [wandb.Image(**o) for o in self.overlays(list(pl_module.class_names))]}
        if curves:
            from PIL import Image

            from metrics.plots import plot_pr_curves

            with tempfile.TemporaryDirectory() as tmp:
                path = plot_pr_curves(curves, Path(tmp) / "pr.png", title=f"epoch {trainer.current_epoch}: precision / recall (IoU 0.5)")
                payload["val/pr_curves"] = wandb.Image(np.asarray(Image.open(path).convert("RGB")))
        for logger in loggers:
            logger.experiment.log({**payload, "trainer/global_step": trainer.global_step})
        self._items = []
