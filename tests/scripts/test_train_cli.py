"""scripts/train.py (LightningCLI) end to end on the tiny generated shapes dataset."""

import csv
import os
import re
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
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts/train.py"), "fit", "--config", str(CONFIG), "--print_config"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    config = yaml.safe_load(out)
    assert config["model"]["class_path"] == "models.detection.fcos.FCOS"
    assert config["data"]["class_path"] == "datamodules.ShapesDataModule"
    assert config["model"]["init_args"]["lr"] == 0.02  # base-class arguments reach the subclass


MODEL_OPTIMIZER = (
    r"the optimiser and its schedule are the model's own \(models.base.TaskModule\): "
    r"set model.init_args.optimizer, lr, "
)


@pytest.mark.parametrize("given", [["--optimizer=SGD"], ["--lr_scheduler", "StepLR"]])
def test_lightning_optimizer_arguments_are_refused_naming_the_model_settings(given):
    from scripts.train import main

    with pytest.raises(Exception, match=rf"{given[0].split('=')[0]}: {MODEL_OPTIMIZER}"):
        main(["fit", "--config", str(CONFIG), *given], run=False, exit_on_error=False)


def test_an_optimizer_config_key_is_refused_naming_the_model_settings(tmp_path):
    extra = tmp_path / "optimizer.yaml"
    extra.write_text("optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}\n")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/train.py"),
            "fit",
            "--config",
            str(CONFIG),
            "--config",
            str(extra),
            "--print_config",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2 and result.stdout == ""
    last_line = result.stderr.splitlines()[-1]
    assert re.fullmatch(rf"error: .*optimizer.*{MODEL_OPTIMIZER}.*", last_line), last_line


def test_a_config_saved_with_null_optimizer_keys_is_accepted(tmp_path):
    """Every saved config.yaml carries ``optimizer: null`` / ``lr_scheduler: null``: it must train again as is."""
    from scripts.train import main

    saved = tmp_path / "config.yaml"
    saved.write_text("optimizer: null\nlr_scheduler: null\n")
    cli = main(["--config", str(CONFIG), "--config", str(saved)], run=False, exit_on_error=False)
    assert cli.config.optimizer is None and cli.config.lr_scheduler is None and cli.model is not None


@pytest.mark.slow
def test_the_model_own_optimizer_and_schedule_run(tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    import torch

    from models.base import TaskModule
    from scripts.train import main

    cli = main(
        [
            "fit",
            "--config",
            str(CONFIG),
            *_data_args(tiny_shapes_dataset, tiny_shapes_params),
            "--trainer.max_epochs=null",
            "--trainer.max_steps=6",
            "--trainer.limit_val_batches=0",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.callbacks=null",
            f"--trainer.default_root_dir={tmp_path}",
            "--model.init_args.warmup_steps=10",
        ]
    )
    assert "configure_optimizers" not in vars(cli.model)  # LightningCLI did not replace the model's method
    assert type(cli.model).configure_optimizers is TaskModule.configure_optimizers
    (optimizer,), (schedule,) = cli.trainer.optimizers, cli.trainer.lr_scheduler_configs
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["momentum"] == 0.9  # the config's sgd, lr 0.02
    assert schedule.interval == "step" and schedule.scheduler.last_epoch == 6
    # 6 steps: warm-up over 5 from 0.1 x lr, then the cosine down to zero at the end of the run
    assert [schedule.scheduler.lr_lambdas[0](s) for s in (0, 4, 5)] == pytest.approx([0.1, 0.82, 1.0])
    assert optimizer.param_groups[0]["initial_lr"] == 0.02 and optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


@pytest.mark.slow
def test_fit_lowers_the_baseline_loss_and_test_reports_metrics(
    tiny_shapes_dataset, tiny_shapes_params, tmp_path, capsys
):
    from scripts.train import main

    args = [
        "--config",
        str(CONFIG),
        *_data_args(tiny_shapes_dataset, tiny_shapes_params),
        "--trainer.max_epochs=6",
        "--trainer.check_val_every_n_epoch=3",
        "--trainer.log_every_n_steps=1",
        "--trainer.max_time=null",
        "--trainer.deterministic=true",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.callbacks.init_args.dirpath=null",  # the run's own folder, whatever the config says
        "--model.init_args.warmup_steps=5",
    ]
    cli = main(["fit", *args, "--progress=lines", "--progress_every_n_steps=6"])
    # The classes came from the DataModule, not the config.
    assert cli.model.num_classes == 6 and cli.model.class_names[0] == "circle"
    run = tmp_path / "fcos_shapes" / "version_0"  # one folder per run: logs, config and checkpoints together
    assert Path(cli.trainer.log_dir) == run
    assert {"metrics.csv", "config.yaml", "run_info.json", "checkpoints"} <= {f.name for f in run.iterdir()}
    saved = yaml.safe_load((run / "config.yaml").read_text())  # the whole config: experiments/_base/ + fcos's own
    assert "_base_" not in saved and saved["trainer"]["callbacks"][0]["init_args"]["monitor"] == "val/voc07/mAP"
    assert (saved["trainer"]["accelerator"], saved["data"]["init_args"]["reader"]) == ("auto", "voc")
    assert saved["model"]["init_args"]["lr"] == 0.02  # fcos/shapes.yaml's own
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert set(cli.model.last_val_metrics) >= {"voc07/mAP", "voc/mAP", "lecture/mAP", "coco/AP"}
    assert (run / "checkpoints" / "last.ckpt").exists()

    out = capsys.readouterr().out
    # 36 steps, a progress line every 6 (not one bar's last state), one line per epoch, a table per validation
    steps = [
        line for line in out.splitlines() if line.startswith("epoch ") and " | step " in line and "done" not in line
    ]
    assert [line.split(" | ")[1] for line in steps] == [f"step {n}/36" for n in range(6, 37, 6)]
    assert "train/loss" in steps[0] and "steps/s" in steps[0]
    assert sum(line.startswith("epoch ") and " done | " in line for line in out.splitlines()) == 6
    tables = [line for line in out.splitlines() if line.startswith("validation | epoch ")]
    assert tables == ["validation | epoch 2 | step 18", "validation | epoch 5 | step 36"]
    voc = [line.split() for line in out.splitlines() if line.strip().startswith("val/voc07/mAP")]
    assert len(voc) == 2 and float(voc[1][1]) == pytest.approx(cli.model.last_val_metrics["voc07/mAP"], abs=1e-4)

    test = main(["test", *args, "--ckpt_path=last"])
    assert Path(test.trainer.ckpt_path) == run / "checkpoints" / "last.ckpt"
    assert 0.0 <= test.model.last_test_metrics["voc07/mAP"] <= 1.0

    # a second run of the same config gets the next folder, and `last` is now its checkpoint, not the first's
    first_files = sorted((run / "checkpoints").iterdir())
    second = main(["fit", *args, "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1"])
    assert Path(second.trainer.log_dir) == tmp_path / "fcos_shapes" / "version_2"  # version_1: the test's logs
    assert sorted((run / "checkpoints").iterdir()) == first_files  # no last-v1.ckpt beside the first run's
    again = main(["test", *args, "--ckpt_path=last"])
    assert Path(again.trainer.ckpt_path) == tmp_path / "fcos_shapes" / "version_2" / "checkpoints" / "last.ckpt"


def test_last_checkpoint_is_the_newest_version_that_saved_one(tmp_path):
    from pytorch_lightning import Trainer
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from scripts.train import last_checkpoint

    root = tmp_path / "name"
    for version, files in {
        0: ["last.ckpt"],
        1: ["last.ckpt", "last-step.ckpt", "epoch=0.ckpt.partial"],
        2: [],
        10: [],
    }.items():
        folder = root / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        for i, name in enumerate(files):
            (folder / name).write_text(name)
            os.utime(folder / name, (1000 + i, 1000 + i))
    step = ModelCheckpoint(every_n_train_steps=4, save_last=True, save_top_k=0)
    step.CHECKPOINT_NAME_LAST = "last-step"
    trainer = Trainer(
        logger=CSVLogger(tmp_path, name="name"),
        callbacks=[ModelCheckpoint(save_last=True), step],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # version_10 and version_2 have no checkpoint (a test run, a run that died before saving): version_1's newer file
    assert last_checkpoint(trainer) == root / "version_1" / "checkpoints" / "last-step.ckpt"
    explicit = Trainer(
        logger=CSVLogger(tmp_path, name="name"),
        callbacks=[ModelCheckpoint(dirpath=root / "version_0" / "checkpoints", save_last=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert last_checkpoint(explicit) == root / "version_0" / "checkpoints" / "last.ckpt"
    empty = Trainer(
        logger=CSVLogger(tmp_path, name="other"),
        callbacks=[ModelCheckpoint(save_last=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert last_checkpoint(empty) is None
