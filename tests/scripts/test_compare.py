"""scripts/compare.py end to end on a tiny spec: two models that train 4 steps and one that cannot be
built; the files and table columns, the failed row, reproducible training, the checkpoint cache (a
rerun retrains nothing; a changed config retrains that model alone), truncated rows, the quiet terminal,
--checkpoints and W&B."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]

EXPECTED_KEYS = {
    "model",
    "family",
    "status",
    "error",
    "params",
    "gflops",
    "train_img_per_s",
    "latency_ms_median",
    "latency_ms_p90",
    "fps",
    "train_steps",
    "train_epochs",
    "train_s",
    "trained",
}
#: what Lightning and jsonargparse say while a model is built and trained: the model's log, not the terminal
CHATTER = ("LightningCLI's args parameter", "GPU available", "Seed set to", "Trainer.fit` stopped")


def _spec(tmp_path: Path, root: Path, params: dict, name: str = "tiny.yaml", **changes) -> Path:
    spec = {
        "max_steps": 4,
        "latency_images": 2,
        "latency_warmup": 1,
        "example_images": 2,
        "eval_images": 6,
        "tables": ["rcnn_family", "detectors", "segmentation", "ablations"],
        "overrides": {
            "data.init_args.root": str(root),
            "data.init_args.seed": params["seed"],
            "data.init_args.num_train": params["num_train"],
            "data.init_args.num_val": params["num_val"],
            "data.init_args.image_size": params["size"],
            "data.init_args.num_workers": 0,
            "data.init_args.batch_size": 4,
            "data.init_args.persistent_workers": False,
            "model.init_args.warmup_steps": 1,
        },
        "models": [
            {
                "run": "fcos",
                "overrides": {
                    "model.init_args.min_size": 64,
                    "model.init_args.max_size": 64,
                    "model.init_args.weights": None,
                },
            },
            {"run": "fcn", "overrides": {"model.init_args.weights": None}},
            {
                "run": "broken",
                "config": "experiments/fcos/shapes.yaml",
                "overrides": {"model.init_args.backbone": "no_such_backbone"},
            },
        ],
        "nms_sweep": {"fcos": [0.3, 0.7]},
    }
    for run, overrides in changes.pop("model_overrides", {}).items():
        next(m for m in spec["models"] if m["run"] == run)["overrides"].update(overrides)
    spec.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def _accuracy(row: dict) -> dict:
    return {
        k: v
        for k, v in row.items()
        if k.startswith(("voc", "coco", "lecture", "iou", "nms_sweep"))
        or k in ("pixel_accuracy", "mean_pixel_accuracy", "mean_iou", "mean_dice")
    }


def _weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def compared(tiny_shapes_dataset, tiny_shapes_params, tmp_path_factory):
    from scripts.compare import main

    tmp = tmp_path_factory.mktemp("compare")
    spec = _spec(tmp, tiny_shapes_dataset, tiny_shapes_params)
    out = tmp / "out"
    rows = main(["--spec", str(spec), "--out", str(out)])
    return spec, out, rows


@pytest.mark.slow
def test_writes_results_tables_and_pictures(compared):
    spec, out, rows = compared
    by_run = {r["run"]: r for r in rows}
    assert by_run["fcos"]["status"] == "ok" and by_run["fcn"]["status"] == "ok"
    assert EXPECTED_KEYS <= set(by_run["fcos"])
    assert {"voc07/mAP", "voc/mAP", "lecture/mAP", "coco/AP", "coco/AP50", "coco/AP75", "coco/APs"} <= set(
        by_run["fcos"]
    )
    assert {"pixel_accuracy", "mean_pixel_accuracy", "mean_iou", "mean_dice"} <= set(by_run["fcn"])
    assert by_run["fcos"]["family"] == "anchor_free" and by_run["fcn"]["family"] == "semantic_segmentation"
    assert by_run["fcos"]["eval_images"] == 6 and by_run["fcos"]["train_steps"] == 4
    assert by_run["fcos"]["train_epochs"] == pytest.approx(4 / 6, abs=0.01)  # 24 images in batches of 4
    assert by_run["fcos"]["trained"] == "trained"
    assert by_run["fcos"]["gflops"] > 0 and by_run["fcos"]["latency_ms_median"] > 0
    assert {"nms_sweep/0.3/voc07/mAP", "nms_sweep/0.7/voc07/mAP"} <= set(by_run["fcos"])

    saved = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in saved] == [r["run"] for r in rows]
    with open(out / "results.csv") as f:
        header = next(csv.reader(f))
    assert EXPECTED_KEYS <= set(header)
    md = (out / "results.md").read_text()
    assert "| model | params | GFLOPs | train img/s | ms/img |" in md
    assert "| model | params | ms/img | FPS | PA | MPA | mIoU | Dice | steps | epochs | train s | trained |" in md
    assert "NMS IoU threshold sweep" in md and "preview" not in md.lower()
    for picture in ("speed_accuracy.png", "examples_detection.png", "examples_semantic.png", "pr_fcos.png"):
        assert (out / picture).stat().st_size > 1000, picture


@pytest.mark.slow
def test_a_failing_model_gets_a_failed_row_and_the_others_go_on(compared):
    spec, out, rows = compared
    broken = next(r for r in rows if r["run"] == "broken")
    assert broken["status"] == "failed" and "no_such_backbone" in broken["error"]
    assert (out / "logs" / "broken.txt").exists()
    assert "### Failed" in (out / "results.md").read_text()


@pytest.mark.slow
def test_training_twice_gives_the_same_weights_and_metrics_and_a_quiet_terminal(compared, tmp_path, capfd):
    from scripts.compare import main

    spec, out, rows = compared
    capfd.readouterr()
    again = {r["run"]: r for r in main(["--spec", str(spec), "--out", str(tmp_path / "again"), "--models", "fcn"])}
    terminal = "".join(capfd.readouterr())
    before = next(r for r in rows if r["run"] == "fcn")
    assert again["fcn"]["trained"] == "trained" and again["fcn"]["train_steps"] == before["train_steps"] == 4
    assert _accuracy(again["fcn"]) == _accuracy(before) and _accuracy(before)
    first, second = _weights(out / "checkpoints" / "fcn.ckpt"), _weights(tmp_path / "again/checkpoints/fcn.ckpt")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # the terminal: the model's one line (and the tables), none of Lightning's messages; those are in its log
    assert "fcn: ok, 4 steps" in terminal
    for chatter in CHATTER:
        assert chatter not in terminal, chatter
    log = (tmp_path / "again" / "logs" / "fcn.log").read_text()
    # what the model's run said is in its log (a warning already shown once in this process is not shown
    # again, so only the messages that come with every run are required)
    for chatter in ("GPU available", "Seed set to"):
        assert chatter in log, chatter


@pytest.mark.slow
def test_a_rerun_loads_every_model_from_the_cache_and_gives_the_same_rows(compared, tmp_path):
    from scripts.compare import main

    spec, out, rows = compared
    before = {r["run"]: r for r in rows}
    stamps = {run: (out / "checkpoints" / f"{run}.ckpt").stat().st_mtime_ns for run in ("fcos", "fcn")}
    again = {r["run"]: r for r in main(["--spec", str(spec), "--out", str(out), "--models", "fcos", "fcn"])}
    for run in ("fcos", "fcn"):
        assert again[run]["trained"] == "loaded from cache"
        assert (out / "checkpoints" / f"{run}.ckpt").stat().st_mtime_ns == stamps[run]  # not retrained
        for key in ("train_s", "train_steps", "train_epochs", "train_img_per_s"):
            assert again[run][key] == before[run][key], key
        assert _accuracy(again[run]) == _accuracy(before[run])
    assert "| fcn | " in (out / "results.md").read_text() and "loaded from cache" in (out / "results.md").read_text()
    saved = {r["run"] for r in json.loads((out / "results.json").read_text())}
    assert saved == {"fcos", "fcn", "broken"}  # the rows this rerun did not touch are kept

    evaluated = {
        r["run"]: r
        for r in main(
            [
                "--spec",
                str(spec),
                "--out",
                str(tmp_path / "eval"),
                "--models",
                "fcos",
                "fcn",
                "--checkpoints",
                str(out / "checkpoints"),
            ]
        )
    }
    assert _accuracy(evaluated["fcos"]) == _accuracy(before["fcos"])
    assert evaluated["fcn"]["mean_iou"] == before["fcn"]["mean_iou"]
    assert "train_s" not in evaluated["fcos"]


@pytest.mark.slow
def test_a_changed_config_retrains_that_model_alone(compared, tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    from scripts.compare import main

    spec, out, rows = compared
    shutil.copytree(out, tmp_path / "out")
    changed = _spec(
        tmp_path, tiny_shapes_dataset, tiny_shapes_params, model_overrides={"fcn": {"model.init_args.lr": 0.05}}
    )
    again = {
        r["run"]: r for r in main(["--spec", str(changed), "--out", str(tmp_path / "out"), "--models", "fcos", "fcn"])
    }
    assert again["fcos"]["trained"] == "loaded from cache"
    assert again["fcn"]["trained"] == "trained"
    retrained = {
        r["run"]: r
        for r in main(["--spec", str(changed), "--out", str(tmp_path / "out"), "--models", "fcos", "--retrain"])
    }
    assert retrained["fcos"]["trained"] == "trained"


@pytest.mark.slow
def test_a_run_stopped_by_its_safety_cap_is_marked_truncated(tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    from comparison.training import read_cache
    from scripts.compare import main

    spec = _spec(tmp_path, tiny_shapes_dataset, tiny_shapes_params, safety_cap_s=1e-9)  # hit after the first step
    rows = {r["run"]: r for r in main(["--spec", str(spec), "--out", str(tmp_path / "out"), "--models", "fcn"])}
    fcn = rows["fcn"]
    assert fcn["status"] == "truncated" and fcn["train_steps"] == 1 and fcn["planned_steps"] == 4
    assert "safety cap" in fcn["error"]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| fcn **(truncated)** |" in md and "**Truncated**" in md and "fcn (1 of 4 steps)" in md
    meta = json.loads((tmp_path / "out" / "checkpoints" / "fcn.json").read_text())
    assert read_cache(tmp_path / "out" / "checkpoints", "fcn", meta["fingerprint"]["key"]) is None  # never reused


def test_spec_errors_name_the_file_and_the_field(tmp_path):
    from scripts.compare import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {config: experiments/fcos/shapes.yaml}\n")
    with pytest.raises(SystemExit, match=r"bad.yaml: models\[0\]: missing 'run'"):
        main(["--spec", str(bad), "--out", str(tmp_path / "o")])
    bad.write_text("models:\n  - {run: fcos}\n")
    with pytest.raises(SystemExit, match=r"--models: \['nope'\] not in"):
        main(["--spec", str(bad), "--out", str(tmp_path / "o"), "--models", "nope"])


@pytest.mark.parametrize(
    "text",
    [
        "budget_s: 25\nmodels: [fcos]\n",
        "overrides: {trainer.max_time: '00:00:01:00'}\nmodels: [fcos]\n",
        "models:\n  - {run: fcos, budget_s: 10}\n",
        "models:\n  - {run: fcos, overrides: {trainer.max_time: '00:00:01:00'}}\n",
    ],
)
def test_a_spec_cannot_stop_training_on_the_clock(tmp_path, text):
    from scripts.compare import main

    bad = tmp_path / "clock.yaml"
    bad.write_text(text)
    with pytest.raises(SystemExit, match="safety_cap_s"):
        main(["--spec", str(bad), "--out", str(tmp_path / "o")])


@pytest.mark.slow
def test_wandb_gets_one_run_per_model_and_the_tables(compared, monkeypatch):
    import wandb_records
    from scripts.compare import main

    spec, out, rows = compared
    monkeypatch.setenv("WANDB_MODE", "offline")
    logged = main(["--spec", str(spec), "--out", str(out), "--models", "fcos", "fcn", "--wandb"])
    runs = {}
    for folder in (out / "wandb").glob("offline-run-*"):
        record = wandb_records.read_run(next(folder.glob("run-*.wandb")))
        runs[folder] = record
    names = sorted(r["config"].get("model", "summary") for r in runs.values())
    assert names == sorted([r["model"] for r in logged] + ["summary"]) == ["fcn", "fcos", "summary"]
    summary_folder = next(f for f, r in runs.items() if "model" not in r["config"])
    assert list((summary_folder / "files" / "media" / "table").glob("results_*.table.json"))
    assert list((summary_folder / "files" / "media" / "images").glob("speed_accuracy_*.png"))
    fcos = next(r for r in runs.values() if r["config"].get("model") == "fcos")
    assert "voc07/mAP" in fcos["summary"]


def test_training_runs_no_validation_and_no_checkpoint_callback(tiny_shapes_dataset, tiny_shapes_params):
    """The comparison measures the final model itself: validating during training would be wasted work, and
    the config's ModelCheckpoint (monitoring a validation metric) is dropped, not left to fail."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from comparison.spec import Entry
    from comparison.training import build
    from scripts.config_files import compose_config

    config = REPO / "experiments/yolo_v1/shapes.yaml"
    assert compose_config(config)["trainer"]["callbacks"][0]["init_args"]["monitor"].startswith("val/")
    entry = Entry(
        run="yolo_v1",
        config=config,
        max_steps=2,
        overrides={
            "data.init_args.root": str(tiny_shapes_dataset),
            "data.init_args.image_size": tiny_shapes_params["size"],
            "data.init_args.num_workers": 0,
            "model.init_args.weights": None,
        },
    )
    trainer = build(entry, {}, 0, "cpu").trainer
    assert trainer.limit_val_batches == 0 and trainer.num_sanity_val_steps == 0
    assert not any(isinstance(cb, ModelCheckpoint) for cb in trainer.callbacks)
