"""scripts/train.py (LightningCLI) end to end on the tiny generated shapes dataset."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments/fcos/shapes.yaml"


def _data_args(root: Path, params: dict) -> list[str]:
    return [
        f"--data.init_args.root={root}",
        f"--data.init_args.seed={params['seed']}",
        f"--data.init_args.num_train={params['num_train']}",
        f"--data.init_args.num_val={params['num_val']}",
        f"--data.init_args.image_size={params['size']}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=4",
        "--model.init_args.min_size=64",
        "--model.init_args.max_size=64",
        "--model.init_args.weights=null",
    ]


def test_print_config_resolves_model_and_data_classes():
    out = subprocess.run([sys.executable, str(REPO / "scripts/train.py"), "fit", "--config", str(CONFIG), "--print_config"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    config = yaml.safe_load(out)
    assert config["model"]["class_path"] == "models.detection.fcos.FCOS"
    assert config["data"]["class_path"] == "datamodules.ShapesDataModule"
    assert config["model"]["init_args"]["lr"] == 0.02  # base-class arguments reach the subclass


@pytest.mark.slow
def test_fit_lowers_the_baseline_loss_and_test_reports_metrics(tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    from scripts.train import main

    args = ["--config", str(CONFIG), *_data_args(tiny_shapes_dataset, tiny_shapes_params),
            "--trainer.max_epochs=6", "--trainer.check_val_every_n_epoch=6", "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false", "--trainer.deterministic=true",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.callbacks.init_args.dirpath={tmp_path / 'ckpt'}",
            "--model.init_args.warmup_steps=5"]
    cli = main(["fit", *args])
    # The classes came from the DataModule, not the config.
    assert cli.model.num_classes == 6 and cli.model.class_names[0] == "circle"
    rows = list(csv.DictReader(open(Path(cli.trainer.logger.log_dir) / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert set(cli.model.last_val_metrics) >= {"voc07/mAP", "voc/mAP", "lecture/mAP", "coco/AP"}
    assert (tmp_path / "ckpt" / "last.ckpt").exists()

    test = main(["test", *args, f"--ckpt_path={tmp_path / 'ckpt' / 'last.ckpt'}"])
    assert 0.0 <= test.model.last_test_metrics["voc07/mAP"] <= 1.0
