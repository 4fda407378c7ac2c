#!/usr/bin/env python
"""Train, validate, test or predict any model of the repo (LightningCLI).

    python scripts/train.py fit  --config experiments/fcos/shapes.yaml
    python scripts/train.py test --config experiments/fcos/shapes.yaml --ckpt_path last
    python scripts/train.py fit  --config experiments/fcos/shapes.yaml --print_config

A config names the model and DataModule classes (``class_path``) and their arguments; the number of
classes and their names come from the DataModule, so one model config serves every dataset. A config may
build on others (``_base_``, :mod:`scripts.config_files`): the CLI is given the composed whole. The optimiser
and its schedule are the model's (``model.init_args.optimizer``, ``lr``, ``scheduler`` ...): LightningCLI's
``--optimizer`` / ``--lr_scheduler`` are refused with an error that says so.

Each run writes one folder, ``<save_dir>/<name>/version_N/`` (``config.yaml``, ``metrics.csv``,
``run_info.json``, ``checkpoints/``); ``--ckpt_path last`` is the newest ``last*.ckpt`` of the newest
version that has one, i.e. the run just trained. Output folders are checked for writing before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import pytorch_lightning as pl  # noqa: E402
import yaml  # noqa: E402
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback  # noqa: E402

# composed configs (``_base_``): every --config file is given to the CLI whole
from scripts.config_files import ConfigCompositionError, compose_config_args  # noqa: E402

# the JSON file that receives the run's final metrics, for scripts/sweep.py
from scripts.sweep import METRICS_FILE_ENV  # noqa: E402


class OutputNotWritableError(RuntimeError):
    """An output folder (checkpoints, logs, W&B runs, metrics file) cannot be written: found before any work."""


def check_writable(folder: Union[str, Path], what: str) -> None:
    """Create ``folder`` if needed and write and delete a probe file in it; :class:`OutputNotWritableError`
    naming the folder otherwise. Remote URLs (``s3://`` ...) are not probed."""
    if "://" in str(folder):
        return
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputNotWritableError(f"cannot write {what} to {folder}: {exc.strerror or exc}") from exc


def check_outputs_writable(trainer: pl.Trainer, metrics_file: Optional[str] = None) -> None:
    """Every folder the run will write: explicit checkpoint folders, the loggers' folders (where checkpoints go
    without one) and the metrics file's folder; W&B's folder is checked where its logger is made."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import WandbLogger

    checkpoints = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    for cb in checkpoints:
        if cb.dirpath:
            check_writable(cb.dirpath, "checkpoints")
    if any(cb.dirpath is None for cb in checkpoints) and not trainer.loggers:
        check_writable(Path(trainer.default_root_dir) / "checkpoints", "checkpoints")
    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger) and logger.save_dir is not None:
            check_writable(logger.save_dir, "logs and checkpoints" if logger is trainer.loggers[0] else "logs")
    if metrics_file:
        check_writable(Path(metrics_file).parent, f"the metrics file ({METRICS_FILE_ENV})")


def _last_files(folder: Path, names: set[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    patterns = [re.compile(rf"{re.escape(name)}(-v\d+)?\.ckpt") for name in names]
    return [f for f in folder.iterdir() if f.is_file() and any(p.fullmatch(f.name) for p in patterns)]


def run_versions(trainer: pl.Trainer) -> list[Path]:
    """The run folders of the trainer's first logger (``<save_dir>/<name>/<version>``), newest first:
    ``version_N`` by N, others by modification time."""
    if not trainer.loggers:
        return [Path(trainer.default_root_dir)]
    logger = trainer.loggers[0]
    root = Path(logger.save_dir if logger.save_dir is not None else trainer.default_root_dir) / str(logger.name)
    if not root.is_dir():
        return []
    folders = [d for d in root.iterdir() if d.is_dir()]

    def key(folder: Path) -> tuple[int, float]:
        match = re.fullmatch(r"version_(\d+)", folder.name)
        return (1, int(match.group(1))) if match else (0, folder.stat().st_mtime)

    return sorted(folders, key=key, reverse=True)


def last_checkpoint(trainer: pl.Trainer) -> Optional[Path]:
    """What ``--ckpt_path last`` means: the newest ``last*.ckpt`` of the trainer's checkpoint callbacks, looked
    for in their ``dirpath`` when set, else in the newest run version that has one (never an older run's
    when a newer one saved, and not the folder of a run that has not saved yet)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    names = {cb.CHECKPOINT_NAME_LAST for cb in callbacks}
    candidates = [f for cb in callbacks if cb.dirpath for f in _last_files(Path(cb.dirpath), names)]
    if any(cb.dirpath is None for cb in callbacks):
        for version in run_versions(trainer):
            found = _last_files(version / "checkpoints", names)
            if found:
                candidates += found
                break
    return max(candidates, key=lambda f: f.stat().st_mtime) if candidates else None


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
    return "online" if wandb_logged_in() else "offline"


def wandb_logged_in() -> bool:
    """Whether W&B credentials are configured (``wandb login`` / WANDB_API_KEY), asking no one and no server."""
    try:
        import wandb

        return bool(wandb.login(prompt=False, verify=False))
    except Exception:  # wandb missing or misconfigured: never block training on logging
        return False


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
        for name in ("optimizer", "lr_scheduler"):  # LightningCLI's, refused (null accepted: older saved configs)
            parser.add_argument(f"--{name}", type=model_owned, default=None, help=f"not used: {OPTIMIZER_HINT}")
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=Optional[int],
            default=None,
            help="also save last.ckpt every N optimiser steps (beside the config's epoch checkpoints), "
            "so that `fit --ckpt_path last` resumes mid-epoch",
        )
        parser.add_argument(
            "--progress",
            type=Literal["auto", "bar", "lines"],
            default="auto",
            help="training progress: a tqdm bar (`bar`), one plain line every "
            "--progress_every_n_steps steps (`lines`, for log files), or `auto`: the bar on a "
            "terminal, lines otherwise; trainer.enable_progress_bar=false shows neither",
        )
        parser.add_argument(
            "--progress_every_n_steps",
            type=Optional[int],
            default=None,
            help="steps between progress lines (default: trainer.log_every_n_steps)",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Lightning's, with each ``--config`` that uses ``_base_`` given whole (``compose_config_args``):
        ``--print_config`` and the run's saved ``config.yaml`` show the composed config. The command line itself
        (``args`` None) is composed and parsed here, since Lightning warns when it is given as ``args``."""
        if args is None:
            self.config = parser.parse_args(compose_config_args(sys.argv[1:]))
            return
        super().parse_arguments(parser, compose_config_args(args) if isinstance(args, (list, tuple)) else args)

    def instantiate_classes(self) -> None:
        """Build the model and data; with a checkpoint to restore (``test``/``validate``/``predict --ckpt_path``,
        or ``fit`` resuming from an existing file) the network is built without reading or downloading
        pretrained weights, since the checkpoint holds them. A pretrained file missing offline stops the run
        with the one line that names it, not jsonargparse's union error around it."""
        from models.parts.torchvision_weights import WeightsNotFoundError, restoring_checkpoint

        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        ckpt = config.get("ckpt_path")
        restoring = bool(ckpt) and (self.subcommand != "fit" or Path(str(ckpt)).is_file())
        try:
            with restoring_checkpoint() if restoring else contextlib.nullcontext():
                super().instantiate_classes()
        except Exception as exc:
            line = missing_weights_line(exc)
            if line is None:
                raise
            raise WeightsNotFoundError(line) from None

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        from pytorch_lightning.callbacks.progress import ProgressBar
        from pytorch_lightning.plugins.io import CheckpointIO

        from models.callbacks import LineProgressBar, RunMetadata, ValidationSummary, WandbPredictionImages
        from models.checkpoint_io import AtomicCheckpointIO

        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config.get("trainer", {})
        callbacks = [RunMetadata(), ValidationSummary()]
        progress = config.get("progress", "auto")
        has_bar = any(isinstance(c, ProgressBar) for c in _as_list(trainer_config.get("callbacks")))
        if (
            trainer_config.get("enable_progress_bar") is not False
            and not has_bar
            and (progress == "lines" or (progress == "auto" and not sys.stdout.isatty()))
        ):
            lines_every = config.get("progress_every_n_steps") or trainer_config.get("log_every_n_steps") or 50
            callbacks.append(LineProgressBar(every_n_steps=int(lines_every)))
        plugins = _as_list(trainer_config.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):  # partial files beside the target, not in /tmp
            trainer_config["plugins"] = plugins + [AtomicCheckpointIO()]
        if self.subcommand in ("test", "predict"):  # coco_instances_results.json / label maps into the log dir
            from models.prediction_writer import PredictionWriter

            callbacks.append(PredictionWriter())
        every = config.get("checkpoint_every_n_steps")
        if every:
            from pytorch_lightning.callbacks import ModelCheckpoint

            existing = [c for c in _as_list(trainer_config.get("callbacks")) if isinstance(c, ModelCheckpoint)]
            dirpath = existing[0].dirpath if existing else None
            step_checkpoint = ModelCheckpoint(
                dirpath=dirpath, every_n_train_steps=int(every), save_last=True, save_top_k=0
            )
            step_checkpoint.CHECKPOINT_NAME_LAST = (
                "last-step"  # beside the epoch callback's last.ckpt; "last" picks the newer
            )
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
        trainer = super().instantiate_trainer(**kwargs)
        check_outputs_writable(trainer, os.environ.get(METRICS_FILE_ENV))  # fail now, not after training
        return trainer

    def _wandb_logger(self, options: WandbOptions, mode: str, config: Any) -> Any:
        from pytorch_lightning.loggers import WandbLogger

        model, data = type(config.get("model")).__name__, type(config.get("data")).__name__
        save_dir = options.save_dir or os.environ.get("WANDB_DIR") or "runs"
        check_writable(save_dir, "W&B runs")
        return WandbLogger(
            project=options.project,
            entity=options.entity,
            group=options.group or os.environ.get("WANDB_RUN_GROUP"),
            tags=options.tags,
            name=options.name or os.environ.get("WANDB_NAME") or f"{model}-{data}",
            save_dir=save_dir,
            offline=(mode == "offline"),
            log_model=options.log_model,
            job_type=self.subcommand,
            mode=mode,  # explicit: wandb may have cached "online" settings already
        )

    def _write_metrics(self) -> None:
        """Final logged metrics (floats) to $CV_COURSE_METRICS_FILE, for scripts/sweep.py; rank 0 only."""
        path = os.environ.get(METRICS_FILE_ENV)
        if not path or not self.trainer.is_global_zero:
            return
        metrics = {
            k: float(v) for k, v in self.trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1
        }
        metrics["global_step"] = int(self.trainer.global_step)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(metrics, indent=2))
        tmp.replace(path)

    def _resolve_last_checkpoint(self) -> None:
        """``--ckpt_path last`` -> the run just trained (:func:`last_checkpoint`), before Lightning looks: its own
        lookup searches the folder of the new run version, which has no checkpoint yet."""
        from models.checkpoint_io import remove_partial_checkpoints

        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        path = last_checkpoint(self.trainer)
        if path is None:
            where = ", ".join(str(v) for v in run_versions(self.trainer)[:1]) or "the run folder"
            if self.subcommand != "fit":
                raise SystemExit(f"error: --ckpt_path last: no last checkpoint in {where}")
            if self.trainer.is_global_zero:
                print(f"--ckpt_path last: no checkpoint yet in {where}; training from the start", file=sys.stderr)
            config["ckpt_path"] = None
            return
        if self.subcommand == "fit":
            remove_partial_checkpoints(path.parent)  # a save killed mid-write in the run being resumed
        if self.trainer.is_global_zero:
            print(f"--ckpt_path last: {path}", file=sys.stderr)
        config["ckpt_path"] = str(path)

    def before_fit(self) -> None:
        self._resolve_last_checkpoint()

    def before_validate(self) -> None:
        self._resolve_last_checkpoint()

    def before_test(self) -> None:
        self._resolve_last_checkpoint()

    def before_predict(self) -> None:
        self._resolve_last_checkpoint()

    def after_fit(self) -> None:
        self._write_metrics()

    def after_validate(self) -> None:
        self._write_metrics()

    def after_test(self) -> None:
        self._write_metrics()


def missing_weights_line(exc: BaseException) -> Optional[str]:
    """The one-line :class:`WeightsNotFoundError` message inside ``exc`` (its chain, or the text of a
    jsonargparse error that wrapped it), or ``None``."""
    from models.parts.torchvision_weights import WeightsNotFoundError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, WeightsNotFoundError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    for line in str(exc).splitlines():
        if " not found and the download failed " in line:
            return line.strip().lstrip("- ")
    return None


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

    try:
        return _cli(args, run, exit_on_error)
    except (OutputNotWritableError, ConfigCompositionError) as exc:
        if not exit_on_error:
            raise
        raise SystemExit(f"error: {exc}") from None


OPTIMIZER_HINT = (
    "the optimiser and its schedule are the model's own (models.base.TaskModule): set model.init_args."
    "optimizer, lr, momentum, weight_decay, warmup_steps, scheduler, milestones, lr_gamma"
)


class ModelOwnedSettingError(argparse.ArgumentTypeError, ValueError):
    """Refused ``--optimizer`` / ``--lr_scheduler``: argparse shows its message for a command-line value,
    jsonargparse for a config-file value."""


def model_owned(value: Any) -> None:
    """The type of ``--optimizer`` / ``--lr_scheduler``: only null (what a saved ``config.yaml`` holds) is
    accepted; anything else is refused with :data:`OPTIMIZER_HINT`, the repo's one optimiser mechanism."""
    if value is None or value in ("null", "None"):
        return None
    raise ModelOwnedSettingError(OPTIMIZER_HINT)


def _cli(args: list[str] | None, run: bool, exit_on_error: bool) -> CourseCLI:
    return CourseCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        auto_configure_optimizers=False,  # one mechanism: the model's own (models/base.py); see model_owned
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
    from models.parts.torchvision_weights import WeightsNotFoundError

    try:
        main()
    except WeightsNotFoundError as exc:  # offline without a weights file: the one line, no traceback
        sys.exit(f"error: {exc}")
