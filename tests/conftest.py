"""Shared test fixtures: a tiny generated shapes dataset (session-scoped), the loop of a short fit, and the toy
scene of the model tests (images, targets and batches of every task, with and without objects).

The real VOC / COCO fixture files are located by the test modules themselves
(``Path(__file__).resolve().parents[2].parent / "shared"``, the repo root's sibling).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pytest

if TYPE_CHECKING:
    from torch import Tensor

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # importable without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(autouse=True)
def _no_wandb_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/train.py logs to W&B (offline) unless told otherwise; tests opt in explicitly."""
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(autouse=True)
def _restore_deterministic_mode():
    """Trainer(deterministic=True) switches torch's deterministic algorithms on for the whole process and
    leaves them on; restore the setting so a test never depends on which tests ran before it."""
    import torch

    enabled = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(enabled)


#: the shapes dataset of the smoke tests: small enough to generate in about a second
TINY_SHAPES = {"seed": 3, "num_train": 24, "num_val": 8, "size": 64}


@pytest.fixture(scope="session")
def tiny_shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A generated shapes dataset (24 train / 8 val images of 64 x 64), shared by the whole session."""
    from datamodules.shapes_generator import generate_shapes_dataset

    import json

    out = tmp_path_factory.mktemp("shapes_tiny")
    root = generate_shapes_dataset(out, progress=False, **TINY_SHAPES)
    yield root
    # a test that gives a DataModule other generator settings regenerates the shared dataset under later tests
    meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    changed = {k: meta[k] for k in ("seed", "num_train", "num_val", "size") if meta[k] != TINY_SHAPES[k]}
    assert not changed, f"a test regenerated the shared tiny dataset with {changed}: pass tiny_shapes_params"


@pytest.fixture(scope="session")
def tiny_shapes_params() -> dict:
    """The generator parameters of :func:`tiny_shapes_dataset` (``size`` is ``image_size`` in the DataModule)."""
    return dict(TINY_SHAPES)


def _train_steps(step_loss, optimizer, steps: int) -> list[float]:
    """Run ``steps`` optimiser steps on ``step_loss()`` and return the loss before each step."""
    history = []
    for _ in range(steps):
        loss = step_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


@pytest.fixture(scope="session")
def train_steps():
    """The loop of every "a short fit lowers the loss" test: ``train_steps(step_loss, optimizer, steps)``."""
    return _train_steps


# ------------------------------------------------------------------ the toy scene of the model tests
#: a 128 px scene: a bright box (label 1) and a dark box (label 3) on dim noise, xyxy pixels
TOY_SIZE = 128
TOY_OBJECTS = (((10, 12, 50, 40), 1, 0.9), ((60, 60, 120, 110), 3, 0.0))


def _toy_images(n: int, empty: Sequence[int] = (), seed: int = 0) -> list[Tensor]:
    """``n`` images (3 x 128 x 128, noise in [0, 0.3)) with the toy objects painted, except those in ``empty``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, TOY_SIZE, TOY_SIZE, generator=g) * 0.3 for _ in range(n)]
    for i, image in enumerate(images):
        if i not in empty:
            for (x1, y1, x2, y2), _, value in TOY_OBJECTS:
                image[:, y1:y2, x1:x2] = value
    return images


def _targets_for(n: int, empty: Sequence[int] = (), masks: bool = False) -> list[dict[str, Tensor]]:
    """Detection targets of ``n`` toy images (boxes, labels 1..3; with ``masks``, N x 128 x 128 uint8 masks of
    the boxes); the images in ``empty`` hold no object (0 x 4 boxes)."""
    import torch

    targets = []
    for i in range(n):
        objects = () if i in empty else TOY_OBJECTS
        target = {
            "boxes": torch.tensor([box for box, _, _ in objects], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([label for _, label, _ in objects], dtype=torch.int64),
        }
        if masks:
            target["masks"] = torch.zeros(len(objects), TOY_SIZE, TOY_SIZE, dtype=torch.uint8)
            for m, ((x1, y1, x2, y2), _, _) in zip(target["masks"], objects):
                m[y1:y2, x1:x2] = 1
        targets.append(target)
    return targets


def _toy_batch(task: str, n: int = 2, empty: Sequence[int] = ()) -> Any:
    """A batch of ``n`` toy images as ``compute_losses`` of a ``task`` model takes it: ``(images, targets)``
    (``instance``: targets with masks) or, for ``semantic``, ``(B x 3 x H x W, B x H x W class maps)``."""
    import torch

    images = _toy_images(n, empty)
    if task != "semantic":
        return images, _targets_for(n, empty, masks=task == "instance")
    maps = torch.zeros(n, TOY_SIZE, TOY_SIZE, dtype=torch.int64)
    for i in set(range(n)) - set(empty):
        for (x1, y1, x2, y2), label, _ in TOY_OBJECTS:
            maps[i, y1:y2, x1:x2] = label
    return torch.stack(images), maps


@pytest.fixture(scope="session")
def targets_for():
    """``targets_for(n, empty=(), masks=False)``: targets of ``n`` toy images, those in ``empty`` without objects."""
    return _targets_for


@pytest.fixture(scope="session")
def toy_batch():
    """``toy_batch(task, n=2, empty=())``: a batch of toy images (with ``empty`` object-free) for a ``task`` model."""
    return _toy_batch
