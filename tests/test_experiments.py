"""Every config in experiments/ resolves through the training CLI, and every registered model has a
shapes config: a typo in a config or a renamed argument fails here, not in a user's run."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from models.registry import list_models

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "experiments").glob("*/*.yaml") if p.parent.name not in ("compare", "sweeps"))


def test_every_registered_model_has_a_shapes_config():
    missing = [m.name for m in list_models() if not (REPO / "experiments" / m.name / "shapes.yaml").exists()]
    assert not missing, f"models without experiments/<name>/shapes.yaml: {missing}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_resolves_through_the_cli(config):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/train.py"), "fit", "--config", str(config), "--print_config"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    resolved = yaml.safe_load(result.stdout)
    module, _, name = resolved["model"]["class_path"].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name).__module__ == module
