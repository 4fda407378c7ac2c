#!/usr/bin/env python
"""Train, validate, test or predict any model of the repo (LightningCLI).

    python scripts/train.py fit  --config experiments/fcos/shapes.yaml
    python scripts/train.py test --config experiments/fcos/shapes.yaml --ckpt_path runs/fcos/shapes/checkpoints/last.ckpt
    python scripts/train.py fit  --config experiments/fcos/shapes.yaml --print_config

A config names the model and DataModule classes (``class_path``) and their arguments; the number of
classes and their names come from the DataModule, so one model config serves every dataset.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import pytorch_lightning as pl  # noqa: E402
import yaml  # noqa: E402
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback  # noqa: E402

# the JSON file that receives the run's final metrics, for scripts/sweep.py
from scripts.sweep import METRICS_FILE_ENV  # noqa: E402



@dataclass
class WandbOptions:
    """Weights & Biases logging, beside the config's own logger (CSV by default).

    Args:
        mode: ``auto`` = online when logged in (``wandb login`` / WANDB_API_KEY), else offline (sync
            later with ``wandb sync``); ``online``, ``offline``, or ``disabled`` (no W&B at all).
            The WANDB_MODE environment variable wins over ``auto``.
        project, entity, group, tags: as ``wandb.init``; ``group`` also from WANDB_RUN_GROUP.
        name: run name; default ``<model>-<data>``, e.g. ``RetinaNet-ShapesDataModule``.
        log_model: upload checkpoints as W&B artifacts (``true`` at the end, ``all`` every save).
        num_images: validation images with predicted and ground-truth boxes / masks per epoch.
        save_dir: where runs are written (``<save_dir>/wandb/offline-run-*``); default WANDB_DIR or ``runs``.
    """

    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "cv-course"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: Optional[list[str]] = None
    name: Optional[str] = None
    log_model: Union[bool, Literal["all"]] = False
    num_images: int = 8
    save_dir: Optional[str] = None


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> WANDB_MODE if set, else ``online`` when an API key is configured, else ``offline``."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return "disabled" if env in ("disabled", "dryrun_disabled") else ("offline" if env == "dryrun" else env)
    try:
        import wandb

        return "online" if wandb.api.api_key else "offline"
    except Exception:  # wandb missing or misconfigured: never block training on logging
        return "offline"


class SaveConfigEverywhere(SaveConfigCallback):
    """The resolved config as ``config.yaml`` in the log dir (Lightning's default) and in each W&B run."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from pytorch_lightning.loggers import WandbLogger

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"cli": config}, allow_val_change=True)
                path = Path(logger.experiment.dir) / "cli_config.yaml"
                path.write_text(yaml.safe_dump(config, sort_keys=False))


class CourseCLI(LightningCLI):
    """LightningCLI with the DataModule's classes linked into the model, W&B wired in, every run's
    seed / versions / commit saved, optional step checkpoints, and the final metrics written for sweeps."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.add_class_arguments(WandbOptions, "wandb")
        parser.add_argument("--checkpoint_every_n_steps", type=Optional[int], default=None,
                            help="also save last.ckpt every N optimiser steps (beside the config's epoch checkpoints), "
                                 "so that `fit --ckpt_path last` resumes mid-epoch")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        from models.callbacks import RunMetadata, WandbPredictionImages

        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config.get("trainer", {})
        callbacks = [RunMetadata()]
        every = config.get("checkpoint_every_n_steps")
        if every:
            from pytorch_lightning.callbacks import ModelCheckpoint

            existing = [c for c in _as_list(trainer_config.get("callbacks")) if isinstance(c, ModelCheckpoint)]
            dirpath = existing[0].dirpath if existing else None
            step_checkpoint = ModelCheckpoint(dirpath=dirpath, every_n_train_steps=int(every), save_last=True, save_top_k=0)
            step_checkpoint.CHECKPOINT_NAME_LAST = "last-step"  # beside the epoch callback's last.ckpt; "last" picks the newer
            callbacks.append(step_checkpoint)
        options = config.get("wandb")
        mode = resolve_wandb_mode(options.mode) if options is not None else "disabled"
        if mode != "disabled":
            from pytorch_lightning.callbacks import LearningRateMonitor

            loggers = [lg for lg in _as_list(trainer_config.get("logger")) if not isinstance(lg, bool)]
            loggers.append(self._wandb_logger(options, mode, config))
            kwargs["logger"] = loggers
            callbacks += [WandbPredictionImages(num_images=options.num_images), LearningRateMonitor("step")]
        trainer_config["callbacks"] = _as_list(trainer_config.get("callbacks")) + callbacks
        return super().instantiate_trainer(**kwargs)

    def _wandb_logger(self, options: WandbOptions, mode: str, config: Any) -> Any:
        from pytorch_lightning.loggers import WandbLogger

        model, data = type(config.get("model")).__name__, type(config.get("data")).__name__
        save_dir = options.save_dir or os.environ.get("WANDB_DIR") or "runs"
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        return WandbLogger(
            project=options.project, entity=options.entity, group=options.group or os.environ.get("WANDB_RUN_GROUP"),
            tags=options.tags, name=options.name or os.environ.get("WANDB_NAME") or f"{model}-{data}",
            save_dir=save_dir, offline=(mode == "offline"), log_model=options.log_model,
            job_type=self.subcommand, mode=mode,  # explicit: wandb may have cached "online" settings already
        )

    def _write_metrics(self) -> None:
        """Final logged metrics (floats) to $CV_COURSE_METRICS_FILE, for scripts/sweep.py; rank 0 only."""
        path = os.environ.get(METRICS_FILE_ENV)
        if not path or not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        metrics["global_step"] = int(self.trainer.global_step)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(metrics, indent=2))
        tmp.replace(path)

    def after_fit(self) -> None:
        self._write_metrics()

    def after_validate(self) -> None:
        self._write_metrics()

    def after_test(self) -> None:
        self._write_metrics()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def main(args: list[str] | None = None, run: bool = True, exit_on_error: bool = True) -> CourseCLI:
    """The CLI; ``exit_on_error=False`` raises a bad config as an exception instead of exiting (for callers
    such as scripts/compare.py that must go on with the next model)."""
    import datamodules  # noqa: F401  (makes short class names resolvable)
    import models.detection  # noqa: F401
    import models.segmentation  # noqa: F401

    return CourseCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=SaveConfigEverywhere,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            # the DataModules shard data themselves: no repeats in validation / test, resumable training
            "use_distributed_sampler": False,
        },
        args=args,
        run=run,
        parser_kwargs=None if exit_on_error else {"exit_on_error": False},
    )


if __name__ == "__main__":
    main()
