"""The loader arguments belong to BaseDataModule: subclasses pass them on as keywords, and the CLI
(jsonargparse) still sees and documents each of them under the subclass."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from datamodules import BaseDataModule, COCODataModule, ShapesDataModule, VOCDataModule

MODULES = [VOCDataModule, COCODataModule, ShapesDataModule]
BASE = {n: p.default for n, p in inspect.signature(BaseDataModule.__init__).parameters.items() if n != "self"}
OWN_DEFAULTS = {ShapesDataModule: {"batch_size": 16}}  # the one loader argument a subclass redeclares


@pytest.mark.parametrize("cls", MODULES)
def test_subclasses_declare_only_their_own_arguments(cls: type) -> None:
    params = inspect.signature(cls.__init__).parameters
    assert set(params) & set(BASE) == set(OWN_DEFAULTS.get(cls, {}))
    assert list(params.values())[-1].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize("cls", MODULES)
def test_cli_sees_and_documents_every_loader_argument(cls: type) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    defaults = parser.get_defaults().data
    assert {name: defaults[name] for name in BASE} == {**BASE, **OWN_DEFAULTS.get(cls, {})}
    text = " ".join(parser.format_help().split())  # the base's docstring documents them under the subclass
    assert "DataLoader worker processes" in text and "independently of ``seed_everything``" in text


def test_hparams_hold_own_and_loader_arguments_with_defaults(tmp_path: Path) -> None:
    shapes = ShapesDataModule(root=str(tmp_path), task="semantic", num_workers=1)
    expected = {
        "root": str(tmp_path),
        "task": "semantic",
        "num_workers": 1,
        "batch_size": 16,
        "drop_last": False,
        "shuffle_seed": None,
    }
    assert {k: shapes.hparams[k] for k in expected} == expected
    voc = VOCDataModule(root=str(tmp_path), class_names=["a", "b"], batch_size=2)
    assert "class_names" not in voc.hparams  # VOCDataModule.hparams_ignore: the model holds them
    assert (voc.hparams["batch_size"], voc.hparams["year"], voc.hparams["pin_memory"]) == (2, "2007", False)


def test_loader_arguments_are_checked_by_the_base(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ShapesDataModule(root=str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="task must be one of"):
        VOCDataModule(root=str(tmp_path), task="panoptic")
    with pytest.raises(TypeError, match="batchsize"):
        COCODataModule("a.json", "images", "b.json", "images", batchsize=4)


def test_options_after_the_data_paths_are_keyword_only(tmp_path: Path) -> None:
    """A positional option would land in the wrong slot (e.g. a task string as keep_crowd_in_train)."""
    with pytest.raises(TypeError, match="positional"):
        COCODataModule("a.json", "images", "b.json", "images", None, None, True)
    with pytest.raises(TypeError, match="positional"):
        VOCDataModule(str(tmp_path), "2012")
    with pytest.raises(TypeError, match="positional"):
        ShapesDataModule(str(tmp_path), "coco")
