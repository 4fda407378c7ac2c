"""One LightningModule base per task; every model of the course extends one of them.

The base owns what is the same for every model of a task: the training step (sum of the model's
losses, a guard against non-finite losses), validation and test with exact metrics
(:mod:`metrics`), the optimiser and its schedule, and per-stage timing. A model supplies the
network: ``forward(images, targets=None)`` returning a dict of losses in train mode and, in eval
mode, torchvision's list of ``{boxes, labels, scores[, masks]}`` (detection) or logits (semantic).
"""

from __future__ import annotations

import io
import math
import os
from typing import Any, ClassVar, Literal, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from metrics import DetectionMetrics, SegmentationMetrics
from models.parts.backbones import PretrainedBody
from models.parts.pretrain import load_pretrained_bodies
from models.parts.timing import StageTimer

Protocol = Literal["lecture", "voc07", "voc", "coco"]

#: ``optimizer`` name -> the torch.optim class and the hyperparameters it takes besides ``lr`` and ``weight_decay``
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], tuple[str, ...]]] = {
    "sgd": (torch.optim.SGD, ("momentum",)),
    "adamw": (torch.optim.AdamW, ()),
}
SCHEDULERS = ("cosine", "constant", "multistep")
#: ``optimizer_impl`` name -> the keyword arguments that select it in torch.optim
OPTIMIZER_IMPLS: dict[str, dict[str, bool]] = {
    "for-loop": {"foreach": False, "fused": False},
    "foreach": {"foreach": True, "fused": False},
    "fused": {"foreach": False, "fused": True},
}


def capture_rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and ``random`` generator states."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    # plain types and tensors only: Lightning loads checkpoints with torch.load(weights_only=True)
    numpy_state = {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _migrated(cls: type, checkpoint_path: Any) -> Any:
    """``checkpoint_path`` itself, or (when its saved arguments use names in the class's
    ``renamed_arguments``) the checkpoint with them renamed or dropped, in memory."""
    if not isinstance(checkpoint_path, (str, os.PathLike)) or not os.path.isfile(checkpoint_path):
        return checkpoint_path  # a URL or a file object: Lightning's loader as is
    renames: dict[str, str | None] = {}
    for klass in reversed(cls.__mro__):
        renames.update(vars(klass).get("renamed_arguments", {}))
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False, mmap=True)
    saved = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {}
    stale = [name for name in saved if name in renames]
    if not stale:
        return checkpoint_path
    for name in stale:
        value = saved.pop(name)
        if renames[name] is not None:
            saved.setdefault(renames[name], value)
    changes = ", ".join(f"{n} -> {renames[n]}" if renames[n] else f"{n} (dropped)" for n in stale)
    rank_zero_warn(f"{checkpoint_path}: saved by an earlier version of {cls.__name__}; arguments {changes}")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return buffer


class TaskModule(pl.LightningModule):
    """Optimiser, schedule, loss guard and timing shared by all tasks.

    Args:
        num_classes: object classes K, background excluded (linked from the DataModule by the CLI).
        class_names: the K class names, used for per-class metric keys and plots.
        optimizer: ``sgd`` (momentum) as the papers, or ``adamw``.
        lr, momentum, weight_decay: optimiser settings.
        warmup_steps: linear learning-rate warm-up from 0.1 x lr (Goyal et al. 2017).
        scheduler: ``cosine`` decay to zero over the run, ``constant``, or ``multistep``: the papers' "1x"
            schedule, the rate times ``lr_gamma`` at each of ``milestones`` (optimiser steps, or fractions
            of the run when below 1: the default 2/3, 8/9 are 60k and 80k of 90k iterations).
        nonfinite_loss: ``raise`` stops the run naming the step and the loss terms; ``skip`` drops
            that step's update and counts it, so no ruined weights reach a checkpoint.
        optimizer_impl: how torch.optim runs the update: ``for-loop`` (one parameter at a time, torch's CPU
            default), ``foreach`` (one multi-tensor kernel per operation) or ``fused`` (one kernel for the
            whole update). The same update rule; the floating-point order, and so the trajectory, differs.
        channels_last: train and infer with the network's weights (and so its convolutions' activations) in
            NHWC memory order, which oneDNN and cuDNN run faster for most convolutions.
        torch_compile: ``True``, a ``torch.compile`` mode (``max-autotune``) or its keyword arguments
            (``{backend: aot_eager}``) compile the forward pass; models with data-dependent shapes (proposals,
            NMS) fall back to eager where the graph breaks.

    Attributes:
        pretrained_bodies: the bodies built with ``weights: shapes`` (a model passes this list to
            :func:`~models.parts.backbones.build_body` / ``build_backbone``); ``setup("fit")`` loads their
            weights once, from the shapes dataset of the trainer's DataModule.
    """

    #: ``detection`` | ``semantic`` | ``instance``, set by each task's base below; models/registry.py reads it
    task: str = ""

    def __init__(
        self,
        num_classes: int = 1,
        class_names: Sequence[str] | None = None,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_steps: int = 100,
        scheduler: Literal["cosine", "constant", "multistep"] = "cosine",
        milestones: Sequence[float] = (2 / 3, 8 / 9),
        lr_gamma: float = 0.1,
        nonfinite_loss: Literal["raise", "skip"] = "raise",
        optimizer_impl: Literal["for-loop", "foreach", "fused"] = "for-loop",
        channels_last: bool = False,
        torch_compile: bool | str | dict[str, Any] = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (background excluded), got {num_classes}")
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(1, num_classes + 1)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for num_classes={num_classes}")
        self.stage_timer = StageTimer()
        self.skipped_nonfinite_steps = 0
        self.pretrained_bodies: list[PretrainedBody] = []

    def use_memory_format(self) -> None:
        """Weights in NHWC order when ``channels_last`` (the trainer calls this before fit, validate and
        predict; a checkpoint loaded outside a trainer gets it from :meth:`on_load_checkpoint`)."""
        if self.hparams.get("channels_last", False):
            self.to(memory_format=torch.channels_last)

    def configure_model(self) -> None:
        self.use_memory_format()
        option = self.hparams.get("torch_compile", False)
        if option and not getattr(self, "_compiled_forward", False):
            kwargs = dict(option) if isinstance(option, dict) else ({} if option is True else {"mode": str(option)})
            self.forward = torch.compile(self.forward, **kwargs)  # type: ignore[method-assign]
            self._compiled_forward = True

    def setup(self, stage: str) -> None:
        """Load the :attr:`pretrained_bodies` (``weights: shapes``) not loaded yet from the trainer's DataModule,
        now that it has generated the dataset. Lightning restores a checkpoint after this, so resuming keeps
        the trained weights."""
        if stage != "fit" or all(entry.loaded for entry in self.pretrained_bodies):
            return
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        root = getattr(datamodule, "root", None)
        if root is None:
            names = ", ".join(sorted({entry.arch for entry in self.pretrained_bodies}))
            raise ValueError(
                f"weights: shapes ({names}) loads the body pretrained on the shapes dataset of the trainer's "
                "DataModule, and this fit has no DataModule with a `root`: fit with "
                "datamodule=ShapesDataModule(root=...) (data.init_args.root in a config), not bare dataloaders, "
                "or set the model's weights to null"
            )
        load_pretrained_bodies(self.pretrained_bodies, root)

    # ----------------------------------------------------------------- training
    def compute_losses(self, batch: Any) -> dict[str, Tensor]:
        raise NotImplementedError

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[0])

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        losses = self.compute_losses(batch)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            if self.hparams.nonfinite_loss == "raise":
                raise FloatingPointError(
                    f"non-finite loss at global step {self.global_step} (epoch {self.current_epoch}, "
                    f"batch {batch_idx}): {terms}. Lower the learning rate, check the data, or set "
                    "model.init_args.nonfinite_loss: skip"
                )
            self.skipped_nonfinite_steps += 1
            self.log("train/skipped_nonfinite_steps", float(self.skipped_nonfinite_steps))
            return None  # Lightning skips the optimiser step.
        n = self.batch_size_of(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        # the epoch mean, averaged over ranks under DDP (step values are each rank's own)
        self.log("train/loss_epoch", loss.detach(), batch_size=n, on_step=False, on_epoch=True, sync_dist=True)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=n)
        return loss

    # ----------------------------------------------------------- checkpoints
    #: arguments an earlier version of the model took, as saved in older checkpoints: old name -> new name, or
    #: None where the argument is gone; a subclass lists its own (they add to its bases')
    renamed_arguments: ClassVar[dict[str, str | None]] = {"data_root": None}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's, building the network without reading or downloading pretrained weights (ImageNet,
        torchvision's COCO models): the checkpoint holds the weights. A checkpoint saved with arguments the
        model has since renamed or dropped (:attr:`renamed_arguments`) loads with a warning that names them."""
        from models.parts.torchvision_weights import restoring_checkpoint

        with restoring_checkpoint():
            return super().load_from_checkpoint(_migrated(cls, checkpoint_path), *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the random streams with the weights: a run resumed from this checkpoint draws the same
        random numbers (RoI sampling, dropout) as the uninterrupted run would have."""
        checkpoint["rng_states"] = capture_rng_states()
        # what scripts/predict.py needs without the training data: the class and the dataset's category ids
        checkpoint["model_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        mapping = getattr(datamodule, "label_to_category_id", None)
        if mapping:
            checkpoint["label_to_category_id"] = {int(k): int(v) for k, v in mapping.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.use_memory_format()  # load_state_dict copies into the parameters, keeping their memory order
        for entry in self.pretrained_bodies:  # the checkpoint holds the trained weights: a later fit keeps them
            entry.loaded = True
        if "rng_states" in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            restore_rng_states(checkpoint["rng_states"])

    def configure_optimizers(self) -> Any:
        """The repo's one optimiser mechanism (``scripts/train.py`` refuses LightningCLI's ``--optimizer``): the
        ``optimizer`` of :data:`OPTIMIZERS` and a per-step ``LambdaLR`` of warm-up then the ``scheduler``."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {hp.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        optimizer_class, extra = OPTIMIZERS[hp.optimizer]
        impl = hp.get("optimizer_impl", "for-loop")
        if impl not in OPTIMIZER_IMPLS:
            raise ValueError(f"unknown optimizer_impl {impl!r}; expected one of {', '.join(OPTIMIZER_IMPLS)}")
        opt = optimizer_class(
            params, lr=hp.lr, weight_decay=hp.weight_decay, **{k: hp[k] for k in extra}, **OPTIMIZER_IMPLS[impl]
        )
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        warmup = min(hp.warmup_steps, max(total - 1, 0))
        steps = [round(m * total) if m < 1 else int(m) for m in hp.get("milestones", ())]
        if hp.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {hp.scheduler!r}; expected one of {', '.join(SCHEDULERS)}")

        def factor(step: int) -> float:
            if step < warmup:
                return 0.1 + 0.9 * step / max(1, warmup)
            if hp.scheduler == "constant":
                return 1.0
            if hp.scheduler == "multistep":
                return hp.lr_gamma ** sum(step >= m for m in steps)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------- evaluation
    def _log_metrics(self, collection: nn.ModuleDict, prefix: str) -> dict[str, float]:
        results: dict[str, float] = {}
        for metric in collection.values():
            results.update({k: float(v) for k, v in metric.compute().items()})
            metric.reset()
        # every rank holds the same values (the metrics gathered their states): a max-reduce keeps them exact
        # for any world size and tells Lightning they are synchronised (no sync_dist warning under DDP)
        self.log_dict({f"{prefix}/{k}": v for k, v in results.items()}, sync_dist=True, reduce_fx="max")
        return results

    def on_validation_epoch_end(self) -> None:
        self.last_val_metrics = self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self.last_test_metrics = self._log_metrics(self.test_metrics, "test")

    def stage_times_ms(self) -> dict[str, float]:
        """Milliseconds per stage accumulated since the last ``stage_timer.reset()``."""
        return dict(self.stage_timer.times_ms)


class DetectionModule(TaskModule):
    """Base of every detector. ``forward(images, targets=None)`` as torchvision's detectors.

    Labels are 1..K (0 is background, never in targets); eval-mode predictions are
    ``{boxes (xyxy pixels of the input image), labels, scores}`` per image.

    Args:
        metric_protocols: which mAP definitions to compute in validation/test (see :mod:`metrics`).
    """

    task = "detection"

    def __init__(
        self, metric_protocols: Sequence[Protocol] = ("lecture", "voc07", "voc", "coco"), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.metric_protocols = tuple(metric_protocols)
        self.val_metrics = nn.ModuleDict(self.build_metrics())
        self.test_metrics = nn.ModuleDict(self.build_metrics())

    def build_metrics(self) -> dict[str, nn.Module]:
        return {
            "bbox": DetectionMetrics(protocols=self.metric_protocols, iou_type="bbox", class_names=self.class_names)
        }

    def compute_losses(self, batch: Any) -> dict[str, Tensor]:
        images, targets = batch
        return self(images, targets)

    def set_nms_iou(self, iou: float) -> None:
        """Change the test-time NMS IoU threshold (for the comparison's NMS sweep). Models that keep it
        as ``self.nms_thresh`` need nothing more (the torchvision-composed detectors expose it as the
        ``nms_thresh`` property of :class:`~models.detection.torchvision_detector.TorchvisionDetector`)."""
        if not hasattr(self, "nms_thresh"):
            raise NotImplementedError(f"{type(self).__name__} does not expose its NMS threshold")
        self.nms_thresh = float(iou)

    def _evaluate(self, batch: Any, collection: nn.ModuleDict) -> list[dict[str, Tensor]]:
        images, targets = batch
        preds = self(images)
        for metric in collection.values():
            metric.update(preds, targets)
        return preds

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self._evaluate(batch, self.test_metrics)  # the predictions, for models.prediction_writer

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        images, targets = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (batch, None)
        preds = self(images)
        if targets is not None:
            for p, t in zip(preds, targets):
                p["image_id"] = t.get("image_id")
        return preds


class InstanceSegmentationModule(DetectionModule):
    """Base of instance segmenters: a detector whose predictions add ``masks`` (N x 1 x H x W
    probabilities), scored with box metrics and COCO mask AP (``coco_segm/*``)."""

    task = "instance"

    def build_metrics(self) -> dict[str, nn.Module]:
        metrics = super().build_metrics()
        metrics["segm"] = DetectionMetrics(protocols=("coco",), iou_type="segm", class_names=self.class_names)
        return metrics


class SemanticSegmentationModule(TaskModule):
    """Base of semantic segmenters: ``forward(images B x 3 x H x W) -> logits B x (K+1) x H x W``.

    Channel 0 is background; pixels labelled ``ignore_index`` (255, VOC's object borders) add no loss
    and are not scored.

    Args:
        class_weights: optional K+1 weights for the cross-entropy (rare classes up-weighted).
        ignore_index: label ignored by loss and metrics.
    """

    task = "semantic"

    def __init__(self, class_weights: Sequence[float] | None = None, ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if class_weights is not None and len(class_weights) != self.num_classes + 1:
            raise ValueError(
                f"class_weights needs {self.num_classes + 1} values (background first), got {len(class_weights)}"
            )
        self.register_buffer(
            "class_weights",
            torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None,
            persistent=False,
        )
        self.ignore_index = ignore_index
        self.val_metrics = nn.ModuleDict(
            {"semantic": SegmentationMetrics(num_classes=self.num_classes + 1, ignore_index=ignore_index)}
        )
        self.test_metrics = nn.ModuleDict(
            {"semantic": SegmentationMetrics(num_classes=self.num_classes + 1, ignore_index=ignore_index)}
        )

    def compute_losses(self, batch: Any) -> dict[str, Tensor]:
        images, masks = batch
        logits = self(images)
        return {
            "loss_ce": nn.functional.cross_entropy(
                logits, masks, weight=self.class_weights, ignore_index=self.ignore_index
            )
        }

    def _evaluate(self, batch: Any, collection: nn.ModuleDict) -> Tensor:
        images, masks = batch
        logits = self(images)
        for metric in collection.values():
            metric.update(logits, masks)
        return logits

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self._evaluate(batch, self.test_metrics)  # the predictions, for models.prediction_writer

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).argmax(1)
