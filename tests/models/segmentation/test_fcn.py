"""FCN: every upsampling kind and skip fusion, the encoder options (its short fit: test_model_contract.py)."""

from pathlib import Path

import pytest
import torch

from datamodules.shapes_generator import render_image
from models.parts.upsampling import UPSAMPLING_KINDS
from models.registry import get_model
from models.segmentation.fcn import FCN
from scripts.config_files import compose_config

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments" / "fcn"

SMALL = {"channels": (4, 8, 8, 16, 16), "num_classes": 6}


def shapes_batch(n: int = 8, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B x 3 x H x W in [0, 1]) and class maps (B x H x W, 255 = border) of the shapes generator."""
    rendered = [render_image(seed=0, split="train", index=i, size=size) for i in range(n)]
    images = torch.stack([torch.from_numpy(r.image).permute(2, 0, 1).float() / 255 for r in rendered])
    return images, torch.stack([torch.from_numpy(r.class_map).long() for r in rendered])


@pytest.mark.parametrize("skip_fusion", ["32s", "16s", "8s"])
@pytest.mark.parametrize("upsampling", UPSAMPLING_KINDS)
def test_forward_gives_logits_at_input_size_in_train_and_eval(upsampling, skip_fusion):
    torch.manual_seed(0)
    model = FCN(upsampling=upsampling, skip_fusion=skip_fusion, **SMALL)
    images = torch.rand(2, 3, 50, 70)  # not a multiple of 32: padded inside, cropped back
    for train in (True, False):
        model.train(train)
        logits = model(images)
        assert logits.shape == (2, 7, 50, 70)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("downsample", ["max_pool", "strided_conv"])
def test_training_step_loss_is_finite_and_reaches_every_parameter(downsample):
    torch.manual_seed(0)
    model = FCN(downsample=downsample, **SMALL)
    images, masks = shapes_batch(2)
    loss = model.compute_losses((images, masks))["loss_ce"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_skip_fusion_layers_start_at_zero_and_learn():
    torch.manual_seed(0)
    model = FCN(skip_fusion="8s", **SMALL)
    assert set(model.decoder.skips) == {"16", "8"}
    assert all((p == 0).all() for p in model.decoder.skips.parameters())  # starts as FCN-32s
    model.compute_losses(shapes_batch(2))["loss_ce"].backward()
    assert all(p.grad.abs().sum() > 0 for p in model.decoder.skips.parameters())
    assert len(FCN(skip_fusion="32s", **SMALL).decoder.skips) == 0


def test_max_unpool_decoder_uses_encoder_pooling_indices():
    torch.manual_seed(0)
    model = FCN(upsampling="max_unpool", **SMALL).eval()
    images = torch.rand(1, 3, 64, 64)
    features, indices = model.encoder(model.normalize(images))
    assert sorted(indices) == [2, 4, 8, 16, 32]
    # the first decoder step puts the stride-32 values back where pool5 took them, zeros elsewhere
    coarse = features[32]
    unpooled = model.decoder.steps[0]["up"](coarse, indices[32])
    assert unpooled.shape[-2:] == (4, 4)
    assert torch.equal(unpooled.flatten(2).gather(2, indices[32].flatten(2)), coarse.flatten(2))
    assert (unpooled != 0).sum() <= coarse.numel()


def test_max_unpool_needs_max_pooling_encoder():
    with pytest.raises(ValueError, match="max_unpool needs the pooling indices"):
        FCN(upsampling="max_unpool", downsample="strided_conv", **SMALL)
    with pytest.raises(ValueError, match="max_unpool needs the pooling indices"):
        FCN(upsampling="max_unpool", backbone="small_cnn", num_classes=3)
    with pytest.raises(ValueError, match="unknown skip_fusion"):
        FCN(skip_fusion="4s", **SMALL)


def test_vgg16_backbone_gets_pool5_for_fcn_8s():
    model = FCN(backbone="vgg16", skip_fusion="8s", num_classes=20)
    assert sorted(model.encoder.stage_channels) == [4, 8, 16, 32]
    assert model(torch.rand(1, 3, 64, 96)).shape == (1, 21, 64, 96)


UPSAMPLING_MODULES = {
    "transpose": "TransposeConvUpsample",
    "nearest": "NearestUnpool",
    "bed_of_nails": "BedOfNailsUnpool",
    "max_unpool": "MaxUnpool",
    "bilinear": "BilinearUpsample",
}


def test_the_registered_fcn_builds_every_upsampling_by_its_argument():
    entry = get_model("fcn")
    assert (entry.family, entry.task) == ("semantic_segmentation", "semantic")
    for kind, module in UPSAMPLING_MODULES.items():
        model = entry.cls(upsampling=kind, **SMALL)
        assert type(model.decoder.steps[0]["up"]).__name__ == module


@pytest.mark.parametrize("dataset", ["shapes", "voc"])
@pytest.mark.parametrize("kind", sorted(set(UPSAMPLING_MODULES) - {"transpose"}))
def test_the_upsampling_variants_are_configs_of_fcn(kind, dataset):
    """experiments/fcn/<dataset>_<upsampling>.yaml: the FCN of <dataset>.yaml with another upsampling."""
    baseline = compose_config(EXPERIMENTS / f"{dataset}.yaml")
    variant = compose_config(EXPERIMENTS / f"{dataset}_{kind}.yaml")
    assert variant["model"]["class_path"] == baseline["model"]["class_path"] == "models.segmentation.fcn.FCN"
    assert baseline["model"]["init_args"]["upsampling"] == "transpose"
    assert variant["model"]["init_args"]["upsampling"] == kind
    assert variant["trainer"]["logger"]["init_args"]["name"] == f"fcn_{kind}_{dataset}"
    assert variant["data"] == baseline["data"]


def test_trains_and_validates_through_lightning(tiny_shapes_dataset, tiny_shapes_params):
    import pytorch_lightning as pl

    from datamodules import ShapesDataModule

    params = dict(tiny_shapes_params)
    data = ShapesDataModule(
        root=str(tiny_shapes_dataset),
        task="semantic",
        image_size=params.pop("size"),
        batch_size=4,
        progress=False,
        **params,
    )
    model = FCN(channels=(4, 8, 8, 16, 16), num_classes=6, warmup_steps=1)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, data)
    assert 0.0 <= model.last_val_metrics["mean_iou"] <= 1.0
    assert {"pixel_accuracy", "mean_pixel_accuracy", "mean_dice"} <= set(model.last_val_metrics)
