"""W&B through scripts/train.py: an offline run keeps its metrics, config and box-overlay images.

Read back from the run folder itself (``run-*.wandb`` records and ``files/media``), not "it did not crash".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import wandb_records

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments/fcos/shapes.yaml"


@pytest.mark.slow
def test_offline_run_writes_metrics_config_and_box_images(
    tiny_shapes_dataset, tiny_shapes_params, tmp_path, monkeypatch, capfd
):
    from scripts.train import main

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")  # not logged in: auto must mean offline
    p = tiny_shapes_params
    main(
        [
            "fit",
            "--config",
            str(CONFIG),
            f"--data.init_args.root={tiny_shapes_dataset}",
            f"--data.init_args.seed={p['seed']}",
            f"--data.init_args.num_train={p['num_train']}",
            f"--data.init_args.num_val={p['num_val']}",
            f"--data.init_args.image_size={p['size']}",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=4",
            "--model.init_args.min_size=64",
            "--model.init_args.max_size=64",
            "--model.init_args.warmup_steps=2",
            "--model.init_args.weights=null",
            "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=1",
            "--trainer.log_every_n_steps=2",
            "--trainer.max_time=null",  # no time budget: both epochs run however busy the machine is
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.callbacks.init_args.dirpath=null",
            "--wandb.mode=auto",
            f"--wandb.save_dir={tmp_path}",
            "--wandb.group=test-group",
            "--wandb.num_images=3",
        ]
    )
    import wandb

    wandb.finish()  # a script's run finishes at exit; in-process, flush it before reading the file
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "auto mode without a login must write one offline run"
    run = wandb_records.read_run(wandb_records.wait_for_run_file(runs[0]))  # every record written
    # with W&B beside the CSV logger, the checkpoints still go to the CSV run's own folder
    assert (tmp_path / "fcos_shapes" / "version_0" / "checkpoints" / "last.ckpt").exists()
    output = capfd.readouterr()
    assert "deprecated" not in output.out + output.err  # e.g. wandb.api, which the repo's code no longer uses

    logged = {k for row in run["history"] for k in row}
    assert {"train/loss", "val/voc07/mAP", "val/coco/AP", "lr-SGD"} <= logged
    assert run["config"]["lr"] == 0.02 and run["config"]["backbone"] == "small_cnn"  # hyperparameters
    assert run["config"]["cli"]["model"]["class_path"] == "models.detection.fcos.FCOS"  # the resolved config
    assert run["config"]["run_info"]["seed"] == 0 and "commit" in run["config"]["run_info"]["git"]

    examples = [row["val/examples"] for row in run["history"] if "val/examples" in row]
    assert len(examples) == 2 and examples[0]["count"] == 3  # one set per validation epoch
    boxes = sorted((runs[0] / "files" / "media" / "metadata" / "boxes2D").rglob("*.json"))
    assert boxes, "no box overlays written"
    overlay = json.loads(boxes[0].read_text())
    assert overlay["box_data"] and {"position", "class_id"} <= set(overlay["box_data"][0])
    assert list((runs[0] / "files" / "media" / "images").rglob("pr_curves*.png"))
    assert (runs[0] / "files" / "cli_config.yaml").exists()

    # a predictions table per validation: image, predicted objects with scores, ground truth
    tables = [row["val/predictions"] for row in run["history"] if "val/predictions" in row]
    assert len(tables) == 2 and all(t["_type"] == "table-file" and t["nrows"] == 3 for t in tables)
    table = json.loads((runs[0] / "files" / tables[-1]["path"]).read_text())
    assert table["columns"][:5] == ["epoch", "step", "image", "predictions", "ground_truth"]
    epoch, step, _, predicted, truth, n_pred, n_truth, top = table["data"][0]
    assert epoch == 1 and step == 12 and n_truth == len(truth.split(", ")) >= 1
    assert n_pred == (len(predicted.split(", ")) if predicted else 0) and 0.0 <= top <= 1.0
    # the PR curves as a W&B line plot (a custom chart over a table of recall / class / precision)
    panel = run["config"]["_wandb"]["visualize"]["val/pr_curve"]
    assert panel["panel_config"]["panelDefId"] == "wandb/lineseries/v0"
    curves = [row["val/pr_curve_table"] for row in run["history"] if "val/pr_curve_table" in row]
    assert len(curves) == 2
    points = json.loads((runs[0] / "files" / curves[-1]["path"]).read_text())
    assert points["columns"] == ["step", "lineKey", "lineVal"]  # recall, "<class> (AP ...)", precision
    assert {key.split(" (AP")[0] for _, key, _ in points["data"]} <= {
        "circle",
        "rectangle",
        "triangle",
        "star",
        "hexagon",
        "cross",
    }
    assert all(0.0 <= r <= 1.0 and 0.0 <= p <= 1.0 for r, _, p in points["data"])


def test_wandb_mode_auto_asks_no_deprecated_api(monkeypatch, capfd):
    from scripts.train import resolve_wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")
    assert resolve_wandb_mode("auto") == "offline"
    output = capfd.readouterr()
    assert "deprecated" not in output.out + output.err


def test_semantic_and_instance_predictions_become_wandb_masks():
    from models.callbacks import WandbPredictionImages, instance_label_map

    cb = WandbPredictionImages(num_images=2)
    image = torch.rand(3, 8, 8)
    label_map = torch.zeros(8, 8, dtype=torch.long)
    label_map[2:5, 2:5] = 3
    gt = label_map.clone()
    gt[0, 0] = 255  # ignore pixels are shown as background
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, :4, :4] = 0.9
    masks[1, 0, 2:6, 2:6] = 0.8
    instance = {
        "boxes": torch.tensor([[0.0, 0, 4, 4], [2, 2, 6, 6]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.8]),
        "masks": masks,
    }
    target = {
        "boxes": torch.tensor([[0.0, 0, 4, 4]]),
        "labels": torch.tensor([1]),
        "masks": (masks[:1, 0] > 0.5).to(torch.uint8),
    }
    cb._items = [(image, label_map, gt), (image, instance, target)]
    sem, inst = cb.overlays(["a", "b", "c"])
    assert sem["masks"]["predictions"]["mask_data"][3, 3] == 3
    assert sem["masks"]["ground_truth"]["mask_data"][0, 0] == 0
    assert sem["masks"]["predictions"]["class_labels"][3] == "c"
    predicted = inst["boxes"]["predictions"]["box_data"]
    assert [b["class_id"] for b in predicted] == [1, 2] and predicted[0]["position"]["maxX"] == 4.0
    assert [b["class_id"] for b in inst["boxes"]["ground_truth"]["box_data"]] == [1]
    merged = instance_label_map(masks, torch.tensor([1, 2]), (8, 8))
    assert merged[1, 1] == 1 and merged[5, 5] == 2 and merged[3, 3] == 1  # the higher-scored instance wins overlaps
    assert np.array_equal(inst["masks"]["predictions"]["mask_data"], merged)
    assert inst["masks"]["ground_truth"]["mask_data"][0, 0] == 1

    import wandb

    for overlay in (sem, inst):  # W&B accepts them as they are
        wandb.Image(**overlay)
