"""Every config in experiments/ resolves through the training CLI, and every registered model has a
shapes config: a typo in a config or a renamed argument fails here, not in a user's run. Configs compose
(``_base_``, scripts/config_files.py): the merge rules, and that the CLI sees the whole composed config."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from models.registry import list_models
from scripts.config_files import BASE_KEY, ConfigCompositionError, compose_config, compose_config_args

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    p for p in (REPO / "experiments").glob("*/*.yaml") if p.parent.name not in ("compare", "sweeps", "_base")
)


def test_every_registered_model_has_a_shapes_config():
    missing = [m.name for m in list_models() if not (REPO / "experiments" / m.name / "shapes.yaml").exists()]
    assert not missing, f"models without experiments/<name>/shapes.yaml: {missing}"


def print_config(config: Path) -> subprocess.CompletedProcess:
    """``scripts/train.py fit --config <config> --print_config`` in a fresh process; it must succeed."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/train.py"), "fit", "--config", str(config), "--print_config"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_resolves_through_the_cli(config):
    result = print_config(config)
    resolved = yaml.safe_load(result.stdout)
    module, _, name = resolved["model"]["class_path"].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name).__module__ == module


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bases_merge_in_order_then_the_file_on_top(tmp_path):
    _write(tmp_path, "a.yaml", "trainer: {max_epochs: 1, devices: 1, callbacks: [x, y]}\nseed_everything: 0\n")
    _write(tmp_path, "b.yaml", "trainer: {max_epochs: 2, precision: 16}\n")
    top = _write(
        tmp_path, "top.yaml", "_base_: [a.yaml, b.yaml]\ntrainer: {devices: 2, callbacks: [z]}\nextra: {k: v}\n"
    )
    assert compose_config(top) == {
        "trainer": {"max_epochs": 2, "devices": 2, "callbacks": ["z"], "precision": 16},  # lists replaced
        "seed_everything": 0,
        "extra": {"k": "v"},
    }


def test_a_block_of_another_class_replaces_the_base_block_whole(tmp_path):
    _write(tmp_path, "base.yaml", "model: {class_path: pkg.A, init_args: {a: 1, shared: 1}}\n")
    same = _write(tmp_path, "same.yaml", "_base_: [base.yaml]\nmodel: {init_args: {shared: 2}}\n")
    other = _write(tmp_path, "other.yaml", "_base_: [base.yaml]\nmodel: {class_path: pkg.B, init_args: {b: 3}}\n")
    assert compose_config(same)["model"] == {"class_path": "pkg.A", "init_args": {"a": 1, "shared": 2}}
    assert compose_config(other)["model"] == {"class_path": "pkg.B", "init_args": {"b": 3}}  # no a / shared


def test_bases_are_relative_to_the_file_that_names_them_and_may_have_bases(tmp_path):
    _write(tmp_path, "_base/root.yaml", "data: {init_args: {root: r, batch_size: 4}}\n")
    _write(tmp_path, "_base/task.yaml", "_base_: [root.yaml]\ndata: {init_args: {task: t}}\n")
    top = _write(tmp_path, "model/cfg.yaml", "_base_: [../_base/task.yaml]\ndata: {init_args: {batch_size: 8}}\n")
    composed = compose_config(top)
    assert composed == {"data": {"init_args": {"root": "r", "batch_size": 8, "task": "t"}}}
    assert BASE_KEY not in composed


@pytest.mark.parametrize(
    "files, problem",
    [
        ({"top.yaml": "_base_: [nowhere.yaml]\n"}, "no such config file {tmp}/nowhere.yaml"),
        (
            {"top.yaml": "_base_: [a.yaml]\n", "a.yaml": "_base_: [top.yaml]\n"},
            "a cycle of bases: {tmp}/top.yaml -> {tmp}/a.yaml -> {tmp}/top.yaml",
        ),
    ],
    ids=["missing", "cycle"],
)
def test_a_bad_base_names_the_file_and_the_entry(tmp_path, files, problem):
    paths = {name: _write(tmp_path, name, text) for name, text in files.items()}
    with pytest.raises(ConfigCompositionError) as error:
        compose_config(paths["top.yaml"])
    where, entry = list(paths.values())[-1], files[list(files)[-1]].split("[")[1].split("]")[0]
    assert str(error.value) == f"{where}: _base_ entry {entry!r}: " + problem.format(tmp=tmp_path)


def test_only_config_arguments_that_use_bases_are_composed(tmp_path):
    plain = _write(tmp_path, "plain.yaml", "seed_everything: 1\n")
    top = _write(tmp_path, "top.yaml", "_base_: [plain.yaml]\ntrainer: {max_epochs: 3}\n")
    text = yaml.safe_dump(compose_config(top), sort_keys=False)
    args = ["fit", "--config", str(top), "-c", str(plain), f"--config={top}", "--trainer.devices=1"]
    assert compose_config_args(args) == ["fit", "--config", text, "-c", str(plain), f"--config={text}", args[-1]]
    assert yaml.safe_load(text) == {"seed_everything": 1, "trainer": {"max_epochs": 3}}


def test_print_config_of_a_composed_config_is_the_whole_config():
    """retinanet/shapes_ce.yaml is an overlay on shapes.yaml, itself on experiments/_base/: the CLI prints
    the base's trainer block and data block with the overlay's own values, and no _base_ key."""
    config = REPO / "experiments/retinanet/shapes_ce.yaml"
    assert BASE_KEY in yaml.safe_load(config.read_text()) and "deterministic" not in config.read_text()
    result = print_config(config)
    assert BASE_KEY not in result.stdout
    resolved = yaml.safe_load(result.stdout)
    trainer = resolved["trainer"]
    assert (trainer["accelerator"], trainer["devices"], trainer["deterministic"]) == ("auto", 1, True)  # _base/
    baseline_epochs = yaml.safe_load((REPO / "experiments/retinanet/shapes.yaml").read_text())["trainer"]["max_epochs"]
    assert trainer["max_epochs"] == baseline_epochs  # shapes.yaml
    assert trainer["logger"]["init_args"]["save_dir"] == "runs"  # _base/
    assert trainer["logger"]["init_args"]["name"] == "retinanet_shapes_ce"  # the overlay's own
    assert trainer["callbacks"][0]["init_args"]["monitor"] == "val/voc07/mAP"
    assert resolved["model"]["init_args"]["loss"] == "ce" and resolved["model"]["init_args"]["fpn"] is True
    assert resolved["data"]["init_args"]["root"] == "data/shapes"
