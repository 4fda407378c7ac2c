"""Model registry: short names (``faster_rcnn``, ``fcn``) -> LightningModule classes.

Detectron2 finds meta-architectures by name; we take that idea without its config indirection:
a YAML in ``experiments/`` names the class directly (``class_path``), and scripts that loop over
models (the comparison, sweeps) use the short names registered here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T", bound=type)

#: Families used to group models in the comparison tables.
FAMILIES = (
    "sliding_window",
    "two_stage",
    "one_stage_anchor",
    "anchor_free",
    "semantic_segmentation",
    "instance_segmentation",
)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    cls: type
    family: str

    @property
    def task(self) -> str:
        """``detection`` | ``semantic`` | ``instance``: the class's own ``task`` (set by its base in models/base.py)."""
        return self.cls.task


_REGISTRY: dict[str, RegisteredModel] = {}


def register_model(name: str, family: str) -> Callable[[T], T]:
    """Class decorator adding a LightningModule to the registry under ``name``; its task is the class's ``task``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")

    def wrap(cls: T) -> T:
        own = getattr(cls, "task", "")
        if not own:
            raise TypeError(
                f"{cls.__qualname__} has no task: extend DetectionModule, InstanceSegmentationModule or "
                "SemanticSegmentationModule (models/base.py), which set it"
            )
        existing = _REGISTRY.get(name)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"model name {name!r} already registered by {existing.cls.__qualname__}")
        _REGISTRY[name] = RegisteredModel(name=name, cls=cls, family=family)
        cls.registry_name = name
        return cls

    return wrap


def _import_all() -> None:
    # Importing the packages runs the @register_model decorators.
    import models.detection  # noqa: F401
    import models.segmentation  # noqa: F401


def get_model(name: str) -> RegisteredModel:
    """Look up a registered model by short name; the error lists what exists."""
    _import_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no model named {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def list_models() -> list[RegisteredModel]:
    """All registered models, sorted by family then name."""
    _import_all()
    return sorted(_REGISTRY.values(), key=lambda m: (FAMILIES.index(m.family), m.name))
