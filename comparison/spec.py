"""Comparison specs: which models, with which overrides and schedule, measured how."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

#: spec keys that once stopped training on the wall clock; training now runs a fixed schedule
FORBIDDEN_KEYS = ("budget_s", "max_time")


@dataclass
class Entry:
    """One row of the comparison: a config, optional overrides, and the ablation group it is in.

    ``epochs`` / ``max_steps`` override the config's schedule; ``safety_cap_s`` is an optional wall-clock
    cap (a run that hits it is ``truncated``, never a normal result).
    """

    run: str
    config: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    group: str | None = None  # ablation group, None for the main tables
    epochs: int | None = None
    max_steps: int | None = None
    safety_cap_s: float | None = None
    train: bool = True  # false: evaluate the model as built (e.g. ``weights: torchvision``), no training
    published: str | None = None  # the reference figure printed beside this row


def _check_no_time_stop(where: str, mapping: dict[str, Any]) -> None:
    for key in mapping:
        if key in FORBIDDEN_KEYS or str(key).endswith(".max_time"):
            raise SystemExit(
                f"{where}: {key!r}: training stops on its schedule (epochs / max_steps), not on the "
                "clock; a wall-clock safety cap is 'safety_cap_s'"
            )


def load_spec(path: Path) -> dict[str, Any]:
    """Read and check a comparison spec; errors name the file and the field."""
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{path}: cannot read the spec: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("models"), list):
        raise SystemExit(f"{path}: 'models' must be a list of {{run, config}} entries")
    _check_no_time_stop(str(path), spec)
    _check_no_time_stop(f"{path}: overrides", spec.get("overrides") or {})
    return spec


def _positive(value: Any, where: str, cast: type) -> Any:
    if value is None:
        return None
    try:
        number = cast(value)
    except (TypeError, ValueError):
        raise SystemExit(f"{where}: must be a number, got {value!r}") from None
    if number <= 0:
        raise SystemExit(f"{where}: must be > 0, got {value!r}")
    return number


def spec_entries(spec: dict[str, Any], spec_path: Path) -> list[Entry]:
    """The spec's models as :class:`Entry` rows (spec-wide ``epochs`` / ``max_steps`` / ``safety_cap_s``
    apply where an entry sets none)."""
    entries = []
    for i, item in enumerate(spec["models"]):
        if isinstance(item, str):
            item = {"run": item}
        where = f"{spec_path}: models[{i}]"
        if not isinstance(item, dict) or "run" not in item:
            raise SystemExit(f"{where}: missing 'run'")
        run = item["run"]
        where = f"{where} ({run})"
        _check_no_time_stop(where, item)
        _check_no_time_stop(f"{where}: overrides", item.get("overrides") or {})
        config = Path(item.get("config", f"experiments/{run}/shapes.yaml"))
        if not (REPO_ROOT / config).exists() and not config.exists():
            raise SystemExit(f"{where}: config {config} does not exist")
        group = item.get("group")  # one ablation group, or a list (a baseline shared by two ablations)
        group = "; ".join(group) if isinstance(group, list) else group
        epochs = _positive(item.get("epochs", spec.get("epochs")), f"{where}: epochs", int)
        steps = _positive(item.get("max_steps", spec.get("max_steps")), f"{where}: max_steps", int)
        if "epochs" in item or "max_steps" in item:  # the entry's own schedule wins over the spec-wide one
            epochs, steps = (epochs if "epochs" in item else None), (steps if "max_steps" in item else None)
        cap = _positive(item.get("safety_cap_s", spec.get("safety_cap_s")), f"{where}: safety_cap_s", float)
        entries.append(
            Entry(
                run,
                config,
                dict(item.get("overrides") or {}),
                group or None,
                epochs,
                steps,
                cap,
                bool(item.get("train", True)),
                item.get("published"),
            )
        )
    return entries


def is_preview(spec: dict[str, Any]) -> bool:
    """A spec marked ``preview: true`` trains short schedules: its tables say it has not converged."""
    return bool(spec.get("preview", False))
