"""What every reader and DataModule shares: the sample record, the dataset, collate functions and the
LightningDataModule base with its dataloaders.

Conventions (repo-wide):

* image: float32 tensor 3 x H x W in [0, 1], RGB, not normalised;
* boxes: 0-based continuous pixel xyxy float32; labels int64 in 1..K (0 = background, never a target);
* detection / instance target: ``boxes`` (N x 4 float32), ``labels`` (N int64), ``difficult``,
  ``iscrowd``, ``truncated`` (N bool), ``masks`` (N x H x W uint8, task ``instance`` only),
  ``image_id`` (int), ``orig_size`` ((H, W) before transforms), ``file_name`` (str, relative to the
  image folder);
* semantic target: int64 H x W label map, 0 background, 1..K classes, 255 ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.checks import DatasetError, load_rgb, new_stats, warn_summary
from datamodules.samplers import ResumableShuffleSampler, ShardedEvalSampler, mix_seed
from datamodules.transforms import apply_transform, build_transform

__all__ = [
    "Task",
    "ImageRecord",
    "AnnotatedDataset",
    "BaseDataModule",
    "collate_detection",
    "collate_semantic",
]

Task = Literal["detection", "semantic", "instance"]
TASKS = ("detection", "semantic", "instance")
IGNORE_INDEX = 255


@dataclass
class ImageRecord:
    """One image of a split and its (already validated, clipped and filtered) objects."""

    image_id: int
    file_name: str  # relative to the image folder
    path: Path
    height: int
    width: int
    boxes: np.ndarray  # N x 4 float32 xyxy, inside the image, positive width and height
    labels: np.ndarray  # N int64, 1..K
    difficult: np.ndarray  # N bool
    iscrowd: np.ndarray  # N bool
    truncated: np.ndarray  # N bool
    source_index: np.ndarray  # N int64: VOC 1-based XML object index; COCO index into ``segmentations``
    segmentations: list[Any] = field(default_factory=list)  # COCO: the annotations' ``segmentation``
    mask_path: Path | None = None  # VOC: SegmentationObject (instance) or SegmentationClass (semantic)
    num_annotated: int = -1  # VOC: number of XML objects (skipped ones included), -1 when not known

    @staticmethod
    def empty_arrays() -> dict[str, np.ndarray]:
        return {
            "boxes": np.zeros((0, 4), np.float32),
            "labels": np.zeros(0, np.int64),
            "difficult": np.zeros(0, bool),
            "iscrowd": np.zeros(0, bool),
            "truncated": np.zeros(0, bool),
            "source_index": np.zeros(0, np.int64),
        }

    def select(self, keep: np.ndarray) -> None:
        """Keep only the objects where ``keep`` is true (in place)."""
        for key in ("boxes", "labels", "difficult", "iscrowd", "truncated", "source_index"):
            setattr(self, key, getattr(self, key)[keep])


def _to_image_tensor(img: np.ndarray) -> Tensor:
    if img.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
    else:  # a float-producing augmentation; albumentations keeps [0, 1] floats for float input only
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32))
    return t.contiguous()


class AnnotatedDataset(Dataset):
    """Map-style dataset over :class:`ImageRecord` s; subclasses supply the masks.

    ``dataset[i]`` is ``(image, target)``: a detection / instance target dict, or for task
    ``semantic`` an int64 H x W label map. ``dataset.stats`` holds the reader's counters.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        class_names: Sequence[str],
        task: Task,
        augment: Sequence[dict[str, Any]] | None,
        name: str,
        stats: dict[str, int] | None = None,
        unknown_names: Sequence[str] = (),
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.records = records
        self.class_names = tuple(class_names)
        self.task = task
        self.name = name
        self.augment = list(augment) if augment else []
        self.transform = build_transform(self.augment)
        # Augmentation of sample i in epoch e is seeded from (augment_seed, e, i): the same whatever the
        # number of workers, the sampling order or a resume mid-epoch. The training sampler passes the
        # epoch with each index (EpochIndex); the DataModule sets augment_seed from the run's seed.
        self.augment_seed = int(torch.initial_seed())
        self.stats = dict(stats) if stats is not None else new_stats()
        self.stats["images"] = len(records)
        self.stats["objects"] = int(sum(len(r.labels) for r in records))
        self.stats["empty_images"] = int(sum(1 for r in records if len(r.labels) == 0))
        self.summary = warn_summary(name, self.stats, unknown_names)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, task={self.task!r}, images={len(self)})"

    # -- supplied by the readers -------------------------------------------------------------------
    def instance_masks(self, rec: ImageRecord) -> np.ndarray:
        """N x H x W uint8 masks of ``rec``'s objects, in ``rec``'s object order."""
        raise NotImplementedError

    def semantic_map(self, rec: ImageRecord) -> np.ndarray:
        """H x W uint8 label map (0 background, 1..K, 255 ignore)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------
    def load_image(self, rec: ImageRecord) -> np.ndarray:
        return load_rgb(rec.path, (rec.height, rec.width) if rec.height > 0 else None)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        rec = self.records[index]
        if self.transform is not None:
            self.transform.set_random_seed(mix_seed(self.augment_seed, getattr(index, "epoch", 0), index) % 2**32)
        image = self.load_image(rec)
        if self.task == "semantic":
            sem = self.semantic_map(rec)
            if sem.shape != image.shape[:2]:
                raise DatasetError(
                    f"{rec.mask_path or rec.path}: label map is {sem.shape} but the image is {image.shape[:2]}"
                )
            if self.transform is not None:
                image, _, _, _, sem = apply_transform(
                    self.transform, image, np.zeros((0, 4), np.float32), {}, semantic=sem
                )
            return _to_image_tensor(image), torch.from_numpy(np.ascontiguousarray(sem)).long()

        boxes = rec.boxes
        fields = {"labels": rec.labels, "difficult": rec.difficult, "iscrowd": rec.iscrowd, "truncated": rec.truncated}
        masks = self.instance_masks(rec) if self.task == "instance" else None
        if masks is not None and masks.shape[1:] != image.shape[:2]:
            raise DatasetError(
                f"{rec.mask_path or rec.path}: masks are {masks.shape[1:]} but the image is {image.shape[:2]}"
            )
        if self.transform is not None:
            image, boxes, fields, masks, _ = apply_transform(self.transform, image, boxes, fields, masks=masks)
        target: dict[str, Any] = {
            "boxes": torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(fields["labels"], np.int64)),
            "difficult": torch.as_tensor(np.asarray(fields["difficult"], bool)),
            "iscrowd": torch.as_tensor(np.asarray(fields["iscrowd"], bool)),
            "truncated": torch.as_tensor(np.asarray(fields["truncated"], bool)),
        }
        if masks is not None:
            target["masks"] = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8))
        target["image_id"] = int(rec.image_id)
        target["orig_size"] = (int(rec.height), int(rec.width))
        target["file_name"] = rec.file_name
        return _to_image_tensor(image), target


# ------------------------------------------------------------------------------------------------------
# Collate and worker seeding (module level: picklable for worker processes)
# ------------------------------------------------------------------------------------------------------


def collate_detection(batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """``(list of images, list of target dicts)``: detection images may differ in size."""
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets


def collate_semantic(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """``(B x 3 x H x W float, B x H x W int64)``; all samples must have the same size."""
    sizes = sorted({tuple(b[0].shape[-2:]) for b in batch})
    if len(sizes) > 1:
        raise DatasetError(
            f"semantic batch: images of different sizes {sizes} cannot be stacked; add a resize or crop to "
            "train_augment / eval_augment, e.g. [{'name': 'Resize', 'height': 512, 'width': 512}] or "
            "[{'name': 'PadIfNeeded', 'min_height': 512, 'min_width': 512, 'fill_mask': 255}, "
            "{'name': 'RandomCrop', 'height': 512, 'width': 512}], or use batch_size: 1"
        )
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in each DataLoader worker (distinct per worker and epoch; torch does it
    for its own RNG). The augmentation itself is seeded per sample (``AnnotatedDataset.__getitem__``)."""
    import random

    seed = int(torch.initial_seed() % (2**32))
    np.random.seed(seed)
    random.seed(seed)


# ------------------------------------------------------------------------------------------------------
# DataModule base
# ------------------------------------------------------------------------------------------------------


class BaseDataModule(pl.LightningDataModule):
    """Dataloaders, collate and the split bookkeeping shared by the VOC, COCO and shapes modules.

    Subclasses set ``class_names`` and implement ``_make_dataset(split)`` for ``split`` in
    ``"train" | "val" | "test"``; ``_same_val_test()`` says when the test split is the val split
    (then ``test_dataset is val_dataset``).

    Loaders: training order is a pure function of the run's seed and the epoch and resumes mid-epoch
    (see :mod:`datamodules.samplers`); under DDP every rank gets its shard, validation and test without
    repeats (``Trainer(use_distributed_sampler=False)``).

    The arguments below are every DataModule's: a subclass declares only its own and passes these on with
    ``super().__init__(**loader_kwargs)`` (jsonargparse then documents them under the subclass). The base
    saves the hyperparameters of both (``hparams_ignore`` names those left out).

    Args:
        task: ``detection`` | ``semantic`` | ``instance``.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (0: load in the main process).
        pin_memory: DataLoader ``pin_memory``.
        persistent_workers: keep the workers between epochs (only with ``num_workers > 0``).
        train_augment: training augmentation, a list of ``{"name": <albumentations class>, **kwargs}``.
        eval_augment: validation / test augmentation, in the same form.
        drop_last: drop the last incomplete training batch.
        shuffle_seed: fixes the training order independently of ``seed_everything``.
    """

    #: constructor arguments not saved in ``hparams`` (e.g. values the model holds too)
    hparams_ignore: tuple[str, ...] = ()

    def __init__(
        self,
        task: Task = "detection",
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        train_augment: list[dict[str, Any]] | None = None,
        eval_augment: list[dict[str, Any]] | None = None,
        drop_last: bool = False,
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.task: Task = task
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.train_augment = list(train_augment) if train_augment else []
        self.eval_augment = list(eval_augment) if eval_augment else []
        self.drop_last = drop_last
        self.shuffle_seed = shuffle_seed
        self._resume: tuple[int, int] | None = None
        # validate the augmentation config now, not in the first worker
        build_transform(self.train_augment)
        build_transform(self.eval_augment)
        self.train_dataset: AnnotatedDataset | None = None
        self.val_dataset: AnnotatedDataset | None = None
        self.test_dataset: AnnotatedDataset | None = None
        self._class_names: tuple[str, ...] | None = None
        # Lightning reads the arguments of every __init__ on the call path: the subclass's and these
        self.save_hyperparameters(ignore=list(self.hparams_ignore))

    # -- classes -------------------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        """The K class names; label ``i`` (1..K) is ``class_names[i - 1]``."""
        if self._class_names is None:
            self._class_names = tuple(self._load_class_names())
        return self._class_names

    @property
    def num_classes(self) -> int:
        """K, background excluded (detection models get K + 1 outputs)."""
        return len(self.class_names)

    def _load_class_names(self) -> Sequence[str]:
        raise NotImplementedError

    # -- datasets ------------------------------------------------------------------------------------
    def _make_dataset(self, split: Literal["train", "val", "test"]) -> AnnotatedDataset:
        raise NotImplementedError

    def _same_val_test(self) -> bool:
        return False

    def setup(self, stage: str | None = None) -> None:
        need = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
            None: ("train", "val", "test"),
        }.get(stage)
        if need is None:
            raise ValueError(f"unknown stage {stage!r}")
        for split in need:
            if getattr(self, f"{split}_dataset") is not None:
                continue
            if split == "test" and self._same_val_test():
                if self.val_dataset is None:
                    self.val_dataset = self._make_dataset("val")
                self.test_dataset = self.val_dataset
            else:
                setattr(self, f"{split}_dataset", self._make_dataset(split))

    def augment_for(self, split: str) -> list[dict[str, Any]]:
        return self.train_augment if split == "train" else self.eval_augment

    # -- loaders -------------------------------------------------------------------------------------
    @property
    def collate_fn(self) -> Any:
        return collate_semantic if self.task == "semantic" else collate_detection

    def _distributed(self) -> tuple[int, int]:
        """(rank, world size) of the attached trainer; (0, 1) without one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _seed(self) -> int:
        return int(torch.initial_seed()) if self.shuffle_seed is None else int(self.shuffle_seed)

    def _loader(self, dataset: AnnotatedDataset | None, split: str, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: no {split} dataset; call setup() first")
        rank, world = self._distributed()
        seed = self._seed()
        dataset.augment_seed = mix_seed(seed, 1)
        if shuffle:
            sampler: Any = ResumableShuffleSampler(len(dataset), mix_seed(seed, 2), rank, world)
            if self._resume is not None:
                epoch, batches_done = self._resume
                sampler.resume(epoch, batches_done * self.batch_size)
                self._resume = None
        else:
            if world > 1 and len(dataset) < world:
                raise ValueError(
                    f"{dataset.name}: {len(dataset)} {split} images cannot be split over {world} processes"
                )
            sampler = ShardedEvalSampler(len(dataset), rank, world)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=self.collate_fn,
            drop_last=self.drop_last if shuffle else False,
            worker_init_fn=seed_worker if self.num_workers > 0 else None,
            # a private generator: creating an iterator (worker base seeds) never draws from the global
            # RNG, so resuming mid-epoch leaves the model's random stream exactly where it was
            generator=torch.Generator().manual_seed(mix_seed(seed, 3)),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, "train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, "val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, "test", shuffle=False)

    # -- resume ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where training is in the epoch, saved in every checkpoint so ``fit --ckpt_path`` resumes
        mid-epoch on the next unseen batch (Lightning restores the model, optimiser and loop counters)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"train_epoch": int(trainer.current_epoch), "train_batches_done": int(done)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "train_epoch" in state:
            self._resume = (int(state["train_epoch"]), int(state["train_batches_done"]))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, "test", shuffle=False)


def check_choice(value: Any, choices: Sequence[Any], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
