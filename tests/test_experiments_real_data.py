"""Every real-data config (``experiments/*/voc*.yaml``, ``coco*.yaml``) starts training as a user runs it:
through scripts/train.py with its default logger on, for one training step and one validation batch on
the real VOC / COCO fixtures in ``../shared/data/real``. Only what the fixtures force is overridden: the
data paths and splits (the fixtures hold a few images of VOC2007 test, VOC2012 and COCO val2017),
``weights: null`` (nothing downloads here), no loader workers, a one-step schedule, and what a CPU cannot
do in a smoke test: R-CNN and Fast R-CNN get 32 instead of 2000 proposals per image (2000 VGG16 passes per
image take hours on 2 CPU cores), the sliding window steps by whole windows (16x fewer ResNet passes),
Selective Search runs in-process (a forked worker can hang in OpenCV after the parent has used it), and
every config trains in float32 (on a CPU, Lightning turns the segmentation configs' GPU ``16-mixed`` into
``bf16-mixed``, which CPUs without native bfloat16 emulate: a one-step FCN fit ran over 24 minutes, and CI's
90-minute limit ran out on these fits; a mixed-precision fit is tested in tests/models/test_base.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.config_files import compose_config

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
CONFIGS = sorted(
    p
    for p in [*REPO.glob("experiments/*/voc*.yaml"), *REPO.glob("experiments/*/coco*.yaml")]
    if p.parent.name not in ("_base", "compare")
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REAL.is_dir(), reason=f"real VOC/COCO fixtures not found at {REAL} (../shared/data/real)"),
]


def voc_fixture(tmp: Path) -> Path:
    """The VOC fixtures with one more image set, ``smoke``: VOC2007's two test images, and VOC2012's one
    segmented image listed twice, so that a batch of two has two values per BatchNorm channel even after
    global pooling (DeepLabv3's ASPP pooling branch, like torchvision's, cannot train on one)."""
    root = tmp / "VOCdevkit"
    for year, sets, stems in (("2007", "Main", ["000001", "000002"]), ("2012", "Segmentation", ["2007_000063"] * 2)):
        src, dst = REAL / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}"
        dst.mkdir(parents=True)
        for sub in src.iterdir():
            if sub.name != "ImageSets":
                (dst / sub.name).symlink_to(sub, target_is_directory=True)
        (dst / "ImageSets" / sets).mkdir(parents=True)
        (dst / "ImageSets" / sets / "smoke.txt").write_text("\n".join(stems) + "\n")
    return root


def fixture_overrides(config: dict, tmp: Path) -> list[str]:
    """CLI overrides pointing a real-data config at the fixtures (and nothing else)."""
    data = config["data"]["init_args"]
    if config["data"]["class_path"].endswith("VOCDataModule"):
        task = data.get("task", "detection")
        year = "2007" if task == "detection" else "2012"
        split = "smoke"
        args = [
            f"--data.init_args.root={voc_fixture(tmp)}",
            f"--data.init_args.year={year}",
            f"--data.init_args.train_split={split}",
            f"--data.init_args.val_split={split}",
        ]
        if "train_sets" in data:
            args.append(f"--data.init_args.train_sets=[[{year}, {split}]]")
        if "sbd_root" in data:
            args.append("--data.init_args.sbd_root=null")
        return args
    coco = REAL / "coco"
    args = []
    for part in ("train", "val"):
        args += [
            f"--data.init_args.{part}_annotations={coco / 'annotations' / 'instances_val2017.json'}",
            f"--data.init_args.{part}_images={coco / 'val2017'}",
        ]
    return args


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_data_config_fits_one_step_with_its_logger(config_path, tmp_path, monkeypatch):
    from scripts.train import main

    config = compose_config(config_path)
    monkeypatch.chdir(tmp_path)  # the configs write runs/... relative to the working directory
    args = [
        "fit",
        f"--config={config_path}",
        *fixture_overrides(config, tmp_path),
        "--data.init_args.num_workers=0",
        "--data.init_args.persistent_workers=false",
        "--data.init_args.batch_size=2",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.precision=32-true",
        "--trainer.enable_progress_bar=false",
        # the config's checkpoint callback runs but writes nothing: VGG16 / ResNet-50 checkpoints are up to
        # 1.3 GB each, tens of GB over the configs (saving is tested in tests/scripts)
        "--trainer.callbacks.init_args.save_last=false",
        "--trainer.callbacks.init_args.save_top_k=0",
    ]
    model = config["model"].get("init_args", {})
    if "weights" in model:
        args.append("--model.init_args.weights=null")
    if "max_proposals" in model:  # R-CNN's ~2000 VGG16 passes per image: hours on these CPUs, not a smoke test
        args += ["--model.init_args.max_proposals=32", "--model.init_args.proposal_workers=0"]
    if "stride_fraction" in model:  # the sliding window: a window every full window size, not every quarter
        args.append("--model.init_args.stride_fraction=1.0")
    cli = main(args, exit_on_error=False)
    trainer = cli.trainer
    assert trainer.global_step == 1
    assert trainer.logger is not None, "the config's default logger must be on"
    logged = Path(trainer.logger.log_dir)
    assert (logged / "hparams.yaml").is_file(), f"no hparams.yaml in {logged}"
    metrics = trainer.callback_metrics
    assert "train/loss" in metrics or any(k.startswith("train/") for k in metrics), sorted(metrics)
    assert any(k.startswith("val/") for k in metrics), sorted(metrics)
    assert not list(tmp_path.rglob("*.ckpt")), "the smoke test must not write checkpoints"
