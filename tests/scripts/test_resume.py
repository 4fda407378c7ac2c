"""Resume and determinism of scripts/train.py runs (issue: experiment operations).

A run killed mid-epoch and resumed from its step checkpoint must end exactly where an uninterrupted
run of the same config ends: same weights, same metrics. Two runs with the same seed must agree.
Nothing here depends on timing: the kill is a callback at a given step, and no time budget (the
configs' ``max_time``) can end a run early on a busy machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parents[2]
FCOS = REPO / "experiments/fcos/shapes.yaml"
#: Faster R-CNN samples its RPN anchors and RoIs at random: resuming must also restore the random streams
FASTER_RCNN = REPO / "experiments/faster_rcnn/shapes.yaml"


class KillAtStep(pl.Callback):
    """Simulates a crash (pre-emption, OOM) when training reaches ``step``: work after the last checkpoint is lost."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"killed at step {self.step}")


def _args(root: Path, params: dict, out: Path, config: Path = FCOS) -> list[str]:
    extra = ["--model.init_args.weights=null"]  # from scratch: no pretraining inside a unit test
    return [
        "--config",
        str(config),
        *extra,
        f"--data.init_args.root={root}",
        f"--data.init_args.seed={params['seed']}",
        f"--data.init_args.num_train={params['num_train']}",
        f"--data.init_args.num_val={params['num_val']}",
        f"--data.init_args.image_size={params['size']}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=4",
        "--model.init_args.min_size=64",
        "--model.init_args.max_size=64",
        "--model.init_args.warmup_steps=3",
        "--trainer.max_epochs=3",
        "--trainer.check_val_every_n_epoch=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.deterministic=true",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.max_time=null",
        f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.callbacks.init_args.dirpath=null",
        "--checkpoint_every_n_steps=4",
        "--wandb.mode=disabled",
    ]


def _fit(args: list[str], callbacks: list[pl.Callback] = (), ckpt_path: str | None = None):
    """``fit`` as scripts/train.py runs it; ``ckpt_path="last"`` resolved as its ``--ckpt_path last``."""
    from scripts.train import last_checkpoint, main

    cli = main(args, run=False)
    cli.trainer.callbacks[:0] = list(callbacks)
    if ckpt_path == "last":
        ckpt_path = last_checkpoint(cli.trainer)
        cli.resumed_from = ckpt_path
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


@pytest.mark.slow
@pytest.mark.parametrize("config", [FCOS, FASTER_RCNN], ids=["fcos", "faster_rcnn"])
def test_killed_run_resumed_mid_epoch_ends_like_the_uninterrupted_run(
    tiny_shapes_dataset, tiny_shapes_params, tmp_path, config
):
    # 24 images / batch 4 = 6 steps per epoch, 18 in all; step checkpoints every 4 steps.
    whole = _fit(_args(tiny_shapes_dataset, tiny_shapes_params, tmp_path / "whole", config))
    assert whole.trainer.global_step == 18

    out = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed at step 10"):
        _fit(_args(tiny_shapes_dataset, tiny_shapes_params, out, config), callbacks=[KillAtStep(10)])
    (killed_run,) = out.glob("*/version_0")  # the run's own folder: <save_dir>/<config name>/version_0
    step_checkpoint = killed_run / "checkpoints" / "last-step.ckpt"
    checkpoint = torch.load(step_checkpoint, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 8  # mid-epoch: batch 2 of epoch 1
    assert checkpoint["ShapesDataModule"] == {"train_epoch": 1, "train_batches_done": 2}

    resumed = _fit(_args(tiny_shapes_dataset, tiny_shapes_params, out, config), ckpt_path="last")
    assert resumed.resumed_from == step_checkpoint  # step 8; no validation yet, so no last.ckpt
    assert Path(resumed.trainer.log_dir) == killed_run.with_name("version_1")  # the resumed part: its own folder
    assert resumed.trainer.global_step == 18
    assert _same_weights(whole.model, resumed.model) == []
    assert resumed.model.last_val_metrics == whole.model.last_val_metrics
    assert whole.model.last_val_metrics["voc07/mAP"] >= 0.0


@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_the_same_metrics(tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    first = _fit(_args(tiny_shapes_dataset, tiny_shapes_params, tmp_path / "a"))
    second = _fit(_args(tiny_shapes_dataset, tiny_shapes_params, tmp_path / "b"))
    assert _same_weights(first.model, second.model) == []
    assert first.model.last_val_metrics == second.model.last_val_metrics
    info = (Path(first.trainer.log_dir) / "run_info.json").read_text()
    assert '"seed": 0' in info and '"torch": "2.14.1"' in info and '"commit"' in info
