"""Build a model from its own config and train its fixed schedule, or load it from the cache.

Training is work, not seconds: each model runs its config's epochs (or the spec's ``epochs`` /
``max_steps`` for it) from the seed, so two runs give the same weights. ``safety_cap_s`` is an optional
wall-clock cap; a run that hits it before its schedule ends is ``truncated``, never a normal result, and
is not reused from the cache.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from comparison.cache import run_fingerprint
from comparison.spec import REPO_ROOT, Entry


def cli_overrides(entry: Entry, spec: dict[str, Any], seed: int, device: str) -> dict[str, Any]:
    """The spec's settings on top of the model's config: seed, device, no logger / checkpoints / progress
    bar of its own, no validation during training, no wall-clock stop, and the entry's schedule."""
    overrides: dict[str, Any] = {
        "seed_everything": seed,
        "trainer.accelerator": device,
        "trainer.devices": 1,
        "trainer.logger": False,
        "trainer.enable_checkpointing": False,
        "trainer.callbacks": None,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.limit_val_batches": 0,
        "trainer.num_sanity_val_steps": 0,
        "trainer.deterministic": False,
        "trainer.max_time": None,  # a config's own time budget would make the work depend on the machine
        "wandb.mode": "disabled",  # --wandb logs the comparison itself (comparison.wandb_log)
    }
    overrides.update(spec.get("overrides") or {})
    overrides.update(entry.overrides)
    if entry.epochs is not None:
        overrides.update({"trainer.max_epochs": entry.epochs, "trainer.max_steps": -1})
    if entry.max_steps is not None:
        overrides.update({"trainer.max_steps": entry.max_steps, "trainer.max_epochs": -1})
    return overrides


def build(entry: Entry, spec: dict[str, Any], seed: int, device: str) -> Any:
    """Model, DataModule and Trainer from the model's config through the training CLI (the same code path
    as ``scripts/train.py``), with :func:`cli_overrides` on top."""
    from scripts.train import main as train_cli

    overrides = cli_overrides(entry, spec, seed, device)
    config = entry.config if entry.config.is_absolute() else REPO_ROOT / entry.config
    args = ["--config", str(config)]
    args += [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    return train_cli(args=args, run=False, exit_on_error=False)


def resolved_config(cli: Any) -> Any:
    """The CLI's resolved configuration (config file plus overrides) as plain data."""
    try:
        return json.loads(cli.parser.dump(cli.config, format="json", skip_check=True))
    except Exception:  # a value jsonargparse cannot serialise: its text still fingerprints it
        return json.loads(json.dumps(cli.config.as_dict(), default=str))


class ThroughputMeter(pl.Callback):
    """Counts training images and the seconds spent in training batches (data loading included)."""

    def __init__(self) -> None:
        self.images, self.seconds, self._t = 0, 0.0, 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.images += len(batch[0])
        now = time.perf_counter()
        self.seconds, self._t = self.seconds + now - self._t, now

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


class SafetyCap(pl.Callback):
    """Stops training after ``seconds`` of wall clock (checked after each batch) and remembers that it did."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.hit = False
        self._t0 = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if time.perf_counter() - self._t0 >= self.seconds:
            self.hit = True
            trainer.should_stop = True


@dataclass
class Trained:
    """How a model got its weights: the training record of the row and whether it came from the cache."""

    record: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


def _cache_files(cache_dir: Path, run: str) -> tuple[Path, Path]:
    return cache_dir / f"{run}.ckpt", cache_dir / f"{run}.json"


def read_cache(cache_dir: Path, run: str, key: str) -> dict[str, Any] | None:
    """The training record of ``run`` cached under fingerprint ``key`` (complete schedules only), or None."""
    ckpt, meta = _cache_files(cache_dir, run)
    if not (ckpt.is_file() and meta.is_file()):
        return None
    try:
        saved = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("fingerprint", {}).get("key") != key or saved.get("training", {}).get("truncated"):
        return None
    return saved["training"]


def write_cache(
    cache_dir: Path, run: str, trainer: pl.Trainer, fingerprint: dict[str, Any], record: dict[str, Any]
) -> None:
    """The checkpoint, then its fingerprint and training record (written last: a half-saved entry is no hit)."""
    ckpt, meta = _cache_files(cache_dir, run)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)
    trainer.save_checkpoint(ckpt)
    tmp = meta.with_name(f".{meta.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "training": record}, indent=2, default=str))
    tmp.replace(meta)


def load_weights(model: torch.nn.Module, ckpt: Path) -> None:
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])


def _epochs(trainer: pl.Trainer) -> float:
    """Epochs trained, fractional when the schedule ends mid-epoch (``max_steps``)."""
    per_epoch = trainer.num_training_batches
    if isinstance(per_epoch, (int, float)) and 0 < per_epoch < float("inf"):
        steps_per_epoch = max(1, int(per_epoch) // max(1, trainer.accumulate_grad_batches))
        return round(trainer.global_step / steps_per_epoch, 2)
    return float(trainer.current_epoch)


def train_or_load(
    entry: Entry, cli: Any, cache_dir: Path, seed: int, device: str, retrain: bool, progress: Any = None
) -> Trained:
    """Train ``entry``'s schedule, or load it from ``cache_dir`` when its fingerprint matches (not ``retrain``)."""
    from comparison.terminal import StepProgress

    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    dm.prepare_data()  # the dataset exists before it is fingerprinted
    fingerprint = run_fingerprint(resolved_config(cli), seed, device, model, dm)
    record = None if retrain else read_cache(cache_dir, entry.run, fingerprint["key"])
    if record is not None:
        if progress is not None:
            progress.stage("load cached checkpoint")
        dm.setup("fit")
        load_weights(model, _cache_files(cache_dir, entry.run)[0])
        return Trained(dict(record), cached=True)
    meter = ThroughputMeter()
    cap = SafetyCap(entry.safety_cap_s) if entry.safety_cap_s else None
    steps = StepProgress(progress)
    trainer.callbacks.extend([meter, steps] + ([cap] if cap else []))
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    record = {
        "train_s": time.perf_counter() - t0,
        "train_img_per_s": meter.img_per_s,
        "train_steps": int(trainer.global_step),
        "train_epochs": _epochs(trainer),
        "planned_steps": steps.total,
        "truncated": bool(cap is not None and cap.hit and trainer.global_step < steps.total),
        "fingerprint": fingerprint["key"],
    }
    write_cache(cache_dir, entry.run, trainer, fingerprint, record)
    return Trained(record, cached=False)
