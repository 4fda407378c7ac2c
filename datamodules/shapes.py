"""DataModule of the embedded synthetic "shapes" dataset (``datamodules/shapes_generator.py``).

The dataset is generated into ``root`` on first use (``prepare_data``, only when
``dataset_is_current`` says the folder is missing, stale or made with other parameters) and read with
the VOC reader (``ImageSets/*/{train,val}.txt``) or the COCO reader
(``annotations/instances_{train,val}.json``); both give the same boxes and masks. Validation and test
use the val split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

from datamodules.base import AnnotatedDataset, BaseDataModule, check_choice
from datamodules.checks import DatasetError
from datamodules.coco import COCODataset
from datamodules.shapes_generator import SHAPES_CLASSES, dataset_is_current, generate_shapes_dataset
from datamodules.voc import VOCDataset

__all__ = ["ShapesDataModule"]


class ShapesDataModule(BaseDataModule):
    """The synthetic shapes dataset (6 classes: ``SHAPES_CLASSES``) for any task.

    Args:
        root: dataset folder (generated there if needed).
        reader: ``voc`` (XML + PNGs) or ``coco`` (instances JSON with RLE masks).
        seed, num_train, num_val, image_size: generator parameters (a change regenerates ``root``).
        keep_difficult_in_train: VOC reader: keep ``difficult`` objects as training targets (the COCO
            layout has no difficult flag, so the COCO reader always keeps them).
        progress: show the generator's progress bar.
        batch_size: images per batch (16 here; 8 in the other DataModules).
        **loader_kwargs: ``task`` (``detection`` | ``semantic`` | ``instance``) and the other loader
            arguments of :class:`~datamodules.base.BaseDataModule`.
    """

    def __init__(
        self,
        root: str = "data/shapes",
        *,
        reader: Literal["voc", "coco"] = "voc",
        seed: int = 0,
        num_train: int = 1000,
        num_val: int = 200,
        image_size: int = 128,
        keep_difficult_in_train: bool = False,
        progress: bool = True,
        batch_size: int = 16,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **loader_kwargs)
        check_choice(reader, ("voc", "coco"), "reader")
        self.root = root
        self.reader = reader
        self.seed = seed
        self.num_train = num_train
        self.num_val = num_val
        self.image_size = image_size
        self.keep_difficult_in_train = keep_difficult_in_train
        self.progress = progress
        self._class_names = tuple(SHAPES_CLASSES)

    def _load_class_names(self) -> Sequence[str]:
        return SHAPES_CLASSES

    def _same_val_test(self) -> bool:
        return True

    def is_current(self) -> bool:
        return dataset_is_current(self.root, self.seed, self.num_train, self.num_val, self.image_size)

    def prepare_data(self) -> None:
        if not self.is_current():
            generate_shapes_dataset(
                self.root,
                seed=self.seed,
                num_train=self.num_train,
                num_val=self.num_val,
                size=self.image_size,
                progress=self.progress,
            )

    def setup(self, stage: str | None = None) -> None:
        if not self.is_current():
            trainer = getattr(self, "trainer", None)
            if trainer is None or trainer.world_size == 1:
                self.prepare_data()  # used outside a Trainer (or prepare_data was skipped): generate now
            else:
                raise DatasetError(
                    f"{self.root}: meta.json: the shapes dataset is missing or stale; run prepare_data() "
                    "(or python scripts/make_dataset.py) first"
                )
        super().setup(stage)

    def _make_dataset(self, split: Literal["train", "val", "test"]) -> AnnotatedDataset:
        part = "train" if split == "train" else "val"
        name = f"shapes {self.reader} {part} ({self.task}, {split})"
        if self.reader == "voc":
            return VOCDataset(
                self.root,
                part,
                task=self.task,
                class_names=SHAPES_CLASSES,
                augment=self.augment_for(split),
                keep_difficult=self.keep_difficult_in_train if split == "train" else True,
                name=name,
            )
        root = Path(self.root)
        return COCODataset(
            root / "annotations" / f"instances_{part}.json",
            root / "JPEGImages",
            task=self.task,
            augment=self.augment_for(split),
            keep_crowd=True,
            name=name,
        )
