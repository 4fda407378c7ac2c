"""What decides a trained model, as one fingerprint: the trained checkpoint is cached under it.

The fingerprint covers the resolved config (the spec's overrides applied), the seed, the device, the
dataset's fingerprint, the pretrained backbone's and the version of the model's code: a hash of the
source files of the model's module and of every repo module it uses (its parts, its base classes, the
DataModule's code). A change to any of them retrains that model; nothing else does.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any, Iterable

REPO_ROOT = Path(__file__).resolve().parents[1]

#: bump when the comparison's training procedure changes in a way that changes the trained weights
TRAINING_VERSION = 1

#: repo packages that do not decide the trained weights (accuracy and speed are re-measured on every run)
NOT_CODE = ("metrics", "comparison", "tests")


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _file_hash(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _repo_module(obj: Any, root: Path) -> types.ModuleType | None:
    """The module of ``obj`` (a module, class or function) when its source file is under ``root``."""
    module = obj if isinstance(obj, types.ModuleType) else sys.modules.get(getattr(obj, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    if module is None or not file:
        return None
    try:
        rel = Path(file).resolve().relative_to(root)
    except ValueError:
        return None
    if rel.suffix != ".py" or rel.parts[0].startswith(".") or "site-packages" in rel.parts or rel.parts[0] in NOT_CODE:
        return None
    return module


def source_files(objects: Iterable[Any], root: Path = REPO_ROOT) -> list[Path]:
    """The source files under ``root`` of the modules of ``objects`` and, transitively, of every module,
    class or function under ``root`` that those modules refer to at module level (their imports).
    Installed packages, hidden folders and :data:`NOT_CODE` are left out."""
    root = root.resolve()
    seen: dict[str, types.ModuleType] = {}
    todo = [m for m in (_repo_module(o, root) for o in objects) if m is not None]
    for obj in objects:  # base classes live in other modules (models.base): follow the MRO too
        if inspect.isclass(obj):
            todo += [m for m in (_repo_module(c, root) for c in obj.__mro__) if m is not None]
    while todo:
        module = todo.pop()
        if module.__name__ in seen:
            continue
        seen[module.__name__] = module
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType) or inspect.isclass(value) or inspect.isfunction(value):
                dep = _repo_module(value, root)
                if dep is not None and dep.__name__ not in seen:
                    todo.append(dep)
    return sorted({Path(m.__file__).resolve() for m in seen.values()})


def code_version(objects: Iterable[Any], root: Path = REPO_ROOT) -> str:
    """A hash of :func:`source_files` (paths relative to ``root`` and contents)."""
    root = root.resolve()
    return _digest({str(p.relative_to(root)): _file_hash(p) for p in source_files(objects, root)})


def dataset_fingerprint(root: str | Path | None) -> str:
    """The dataset's fingerprint: the shapes generator's ``meta.json`` (its parameters and content hash)
    when there is one, else the index and annotation files (VOC ``ImageSets``, COCO ``annotations``) with
    the size and modification time of the image folders' files."""
    if root is None:
        return "none"
    root = Path(root)
    meta = root / "meta.json"
    if meta.is_file():
        return _digest({"meta.json": _file_hash(meta)})
    parts: dict[str, Any] = {}
    for pattern in ("ImageSets/**/*.txt", "annotations/*.json", "*.json", "*.txt"):
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                parts[str(path.relative_to(root))] = _file_hash(path)
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations", "images"):
        files = sorted((root / folder).glob("*")) if (root / folder).is_dir() else []
        if files:
            parts[folder] = _digest([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])
    return _digest(parts) if parts else f"missing:{root}"


def backbone_fingerprint(model: Any, data_root: str | Path | None) -> list[str]:
    """The pretrained backbones of ``model``: its ``pretrained_bodies`` (``weights: shapes``) by the key of
    their cached pretraining on the dataset in ``data_root`` (the DataModule's: dataset, architecture and
    recipe); torchvision weights are named in the config itself."""
    from models.parts.pretrain import cache_path

    keys = []
    for entry in model.pretrained_bodies:
        try:
            keys.append(cache_path(data_root, entry.arch, entry.channels).name)
        except (FileNotFoundError, TypeError):
            keys.append(f"{entry.arch}:{data_root}:unprepared")
    return sorted(keys)


def run_fingerprint(config: Any, seed: int, device: str, model: Any, datamodule: Any) -> dict[str, Any]:
    """Everything that decides the trained checkpoint, with its hash under ``"key"``."""
    parts = {
        "config": config,
        "seed": seed,
        "device": device,
        "dataset": dataset_fingerprint(getattr(datamodule, "root", None)),
        "backbone": backbone_fingerprint(model, getattr(datamodule, "root", None)),
        "code": code_version([type(model), type(datamodule)]),
        "training": TRAINING_VERSION,
    }
    return {**parts, "key": _digest(parts)[:20]}
