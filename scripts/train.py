#!/usr/bin/env python
"""Train, validate, test or predict any model of the repo (LightningCLI).

    python scripts/train.py fit  --config experiments/fcos/shapes.yaml
    python scripts/train.py test --config experiments/fcos/shapes.yaml --ckpt_path runs/fcos/shapes/checkpoints/last.ckpt
    python scripts/train.py fit  --config experiments/fcos/shapes.yaml --print_config

A config names the model and DataModule classes (``class_path``) and their arguments; the number of
classes and their names come from the DataModule, so one model config serves every dataset.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import pytorch_lightning as pl  # noqa: E402
from pytorch_lightning.cli import LightningCLI  # noqa: E402


class CourseCLI(LightningCLI):
    """LightningCLI with the DataModule's classes linked into the model."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")


def main(args: list[str] | None = None, run: bool = True) -> CourseCLI:
    import datamodules  # noqa: F401  (makes short class names resolvable)
    import models.detection  # noqa: F401
    import models.segmentation  # noqa: F401

    return CourseCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        },
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
