"""Composed experiment configs: a config file names the files it builds on in ``_base_`` (MMDetection's
convention), so that a trainer block, a dataset's data block or a baseline is written once.

    # experiments/retinanet/shapes_ce.yaml: the RetinaNet baseline with one value changed
    _base_: [shapes.yaml]
    model:
      init_args: {classification_loss: ce}

:func:`compose_config` gives the whole config: the bases merged in order, then the file itself on top;
mappings merge key by key, lists and scalars are replaced, and a block whose ``class_path`` differs from its
base's is replaced whole (one class's ``init_args`` never reach another class). ``_base_`` paths are relative
to the file that names them, and bases may have bases of their own. :func:`compose_config_args` puts the
composed text in place of every ``--config`` file of a command line that uses ``_base_`` (jsonargparse's
``--config`` takes a YAML string as well as a path): ``scripts/train.py`` composes every config that way.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import yaml

#: the key that lists a config's bases
BASE_KEY = "_base_"
#: the training CLI's options that read a config file (LightningCLI's ``-c`` / ``--config``)
CONFIG_OPTIONS = ("--config", "-c")


class ConfigCompositionError(ValueError):
    """A config cannot be composed: a missing or unreadable base, a bad ``_base_`` entry, or a cycle."""


def _load_yaml(text: str) -> Any:
    """YAML as the training CLI reads it (jsonargparse's loader: ``1e-4`` is a float, dates stay strings)."""
    from jsonargparse import get_loader

    return get_loader("yaml")(text)


def read_config_file(path: Union[str, Path]) -> dict[str, Any]:
    """One config file as a mapping, ``_base_`` not followed; :class:`ConfigCompositionError` naming the file."""
    try:
        config = _load_yaml(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigCompositionError(f"{path}: cannot read the config: {exc}") from exc
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigCompositionError(f"{path}: a config must be a mapping, got {type(config).__name__}")
    return config


def uses_bases(path: Union[str, Path]) -> bool:
    """Whether the config file at ``path`` names bases (``_base_``), i.e. needs :func:`compose_config`."""
    return BASE_KEY in read_config_file(path)


def merge_configs(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base`` (neither is changed): mappings merged recursively, lists and scalars
    replaced, and a mapping whose ``class_path`` differs from the base's replaces it whole."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict) and _same_class(below, value):
            merged[key] = merge_configs(below, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _same_class(base: dict[str, Any], override: dict[str, Any]) -> bool:
    """Whether two blocks configure the same class: both name the same ``class_path`` (as written), or one
    names none (an override of ``init_args`` alone keeps the base's class)."""
    return "class_path" not in base or "class_path" not in override or base["class_path"] == override["class_path"]


def _base_entries(config: dict[str, Any], path: Path) -> list[str]:
    entries = config.get(BASE_KEY)
    entries = [entries] if isinstance(entries, str) else entries
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigCompositionError(f"{path}: {BASE_KEY} must be a list of config paths, got {entries!r}")
    return entries


def _compose(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    config = read_config_file(path)
    if BASE_KEY not in config:
        return config
    chain = (*chain, path)
    merged: dict[str, Any] = {}
    for entry in _base_entries(config, path):
        base = (path.parent / entry).resolve()
        if base in chain:
            cycle = " -> ".join(str(p) for p in (*chain[chain.index(base) :], base))
            raise ConfigCompositionError(f"{path}: {BASE_KEY} entry {entry!r}: a cycle of bases: {cycle}")
        if not base.is_file():
            raise ConfigCompositionError(f"{path}: {BASE_KEY} entry {entry!r}: no such config file {base}")
        merged = merge_configs(merged, _compose(base, chain))
    return merge_configs(merged, {k: v for k, v in config.items() if k != BASE_KEY})


def compose_config(path: Union[str, Path]) -> dict[str, Any]:
    """The whole config of the file at ``path``: its ``_base_`` files (relative to it, each composed the same
    way) merged in order, then the file itself on top (:func:`merge_configs`), without the ``_base_`` key.
    A missing base or a cycle raises :class:`ConfigCompositionError` naming the file and its ``_base_`` entry."""
    return _compose(Path(path).resolve(), ())


class _CLIDumper(yaml.SafeDumper):
    """YAML whose strings read back as strings through the CLI's loader (which takes ``1e-4`` for a float)."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        node = super().represent_str(data)
        if node.style is None and not isinstance(_load_yaml(data), str):
            node.style = "'"
        return node


_CLIDumper.add_representer(str, _CLIDumper.represent_str)


def composed_text(path: Union[str, Path]) -> str:
    """:func:`compose_config` as YAML text, in the form jsonargparse's ``--config`` accepts."""
    return yaml.dump(compose_config(path), Dumper=_CLIDumper, sort_keys=False, allow_unicode=True)


def _composed_or_same(value: str) -> str:
    path = Path(value)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a YAML string given to --config: not a file name
        return value
    return composed_text(path) if is_file and uses_bases(path) else value


def compose_config_args(args: Sequence[str]) -> list[str]:
    """``args`` with every ``--config PATH`` / ``--config=PATH`` / ``-c PATH`` whose file uses ``_base_``
    given the composed YAML text instead of the path; other arguments (and plain config files) unchanged."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg in CONFIG_OPTIONS and i + 1 < len(out):
            out[i + 1] = _composed_or_same(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + _composed_or_same(arg[len("--config=") :])
    return out
