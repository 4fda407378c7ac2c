"""Fingerprints of trained models: the code of a model and what it imports, the dataset, the whole key."""

import importlib
import sys
import types

import pytest

from comparison.cache import backbone_fingerprint, code_version, dataset_fingerprint, run_fingerprint, source_files


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``pkg`` with a model module that imports a part, and an unrelated module."""
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "part.py").write_text("def block():\n    return 1\n")
    (root / "pkg" / "other.py").write_text("X = 1\n")
    (root / "pkg" / "model.py").write_text("from pkg.part import block\n\nclass Model:\n    pass\n")
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [n for n in sys.modules if n == "pkg" or n.startswith("pkg.")]:
        del sys.modules[name]


def _model(root):
    importlib.invalidate_caches()
    for name in [n for n in sys.modules if n.startswith("pkg.")]:
        del sys.modules[name]
    import pkg.model
    import pkg.other  # noqa: F401  (imported, but not by the model)

    return pkg.model.Model


def test_the_code_version_covers_the_model_and_its_imports_only(package):
    files = {p.name for p in source_files([_model(package)], package)}
    assert files == {"model.py", "part.py"}
    before = code_version([_model(package)], package)
    (package / "pkg" / "other.py").write_text("X = 2\n")
    assert code_version([_model(package)], package) == before
    (package / "pkg" / "part.py").write_text("def block():\n    return 2\n")
    assert code_version([_model(package)], package) != before


def test_the_dataset_fingerprint_follows_the_generator_metadata(tmp_path):
    (tmp_path / "meta.json").write_text('{"seed": 1}')
    first = dataset_fingerprint(tmp_path)
    assert dataset_fingerprint(tmp_path) == first
    (tmp_path / "meta.json").write_text('{"seed": 2}')
    assert dataset_fingerprint(tmp_path) != first


def test_the_backbone_fingerprint_reads_the_models_pretrained_bodies(tiny_shapes_dataset):
    from models.detection.faster_rcnn import FasterRCNN
    from models.parts.pretrain import cache_path

    model = FasterRCNN(num_classes=6, weights="shapes")
    assert backbone_fingerprint(model, tiny_shapes_dataset) == [cache_path(tiny_shapes_dataset, "small_cnn").name]
    assert backbone_fingerprint(model, None) == ["small_cnn:None:unprepared"]  # no dataset yet
    assert backbone_fingerprint(FasterRCNN(num_classes=6), tiny_shapes_dataset) == []  # trained from scratch


def test_every_part_of_the_run_fingerprint_changes_the_key(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    model = types.SimpleNamespace(pretrained_bodies=[])
    data = types.SimpleNamespace(root=str(tmp_path))
    base = run_fingerprint({"lr": 0.1}, 0, "cpu", model, data)["key"]
    assert run_fingerprint({"lr": 0.1}, 0, "cpu", model, data)["key"] == base
    assert run_fingerprint({"lr": 0.2}, 0, "cpu", model, data)["key"] != base
    assert run_fingerprint({"lr": 0.1}, 1, "cpu", model, data)["key"] != base
    assert run_fingerprint({"lr": 0.1}, 0, "cuda", model, data)["key"] != base
    (tmp_path / "meta.json").write_text('{"num_train": 5}')
    assert run_fingerprint({"lr": 0.1}, 0, "cpu", model, data)["key"] != base
