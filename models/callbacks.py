"""Lightning callbacks that every run of ``scripts/train.py`` can use.

* :class:`RunMetadata`: writes ``run_info.json`` (seed, library versions, git commit, command line,
  devices) beside the run's logs and into the W&B config, so any number can be traced to its code.
* :class:`WandbPredictionImages`: each validation epoch, a few validation images with predicted and
  ground-truth boxes (``wandb.Image(boxes=)``) or masks (``masks=``), the same as a predictions table
  (image, scores, ground truth) and the precision/recall curves as a W&B line plot.
* :class:`ValidationSummary`: after each validation, a small table of the main metrics on the terminal.
* :class:`LineProgressBar`: progress as one plain line every N steps, for logs that are not a terminal.
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
from pytorch_lightning.callbacks.progress import ProgressBar
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "numpy",
    "albumentations",
    "wandb",
    "faster-coco-eval",
    "pycocotools",
    "opencv-contrib-python-headless",
)


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and whether the working tree had uncommitted changes (``None`` outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        )
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
        info.update(
            world_size=trainer.world_size,
            num_nodes=trainer.num_nodes,
            precision=str(trainer.precision),
            accelerator=type(trainer.accelerator).__name__,
        )
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


#: the metrics :class:`ValidationSummary` shows, in this order, when they were logged
MAIN_METRICS = (
    "val/voc07/mAP",
    "val/voc/mAP",
    "val/lecture/mAP",
    "val/coco/AP",
    "val/coco/AP50",
    "val/coco_segm/AP",
    "val/mean_iou",
    "val/miou",
    "val/pixel_accuracy",
    "val/mean_dice",
)


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"


def _progress_print(trainer: pl.Trainer, text: str) -> None:
    """Print through the progress bar (so a tqdm bar is not broken) when there is one, else to stdout."""
    bar = trainer.progress_bar_callback
    if bar is not None:
        bar.print(text)
    else:
        print(text, flush=True)


class ValidationSummary(pl.Callback):
    """After each validation (not the sanity check), a compact table of the main metrics on rank 0:
    value, change since the previous validation and best so far.

    Args:
        metrics: keys to show when logged; default :data:`MAIN_METRICS` plus the checkpoint's monitor.
    """

    def __init__(self, metrics: tuple[str, ...] = MAIN_METRICS) -> None:
        self.metrics = tuple(metrics)
        self._previous: dict[str, float] = {}
        self._best: dict[str, float] = {}

    def table(self, trainer: pl.Trainer) -> str | None:
        """The table for the trainer's current ``callback_metrics`` (``None`` when none of the keys was logged)."""
        keys = list(self.metrics)
        monitor = getattr(trainer.checkpoint_callback, "monitor", None)
        if monitor and monitor not in keys:
            keys.append(monitor)
        values = {k: float(trainer.callback_metrics[k]) for k in keys if k in trainer.callback_metrics}
        if not values:
            return None
        width = max(len(k) for k in values)
        lines = [
            f"validation | epoch {trainer.current_epoch} | step {trainer.global_step}",
            f"  {'metric':<{width}}  {'value':>8}  {'change':>8}  {'best':>8}",
        ]
        mode_max = getattr(trainer.checkpoint_callback, "mode", "max") != "min"
        for key, value in values.items():
            change = f"{value - self._previous[key]:+.4f}" if key in self._previous else "-"
            best = self._best.get(key, value)
            best = (max if mode_max or key != monitor else min)(best, value)
            self._best[key], self._previous[key] = best, value
            lines.append(f"  {key:<{width}}  {_fmt(value):>8}  {change:>8}  {_fmt(best):>8}")
        return "\n".join(lines)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        text = self.table(trainer)
        if text:
            _progress_print(trainer, text)


class LineProgressBar(ProgressBar):
    """Training progress as plain lines (epoch, step, batch, progress-bar metrics, speed, time left), one every
    ``every_n_steps`` optimiser steps and one per finished epoch: readable in a cluster job's log file, where a
    tqdm bar is one line of carriage returns.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._last_step = -1
        self._start = 0.0
        self._start_step = 0
        self._epoch_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            print(*args, **kwargs, flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._start_step, self._last_step = time.monotonic(), trainer.global_step, trainer.global_step

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def _metrics_text(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        return " | ".join(f"{k} {_fmt(v) if isinstance(v, float) else v}" for k, v in metrics.items())

    def step_line(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch_idx: int) -> str:
        """The progress line at the current step."""
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        batches = self.total_train_batches
        parts = [
            f"epoch {trainer.current_epoch}{epochs}",
            f"step {step}" + (f"/{int(total)}" if total != float("inf") else ""),
            f"batch {batch_idx + 1}" + (f"/{int(batches)}" if batches != float("inf") else ""),
        ]
        metrics = self._metrics_text(trainer, pl_module)
        if metrics:
            parts.append(metrics)
        elapsed = time.monotonic() - self._start
        done = step - self._start_step
        if elapsed > 0 and done > 0:
            rate = done / elapsed
            parts.append(f"{rate:.2f} steps/s")
            if total != float("inf"):
                parts.append(f"eta {time.strftime('%H:%M:%S', time.gmtime(max(0.0, (total - step) / rate)))}")
        return " | ".join(parts)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step != self._last_step and step % self.every_n_steps == 0:
            self._last_step = step
            self.print(self.step_line(trainer, pl_module, batch_idx))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = self._metrics_text(trainer, pl_module)
        self.print(
            f"epoch {trainer.current_epoch} done | step {trainer.global_step} | "
            f"{time.monotonic() - self._epoch_start:.1f} s" + (f" | {metrics}" if metrics else "")
        )


def _class_labels(class_names: list[str]) -> dict[int, str]:
    return {0: "background", **{i + 1: name for i, name in enumerate(class_names)}}


def _image_array(image: torch.Tensor) -> np.ndarray:
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


def _box_data(
    boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None, names: dict[int, str]
) -> list[dict[str, Any]]:
    out = []
    for i, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        item: dict[str, Any] = {
            "position": {"minX": box[0], "minY": box[1], "maxX": box[2], "maxY": box[3]},
            "domain": "pixel",
            "class_id": int(label),
        }
        if scores is not None:
            item["scores"] = {"score": float(scores[i])}
            item["box_caption"] = f"{names.get(int(label), label)} {float(scores[i]):.2f}"
        else:
            item["box_caption"] = names.get(int(label), str(label))
        out.append(item)
    return out


def instance_label_map(
    masks: torch.Tensor, labels: torch.Tensor, shape: tuple[int, int], threshold: float = 0.5
) -> np.ndarray:
    """One H x W class map from instance masks (N x 1 x H x W probabilities or N x H x W binary):
    later (lower-scored) instances never overwrite earlier ones."""
    out = np.zeros(shape, np.int64)
    if len(masks) == 0:
        return out
    binary = (masks[:, 0] if masks.ndim == 4 else masks).float() > threshold
    for m, label in zip(binary.cpu().numpy()[::-1], labels.cpu().numpy()[::-1]):
        out[m] = int(label)
    return out


#: the columns of the ``val/predictions`` table (one row per logged image and validation)
PREDICTION_COLUMNS = (
    "epoch",
    "step",
    "image",
    "predictions",
    "ground_truth",
    "num_predictions",
    "num_ground_truth",
    "top_score",
)


def pr_curve_series(
    curves: dict[str, dict[str, Any]], max_points: int = 200
) -> tuple[list[list[float]], list[list[float]]]:
    """Recall (x) and precision (y) lists per class for ``wandb.plot.line_series``, each thinned to at most
    ``max_points`` points (the first and last kept) so a validation's plot stays small."""
    xs, ys = [], []
    for curve in curves.values():
        recall, precision = np.asarray(curve["recall"], float), np.asarray(curve["precision"], float)
        if len(recall) > max_points:
            idx = np.unique(np.linspace(0, len(recall) - 1, max_points).round().astype(int))
            recall, precision = recall[idx], precision[idx]
        xs.append(recall.tolist())
        ys.append(precision.tolist())
    return xs, ys


class WandbPredictionImages(pl.Callback):
    """Log ``num_images`` validation images with predictions and ground truth to W&B each validation epoch, as
    images (``val/examples``) and as a table (``val/predictions``), with the PR curves (``val/pr_curve``).

    Args:
        num_images: how many images (the first of the validation set, so epochs are comparable).
        score_threshold: boxes below this score are not drawn (all are still scored by the metrics).
        pr_curves: also log the per-class precision/recall curves of detectors (a W&B line plot and an image).
    """

    def __init__(self, num_images: int = 8, score_threshold: float = 0.3, pr_curves: bool = True) -> None:
        self.num_images, self.score_threshold, self.pr_curves = num_images, score_threshold, pr_curves
        self._items: list[Any] = []

    @staticmethod
    def _loggers(trainer: pl.Trainer) -> list[WandbLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._items = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if (
            trainer.sanity_checking
            or not trainer.is_global_zero
            or len(self._items) >= self.num_images
            or outputs is None
        ):
            return
        images, targets = batch
        for k in range(len(images)):
            if len(self._items) >= self.num_images:
                break
            pred = outputs[k]
            pred = (
                {n: v.detach().cpu() for n, v in pred.items() if torch.is_tensor(v)}
                if isinstance(pred, dict)
                else pred.detach().cpu()
            )
            target = targets[k]
            target = (
                {n: v.cpu() for n, v in target.items() if torch.is_tensor(v)}
                if isinstance(target, dict)
                else target.cpu()
            )
            self._items.append((images[k].detach().cpu(), pred, target))

    def overlays(self, class_names: list[str]) -> list[dict[str, Any]]:
        """For each collected image, the ``wandb.Image`` arguments: ``data``, ``boxes`` and / or ``masks``."""
        names = _class_labels(class_names)
        out = []
        for image, pred, target in self._items:
            array = _image_array(image)
            if isinstance(pred, torch.Tensor):  # semantic: label maps (255 = ignore, shown as background)
                gt = target.numpy().astype(np.int64)
                out.append(
                    {
                        "data_or_path": array,
                        "masks": {
                            "predictions": {"mask_data": pred.numpy().astype(np.int64), "class_labels": names},
                            "ground_truth": {"mask_data": np.where(gt == 255, 0, gt), "class_labels": names},
                        },
                    }
                )
                continue
            keep = pred["scores"] >= self.score_threshold
            item: dict[str, Any] = {
                "data_or_path": array,
                "boxes": {
                    "predictions": {
                        "box_data": _box_data(pred["boxes"][keep], pred["labels"][keep], pred["scores"][keep], names),
                        "class_labels": names,
                    },
                    "ground_truth": {
                        "box_data": _box_data(target["boxes"], target["labels"], None, names),
                        "class_labels": names,
                    },
                },
            }
            if "masks" in pred:
                shape = array.shape[:2]
                item["masks"] = {
                    "predictions": {
                        "mask_data": instance_label_map(pred["masks"][keep], pred["labels"][keep], shape),
                        "class_labels": names,
                    }
                }
                if "masks" in target:
                    item["masks"]["ground_truth"] = {
                        "mask_data": instance_label_map(target["masks"], target["labels"], shape),
                        "class_labels": names,
                    }
            out.append(item)
        return out

    def summaries(self, class_names: list[str]) -> list[list[Any]]:
        """Per collected image, the non-image cells of :data:`PREDICTION_COLUMNS`: predicted objects with scores
        (above ``score_threshold``), ground-truth objects, their counts and the highest score."""
        names = _class_labels(class_names)
        out = []
        for _, pred, target in self._items:
            if isinstance(pred, torch.Tensor):  # semantic: the classes present in each label map
                gt = target[target != 255]
                pred_classes = [names.get(int(c), str(int(c))) for c in torch.unique(pred).tolist() if c != 0]
                gt_classes = [names.get(int(c), str(int(c))) for c in torch.unique(gt).tolist() if c != 0]
                out.append([", ".join(pred_classes), ", ".join(gt_classes), len(pred_classes), len(gt_classes), None])
                continue
            keep = pred["scores"] >= self.score_threshold
            order = torch.argsort(pred["scores"][keep], descending=True)
            labels, scores = pred["labels"][keep][order].tolist(), pred["scores"][keep][order].tolist()
            predicted = ", ".join(f"{names.get(int(lab), str(lab))} {sc:.2f}" for lab, sc in zip(labels, scores))
            truth = ", ".join(names.get(int(lab), str(lab)) for lab in target["labels"].tolist())
            top = float(pred["scores"].max()) if len(pred["scores"]) else None
            out.append([predicted, truth, len(labels), int(len(target["labels"])), top])
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

        class_names = list(pl_module.class_names)
        images = [wandb.Image(**o) for o in self.overlays(class_names)]
        payload: dict[str, Any] = {"val/examples": images}
        if images:
            rows = [
                [trainer.current_epoch, trainer.global_step, image, *summary]
                for image, summary in zip(images, self.summaries(class_names))
            ]
            payload["val/predictions"] = wandb.Table(columns=list(PREDICTION_COLUMNS), data=rows)
        if curves:
            from PIL import Image

            from metrics.plots import plot_pr_curves

            with tempfile.TemporaryDirectory() as tmp:
                path = plot_pr_curves(
                    curves, Path(tmp) / "pr.png", title=f"epoch {trainer.current_epoch}: precision / recall (IoU 0.5)"
                )
                payload["val/pr_curves"] = wandb.Image(np.asarray(Image.open(path).convert("RGB")))
            xs, ys = pr_curve_series(curves)
            payload["val/pr_curve"] = wandb.plot.line_series(
                xs=xs,
                ys=ys,
                keys=[f"{name} (AP {c['ap']:.3f})" for name, c in curves.items()],
                title=f"precision / recall (VOC, IoU 0.5), epoch {trainer.current_epoch}",
                xname="recall",
            )
        for logger in loggers:
            logger.experiment.log({**payload, "trainer/global_step": trainer.global_step})
        self._items = []
