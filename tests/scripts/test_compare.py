"""scripts/compare.py end to end on a tiny spec: two models that train for a few steps and one that
cannot be built; the files, the table columns, the failed row, the skip-on-rerun and --checkpoints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

EXPECTED_KEYS = {"model", "family", "status", "error", "params", "gflops", "train_img_per_s", "latency_ms_median",
                 "latency_ms_p90", "fps"}


def _spec(tmp_path: Path, root: Path, params: dict) -> Path:
    spec = {
        "budget_s": 60,
        "latency_images": 3,
        "latency_warmup": 1,
        "example_images": 2,
        "eval_images": 6,
        "tables": ["rcnn_family", "detectors", "segmentation", "ablations"],
        "overrides": {
            "data.init_args.root": str(root), "data.init_args.seed": params["seed"],
            "data.init_args.num_train": params["num_train"], "data.init_args.num_val": params["num_val"],
            "data.init_args.image_size": params["size"], "data.init_args.num_workers": 0,
            "data.init_args.batch_size": 4, "data.init_args.persistent_workers": False,
            "trainer.max_steps": 4, "model.init_args.warmup_steps": 1,
        },
        "models": [
            {"run": "fcos", "overrides": {"model.init_args.min_size": 64, "model.init_args.max_size": 64,
                                      "model.init_args.weights": None}},
            {"run": "fcn", "overrides": {"model.init_args.weights": None}},
            {"run": "broken", "config": "experiments/fcos/shapes.yaml",
             "overrides": {"model.init_args.backbone": "no_such_backbone"}},
        ],
        "nms_sweep": {"fcos": [0.3, 0.7]},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


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
    assert {"voc07/mAP", "voc/mAP", "lecture/mAP", "coco/AP", "coco/AP50", "coco/AP75", "coco/APs"} <= set(by_run["fcos"])
    assert {"pixel_accuracy", "mean_pixel_accuracy", "mean_iou", "mean_dice"} <= set(by_run["fcn"])
    assert by_run["fcos"]["family"] == "anchor_free" and by_run["fcn"]["family"] == "semantic_segmentation"
    assert by_run["fcos"]["eval_images"] == 6 and by_run["fcos"]["train_steps"] == 4
    assert by_run["fcos"]["gflops"] > 0 and by_run["fcos"]["latency_ms_median"] > 0
    assert {"nms_sweep/0.3/voc07/mAP", "nms_sweep/0.7/voc07/mAP"} <= set(by_run["fcos"])

    saved = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in saved] == [r["run"] for r in rows]
    with open(out / "results.csv") as f:
        header = next(csv.reader(f))
    assert EXPECTED_KEYS <= set(header)
    md = (out / "results.md").read_text()
    assert "| model | params | GFLOPs | train img/s | ms/img |" in md
    assert "| model | params | ms/img | FPS | PA | MPA | mIoU | Dice |" in md
    assert "NMS IoU threshold sweep" in md
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
def test_rerun_skips_finished_rows_and_checkpoints_reproduce_the_metrics(compared, tmp_path):
    from scripts.compare import main

    spec, out, rows = compared
    before = {r["run"]: r for r in rows}
    again = {r["run"]: r for r in main(["--spec", str(spec), "--out", str(out), "--models", "fcos", "fcn"])}
    assert again["fcos"]["train_s"] == before["fcos"]["train_s"]  # not retrained

    evaluated = {r["run"]: r for r in main(["--spec", str(spec), "--out", str(tmp_path / "eval"), "--models", "fcos", "fcn",
                                            "--checkpoints", str(out / "checkpoints")])}
    assert evaluated["fcos"]["voc07/mAP"] == before["fcos"]["voc07/mAP"]
    assert evaluated["fcn"]["mean_iou"] == before["fcn"]["mean_iou"]
    assert "train_s" not in evaluated["fcos"]


def test_spec_errors_name_the_file_and_the_field(tmp_path):
    from scripts.compare import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {config: experiments/fcos/shapes.yaml}\n")
    with pytest.raises(SystemExit, match=r"bad.yaml: models\[0\]: missing 'run'"):
        main(["--spec", str(bad), "--out", str(tmp_path / "o")])
    bad.write_text("models:\n  - {run: fcos}\n")
    with pytest.raises(SystemExit, match=r"--models: \['nope'\] not in"):
        main(["--spec", str(bad), "--out", str(tmp_path / "o"), "--models", "nope"])


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
