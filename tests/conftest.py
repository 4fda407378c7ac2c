"""Shared test fixtures: a tiny generated shapes dataset (session-scoped).

The real VOC / COCO fixture files are located by the test modules themselves
(``Path(__file__).resolve().parents[2].parent / "shared"``, the repo root's sibling).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
def tiny_shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated shapes dataset (24 train / 8 val images of 64 x 64), shared by the whole session."""
    from datamodules.shapes_generator import generate_shapes_dataset

    out = tmp_path_factory.mktemp("shapes_tiny")
    return generate_shapes_dataset(out, progress=False, **TINY_SHAPES)


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


@pytest.fixture
def train_steps():
    """The loop of every "a short fit lowers the loss" test: ``train_steps(step_loss, optimizer, steps)``."""
    return _train_steps
