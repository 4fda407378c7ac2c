"""Comparison specs: schedules, safety caps and the shipped specs (no wall-clock stop, quick is a preview)."""

from pathlib import Path

import pytest
import yaml

from comparison.spec import is_preview, load_spec, spec_entries
from comparison.training import cli_overrides

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "experiments" / "compare").glob("*.yaml"))


def _entries(tmp_path, spec):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return spec_entries(load_spec(path), path)


def test_the_spec_wide_schedule_applies_where_an_entry_sets_none(tmp_path):
    entries = _entries(
        tmp_path,
        {
            "max_steps": 30,
            "safety_cap_s": 600,
            "models": ["fcos", {"run": "rcnn", "max_steps": 15}, {"run": "fcn", "epochs": 2, "safety_cap_s": 60}],
        },
    )
    schedule = {e.run: (e.epochs, e.max_steps, e.safety_cap_s) for e in entries}
    assert schedule == {"fcos": (None, 30, 600.0), "rcnn": (None, 15, 600.0), "fcn": (2, None, 60.0)}


def test_a_schedule_becomes_trainer_overrides_and_no_config_time_budget_survives(tmp_path):
    fcos, fcn = _entries(tmp_path, {"models": [{"run": "fcos", "max_steps": 7}, {"run": "fcn", "epochs": 3}]})
    steps = cli_overrides(fcos, {}, seed=1, device="cpu")
    assert (steps["trainer.max_steps"], steps["trainer.max_epochs"], steps["trainer.max_time"]) == (7, -1, None)
    epochs = cli_overrides(fcn, {}, seed=1, device="cpu")
    assert (epochs["trainer.max_epochs"], epochs["trainer.max_steps"]) == (3, -1)
    plain = cli_overrides(_entries(tmp_path, {"models": ["ssd"]})[0], {}, seed=1, device="cpu")
    assert "trainer.max_epochs" not in plain and plain["seed_everything"] == 1  # the config's own epochs


@pytest.mark.parametrize("value", [0, -3, "many"])
def test_a_bad_schedule_names_the_entry(tmp_path, value):
    with pytest.raises(SystemExit, match=r"models\[0\] \(fcos\): max_steps"):
        _entries(tmp_path, {"models": [{"run": "fcos", "max_steps": value}]})


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_no_shipped_spec_stops_training_on_the_clock(path):
    text = path.read_text()
    assert "budget_s:" not in text and "max_time" not in text
    if "models" in (yaml.safe_load(text) or {}):  # a comparison spec (not published figures or a config)
        spec_entries(load_spec(path), path)  # every entry's config exists


def test_the_quick_spec_is_a_preview_of_fixed_short_schedules_and_default_trains_whole_epochs():
    quick = load_spec(REPO / "experiments/compare/quick.yaml")
    entries = spec_entries(quick, REPO / "experiments/compare/quick.yaml")
    assert is_preview(quick) and all(e.max_steps and e.max_steps <= 30 for e in entries)
    default = load_spec(REPO / "experiments/compare/default.yaml")
    assert not is_preview(default)
    main = spec_entries(default, REPO / "experiments/compare/default.yaml")
    # the config's epochs or the spec's own, never a step count or a wall-clock cap
    assert all(e.max_steps is None and e.safety_cap_s is None and (e.epochs is None or e.epochs > 0) for e in main)
    assert {e.run for e in entries} == {e.run for e in main}  # the preview runs the same models
