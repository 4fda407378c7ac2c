"""Validation metrics are logged as synchronised values: no ``sync_dist`` warning once torch.distributed is
initialised (as under DDP), and the logged values are the metrics' own (issue 15, item 10).

One process with a gloo group of size 1 stands in for DDP: Lightning warns when a process group exists and an
epoch-level value is logged without synchronisation, and honours ``sync_dist`` only when its accelerator
connector reports a distributed run, which the test makes it report (the reduction of one rank is itself).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_validation_metrics_log_without_sync_dist_warning_under_a_process_group(
    tiny_shapes_dataset, tiny_shapes_params, tmp_path, monkeypatch
):
    from scripts.train import main

    p = tiny_shapes_params
    cli = main(
        [
            "--config",
            str(REPO / "experiments/fcos/shapes.yaml"),
            f"--data.init_args.root={tiny_shapes_dataset}",
            f"--data.init_args.seed={p['seed']}",
            f"--data.init_args.num_train={p['num_train']}",
            f"--data.init_args.num_val={p['num_val']}",
            f"--data.init_args.image_size={p['size']}",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=4",
            "--model.init_args.min_size=64",
            "--model.init_args.max_size=64",
            "--model.init_args.weights=null",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.callbacks=null",
        ],
        run=False,
    )
    assert not dist.is_initialized()
    connector = type(cli.trainer._accelerator_connector)
    monkeypatch.setattr(connector, "is_distributed", property(lambda self: True))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (logged,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    finally:
        dist.destroy_process_group()
    assert not [str(w.message) for w in caught if "sync_dist" in str(w.message)]
    assert logged["val/voc07/mAP"] == cli.model.last_val_metrics["voc07/mAP"]
    assert {"val/coco/AP", "val/voc/mAP"} <= set(logged)
