"""models/registry.py: short names -> classes; a model's task is its class's ``task``."""

from __future__ import annotations

import pytest
import torch

from models import registry
from models.base import (
    DetectionModule,
    InstanceSegmentationModule,
    SemanticSegmentationModule,
)
from models.registry import get_model, list_models, register_model

FAMILY_TASK = {"semantic_segmentation": "semantic", "instance_segmentation": "instance"}


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations in a test stay out of the real registry (filled first, so that it is complete afterwards)."""
    registry._import_all()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_every_model_task_is_its_class_task_and_fits_its_family() -> None:
    bases = {
        "detection": DetectionModule,
        "instance": InstanceSegmentationModule,
        "semantic": SemanticSegmentationModule,
    }
    for entry in list_models():
        assert entry.task == entry.cls.task == FAMILY_TASK.get(entry.family, "detection"), entry.name
        assert issubclass(entry.cls, bases[entry.task]), entry.name
        assert get_model(entry.name) is entry and entry.cls.registry_name == entry.name


def test_task_comes_from_the_class(scratch_registry: None) -> None:
    @register_model("test_segmenter", family="semantic_segmentation")
    class Segmenter(SemanticSegmentationModule):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images

    assert get_model("test_segmenter").task == "semantic"


def test_the_decorator_takes_no_task(scratch_registry: None) -> None:
    with pytest.raises(TypeError, match="task"):
        register_model("test_same", family="instance_segmentation", task="instance")  # type: ignore[call-arg]
    assert "test_same" not in registry._REGISTRY


def test_a_class_without_task_is_refused(scratch_registry: None) -> None:
    with pytest.raises(TypeError, match="Plain has no task: extend DetectionModule"):
        register_model("test_plain", family="two_stage")(type("Plain", (torch.nn.Module,), {}))
    with pytest.raises(ValueError, match="unknown family"):
        register_model("test_family", family="three_stage")
    with pytest.raises(ValueError, match="already registered"):
        register_model("faster_rcnn", family="two_stage")(type("Other", (DetectionModule,), {}))
