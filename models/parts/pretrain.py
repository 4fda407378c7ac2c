"""``weights: shapes``: pretrain a backbone as a crop classifier on the embedded dataset, once, cached.

Every detector of the course starts from a network pretrained as an ImageNet classifier (R-CNN Sec. 2.3
"supervised pre-training", then domain-specific fine-tuning). No weights can be downloaded here, so the
embedded dataset gets the same step: the body (e.g. ``small_cnn``) plus global average pooling and a
linear layer learns to classify warped crops of the training split into the K shape classes and
background, as R-CNN's classifier does (Sec. 2.3: IoU >= 0.5 positives, background crops). The body's
state dict is cached beside the data under a key of dataset, architecture and recipe, so each
(dataset, architecture) pair is pretrained once; the time it took is stored with it so comparisons can
report the pretraining cost on its own row.

A model asks for these weights by building its body with ``weights: shapes`` (``build_body`` /
``build_backbone`` of :mod:`models.parts.backbones` register it in the model's ``pretrained_bodies``); the
base's ``setup("fit")`` loads them with :func:`load_pretrained_bodies` from the trainer's DataModule. This
module imports the backbones, never the reverse.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torchvision.io import ImageReadMode, decode_image
from torchvision.ops import box_iou

from datamodules.voc import VOCDataset
from models.parts.backbones import PretrainedBody, build_body
from models.parts.image_ops import crop_windows, normalize

#: Bump when the pretraining code changes in a way that changes its result (invalidates the cache).
RECIPE_VERSION = 1


@dataclass(frozen=True)
class PretrainRecipe:
    """How the crop classifier is trained; part of the cache key.

    crop_size: side of the warped crops (R-CNN warps to 227 px; 32 px suits 128 px images).
    jitter: GT boxes are shifted and scaled by up to this fraction of their size (more positives that
        still overlap their object by IoU >= 0.5, as R-CNN's positives).
    background_per_image: random crops with IoU < 0.3 with every object (R-CNN's negatives).
    """

    epochs: int = 8
    crop_size: int = 32
    jitter: float = 0.1
    crops_per_object: int = 2
    background_per_image: int = 4
    batch_size: int = 128
    lr: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0
    version: int = RECIPE_VERSION


@dataclass(frozen=True)
class PretrainResult:
    path: Path  # the cached state dict of the body
    seconds: float  # wall-clock time the pretraining took (when it ran, not when it was loaded)
    accuracy: float  # crop accuracy on the validation split, K + 1 classes
    chance: float = 0.0  # accuracy of always predicting the most frequent validation class
    cached: bool = False  # True when this call loaded an earlier result


class CropClassifier(nn.Module):
    """A body's last stage, global average pooling and a linear layer over K+1 classes (0 = background).

    The pretraining model, and the classifier the sliding-window detector runs on every window.
    """

    def __init__(self, body: nn.Module, num_classes_with_background: int) -> None:
        super().__init__()
        self.body = body
        self.last_stage = list(body.stage_channels)[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(body.stage_channels[self.last_stage], num_classes_with_background)

    def forward(self, crops: Tensor) -> Tensor:
        features = self.body(crops)[self.last_stage]
        return self.classifier(self.pool(features).flatten(1))


def _classes(data_root: str | Path) -> list[str]:
    return json.loads((Path(data_root) / "meta.json").read_text(encoding="utf-8"))["classes"]


# ----------------------------------------------------------------------------------------- data
def read_split(data_root: str | Path, split: str) -> list[tuple[Path, Tensor, Tensor]]:
    """(image path, boxes N x 4 float32 xyxy, labels 1..K int64) per image of the ``split`` of the shapes
    dataset in ``data_root``, read by the DataModules' VOC reader (:class:`~datamodules.voc.VOCDataset`).

    Its convention is the pretraining's: VOC's 1-based inclusive pixels become 0-based continuous
    coordinates, label ``i`` is the ``i``-th class of ``meta.json``; ``difficult`` objects are kept.
    """
    dataset = VOCDataset(data_root, split, task="detection", class_names=_classes(data_root), keep_difficult=True)
    return [(rec.path, torch.from_numpy(rec.boxes), torch.from_numpy(rec.labels)) for rec in dataset.records]


def _jittered(boxes: Tensor, n: int, jitter: float, generator: torch.Generator) -> Tensor:
    sizes = (boxes[:, 2:] - boxes[:, :2]).repeat(n, 1)
    centres = ((boxes[:, 2:] + boxes[:, :2]) / 2).repeat(n, 1)
    noise = (torch.rand(len(sizes), 4, generator=generator) * 2 - 1) * jitter
    centres = centres + noise[:, :2] * sizes
    sizes = sizes * (1 + noise[:, 2:])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)


def _background_boxes(gt: Tensor, n: int, image_size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """Up to ``n`` random boxes (sides 12 px to 3/4 of the image) with IoU < 0.3 with every object."""
    h, w = image_size
    candidates = 8 * n
    log_side = torch.empty(candidates).uniform_(
        math.log(12.0), math.log(max(12.0, 0.75 * min(h, w))), generator=generator
    )
    side, ratio = log_side.exp(), torch.empty(candidates).uniform_(-0.7, 0.7, generator=generator).exp()
    bw, bh = (side / ratio.sqrt()).clamp(max=w), (side * ratio.sqrt()).clamp(max=h)
    x1 = torch.rand(candidates, generator=generator) * (w - bw)
    y1 = torch.rand(candidates, generator=generator) * (h - bh)
    boxes = torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1)
    if len(gt):
        boxes = boxes[box_iou(boxes, gt).max(dim=1).values < 0.3]
    return boxes[:n]


def sample_crops(
    records: list[tuple[Path, Tensor, Tensor]], recipe: PretrainRecipe, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Warped object crops (jittered GT boxes, label of their class) and background crops (label 0)."""
    crops, labels = [], []
    for path, boxes, box_labels in records:
        image = decode_image(str(path), mode=ImageReadMode.RGB).float() / 255
        objects = _jittered(boxes, recipe.crops_per_object, recipe.jitter, generator)
        background = _background_boxes(boxes, recipe.background_per_image, tuple(image.shape[-2:]), generator)
        crops.append(crop_windows(image, torch.cat([objects, background]), recipe.crop_size))
        labels.append(
            torch.cat([box_labels.repeat(recipe.crops_per_object), torch.zeros(len(background), dtype=torch.int64)])
        )
    return normalize(torch.cat(crops)), torch.cat(labels)


# ------------------------------------------------------------------------------------- training
def _train_classifier(
    model: CropClassifier, crops: Tensor, labels: Tensor, recipe: PretrainRecipe, generator: torch.Generator
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * max(1, len(crops) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(crops), generator=generator)
        for start in range(0, len(order) - recipe.batch_size + 1, recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            batch = crops[index]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            loss = nn.functional.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


@torch.no_grad()
def _accuracy(model: CropClassifier, crops: Tensor, labels: Tensor) -> float:
    model.eval()
    predictions = torch.cat([model(chunk).argmax(1) for chunk in crops.split(512)])
    return float((predictions == labels).float().mean()) if len(labels) else 0.0


def cache_path(
    data_root: str | Path,
    arch: str = "small_cnn",
    channels: Sequence[int] | None = None,
    recipe: PretrainRecipe = PretrainRecipe(),
) -> Path:
    """``<data_root>/.cache/pretrained/<arch>-<hash>.pt``, the hash over the dataset's ``meta.json``,
    the architecture and the recipe: any change to one of them gives a new file."""
    root = Path(data_root)
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"no shapes dataset in {root} (meta.json missing): generate it first, e.g. "
            f"python scripts/make_dataset.py, or let the ShapesDataModule prepare it"
        )
    key = {
        "dataset": json.loads(meta_file.read_text(encoding="utf-8")),
        "arch": {"name": arch, "channels": list(channels) if channels else None},
        "recipe": asdict(recipe),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return root / ".cache" / "pretrained" / f"{arch}-{digest}.pt"


def pretrain_on_shapes(
    data_root: str | Path,
    arch: str = "small_cnn",
    epochs: int = PretrainRecipe.epochs,
    seed: int = 0,
    channels: Sequence[int] | None = None,
    force: bool = False,
) -> PretrainResult:
    """Pretrain ``arch`` as a crop classifier on the train split of the dataset in ``data_root``.

    Loads the cached result when one exists for this dataset, architecture and recipe (unless ``force``).
    Runs under a forked RNG, so the caller's random state is left as it was.
    """
    recipe = PretrainRecipe(epochs=epochs, seed=seed)
    path = cache_path(data_root, arch, channels, recipe)
    if path.is_file() and not force:
        meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
        return PretrainResult(path, meta["seconds"], meta["accuracy"], meta["chance"], cached=True)

    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        train_crops, train_labels = sample_crops(read_split(data_root, "train"), recipe, generator)
        val_crops, val_labels = sample_crops(
            read_split(data_root, "val"), recipe, torch.Generator().manual_seed(seed + 1)
        )
        num_classes = len(_classes(data_root))
        model = CropClassifier(build_body(arch, None, channels), num_classes + 1)
        _train_classifier(model, train_crops, train_labels, recipe, generator)
        accuracy = _accuracy(model, val_crops, val_labels)
    seconds = time.perf_counter() - start
    chance = float(torch.bincount(val_labels).max() / len(val_labels)) if len(val_labels) else 0.0
    meta = {
        "seconds": seconds,
        "accuracy": accuracy,
        "chance": chance,
        "arch": arch,
        "channels": list(channels) if channels else None,
        "recipe": asdict(recipe),
        "train_crops": len(train_labels),
        "val_crops": len(val_labels),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"state_dict": model.body.state_dict(), "meta": meta}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent run never reads half a file
    rank_zero_info(
        f"pretrained {arch} on shapes crops in {seconds:.1f} s: val crop accuracy {accuracy:.3f} "
        f"(chance {chance:.3f}, {len(train_labels)} train crops) -> {path}"
    )
    return PretrainResult(path, seconds, accuracy, chance, cached=False)


def load_shapes_weights(
    body: nn.Module, name: str, data_root: str | Path, channels: Sequence[int] | None = None
) -> PretrainResult:
    """Copy the shapes-pretrained weights of ``name`` into ``body`` (pretraining first if not cached)."""
    result = pretrain_on_shapes(data_root, arch=name, channels=channels)
    body.load_state_dict(torch.load(result.path, map_location="cpu", weights_only=True)["state_dict"])
    if result.cached:
        rank_zero_info(
            f"loaded {name} pretrained on shapes ({result.seconds:.1f} s, crop accuracy {result.accuracy:.3f}) "
            f"from {result.path}"
        )
    return result


def load_pretrained_bodies(bodies: Sequence[PretrainedBody], data_root: str | Path) -> list[PretrainResult]:
    """Load the shapes weights of every body of ``bodies`` not loaded yet (a model's
    :attr:`~models.base.TaskModule.pretrained_bodies`) from the dataset in ``data_root``, pretraining first
    where no cached result exists; each is then marked loaded, so a later fit keeps the trained weights."""
    results = []
    for entry in bodies:
        if not entry.loaded:
            results.append(load_shapes_weights(entry.body, entry.arch, data_root, entry.channels))
            entry.loaded = True
    return results
