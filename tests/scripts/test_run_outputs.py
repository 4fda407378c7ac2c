"""Run outputs of scripts/train.py and scripts/compare.py (issue 13, items 17-18; issue 15, item 8):
unwritable folders are reported in one line before any training, a checkpoint write killed midway leaves
the old file intact and no partial file that a rerun would not remove, and the terminal summary table."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments/fcos/shapes.yaml"


def _args(root: Path, params: dict, out: Path) -> list[str]:
    return [
        "--config",
        str(CONFIG),
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
        "--trainer.max_epochs=1",
        "--trainer.max_time=null",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.callbacks.init_args.dirpath=null",
    ]


@pytest.mark.parametrize("where", ["checkpoints", "logs", "wandb", "metrics_file"])
def test_an_unwritable_output_is_one_line_error_before_training(
    tiny_shapes_dataset, tiny_shapes_params, tmp_path, monkeypatch, capsys, where
):
    from scripts.train import main

    blocker = tmp_path / "a_file"  # a folder below a regular file cannot be made, not even by root
    blocker.write_text("")
    bad = blocker / "sub"
    out = tmp_path / "runs"
    args = ["fit", *_args(tiny_shapes_dataset, tiny_shapes_params, out)]
    if where == "checkpoints":
        args.append(f"--trainer.callbacks.init_args.dirpath={bad}")
    elif where == "logs":
        args.append(f"--trainer.logger.init_args.save_dir={bad}")
    elif where == "wandb":
        args += ["--wandb.mode=offline", f"--wandb.save_dir={bad}"]
    else:
        monkeypatch.setenv("CV_COURSE_METRICS_FILE", str(bad / "metrics.json"))
    with pytest.raises(SystemExit) as exc:
        main(args)
    message = str(exc.value.code)
    assert message.startswith("error: cannot write ") and str(bad) in message and "\n" not in message
    assert not list(tmp_path.rglob("metrics.csv")) and not list(tmp_path.rglob("*.ckpt"))  # nothing ran
    assert "epoch 0 done" not in capsys.readouterr().out


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_checkpoint_folder_fails_before_training(tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    from scripts.train import main

    folder = tmp_path / "ckpt"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(SystemExit, match="cannot write checkpoints to .*ckpt"):
            main(
                [
                    "fit",
                    *_args(tiny_shapes_dataset, tiny_shapes_params, tmp_path / "runs"),
                    f"--trainer.callbacks.init_args.dirpath={folder}",
                ]
            )
    finally:
        folder.chmod(0o755)


def test_the_cli_saves_checkpoints_beside_their_target(tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    from models.checkpoint_io import AtomicCheckpointIO
    from scripts.train import main

    cli = main(_args(tiny_shapes_dataset, tiny_shapes_params, tmp_path), run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


_SAVE = textwrap.dedent("""
    import os, shutil, sys
    import torch
    sys.path.insert(0, sys.argv[1])
    from models.checkpoint_io import AtomicCheckpointIO

    target, value, die = sys.argv[2], float(sys.argv[3]), sys.argv[4] == "die"
    if die:  # killed (SIGKILL-like: no cleanup, no exception) once the bytes are written, before the rename
        def killed(*args, **kwargs):
            os._exit(9)
        os.replace = os.rename = shutil.move = killed
    AtomicCheckpointIO().save_checkpoint({"weights": torch.full((1_000_000,), value)}, target)
""")


def _save(target: Path, value: float, die: bool, tmpdir: Path) -> int:
    env = dict(os.environ, TMPDIR=str(tmpdir))
    return subprocess.run(
        [sys.executable, "-c", _SAVE, str(REPO), str(target), str(value), "die" if die else "ok"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    ).returncode


def _big_files(folder: Path) -> list[Path]:
    return [f for f in folder.rglob("*") if f.is_file() and f.stat().st_size >= 1_000_000]


def test_a_checkpoint_write_killed_midway_keeps_the_old_file_and_a_rerun_removes_the_partial(tmp_path):
    tmpdir, folder = tmp_path / "systmp", tmp_path / "ckpt"
    tmpdir.mkdir()
    target = folder / "last.ckpt"
    assert _save(target, 1.0, die=False, tmpdir=tmpdir) == 0
    assert _save(target, 2.0, die=True, tmpdir=tmpdir) == 9
    partial = folder / "last.ckpt.partial"
    assert partial.stat().st_size >= 4_000_000  # killed after writing 4 MB: beside the target ...
    assert _big_files(tmpdir) == []  # ... not in the system temp folder, where nothing would remove it
    assert torch.equal(torch.load(target)["weights"], torch.full((1_000_000,), 1.0))  # the old file is intact

    assert _save(folder / "epoch=1.ckpt", 3.0, die=False, tmpdir=tmpdir) == 0  # the rerun's first save there
    assert sorted(f.name for f in folder.iterdir()) == ["epoch=1.ckpt", "last.ckpt"]
    assert _big_files(tmpdir) == []


def test_the_validation_summary_shows_main_metrics_with_change_and_best():
    from models.callbacks import ValidationSummary

    summary = ValidationSummary()
    checkpoint = SimpleNamespace(monitor="val/voc07/mAP", mode="max")
    trainer = SimpleNamespace(
        current_epoch=0,
        global_step=6,
        checkpoint_callback=checkpoint,
        callback_metrics={
            "val/voc07/mAP": torch.tensor(0.25),
            "val/coco/AP": torch.tensor(0.1),
            "train/loss": torch.tensor(3.0),
        },
    )
    first = summary.table(trainer).splitlines()
    assert first[0] == "validation | epoch 0 | step 6"
    assert [line.split()[0] for line in first[2:]] == ["val/voc07/mAP", "val/coco/AP"]  # main metrics only
    assert first[2].split()[1:] == ["0.2500", "-", "0.2500"]
    trainer.callback_metrics = {"val/voc07/mAP": torch.tensor(0.2), "val/coco/AP": torch.tensor(0.3)}
    second = summary.table(trainer).splitlines()
    assert second[2].split()[1:] == ["0.2000", "-0.0500", "0.2500"]
    assert second[3].split()[1:] == ["0.3000", "+0.2000", "0.3000"]
    trainer.callback_metrics = {"val/loss": torch.tensor(1.0)}
    assert summary.table(trainer) is None


def test_compare_reports_an_unwritable_logs_folder_before_any_model(tmp_path):
    from scripts.compare import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "logs").write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(["--spec", str(REPO / "experiments/compare/default.yaml"), "--out", str(out)])
    message = str(exc.value.code)
    assert message.startswith("error: cannot write failure logs to ") and str(out / "logs") in message
    assert not (out / "results.json").exists()


def test_compare_failure_handler_survives_an_unwritable_logs_folder(tmp_path, capsys):
    from scripts.compare import write_failure_log

    (tmp_path / "logs").write_text("not a folder")
    assert write_failure_log(tmp_path, "broken", "Traceback: boom") is None
    assert "Traceback: boom" in capsys.readouterr().err
    good = tmp_path / "good"
    assert write_failure_log(good, "broken", "Traceback: boom") == good / "logs" / "broken.txt"
    assert (good / "logs" / "broken.txt").read_text() == "Traceback: boom"
