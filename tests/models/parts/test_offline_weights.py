"""Pretrained weights offline: torch.hub's cache is read, a missing file fails in one clear line, and a model
restored from a checkpoint reads no pretrained file at all (the download is made to fail, as offline)."""

from __future__ import annotations

import urllib.error

import pytest
import pytorch_lightning as pl
import torch
import torchvision

from models.parts import torchvision_weights as tw
from models.parts.backbones import build_body


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    calls = []

    def fail(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return calls


def _place(builder: str, weights: str, state: dict) -> torchvision.models.WeightsEnum:
    enum = tw.resolve(builder, weights)
    path = tw.weights_path(enum)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return enum


def test_weights_path_is_torch_hubs_cache(torch_home, tmp_path):
    enum = tw.resolve("resnet18", "IMAGENET1K_V1")
    assert tw.weights_path(enum) == tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


def test_missing_detector_weights_fail_offline_in_one_line(torch_home):
    from models.detection.faster_rcnn import FasterRCNN

    with pytest.raises(tw.WeightsNotFoundError) as info:
        FasterRCNN(num_classes=2, weights="torchvision")
    message = str(info.value)
    path = tw.weights_path(torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1)
    assert "\n" not in message
    assert str(path) in message and "TORCH_HOME" in message and "copy it to" in message
    assert "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in message
    assert torch_home  # the download was tried, and failed


def test_missing_backbone_weights_fail_offline_in_one_line(torch_home):
    with pytest.raises(tw.WeightsNotFoundError, match=r"resnet18-f37072fd\.pth.*TORCH_HOME"):
        build_body("resnet18", "IMAGENET1K_V1")


def test_the_comparison_reports_the_one_line_through_the_cli(torch_home, tmp_path):
    from scripts.compare import summarize_error
    from scripts.train import main

    with pytest.raises(Exception) as info:
        main(
            args=[
                "--config",
                "experiments/faster_rcnn/shapes.yaml",
                "--model.init_args.weights=torchvision",
                f"--data.init_args.root={tmp_path / 'shapes'}",
            ],
            run=False,
            exit_on_error=False,
        )
    line = summarize_error(info.value, limit=1000)
    assert "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth not found" in line and "TORCH_HOME" in line


def test_imagenet_body_loads_the_cached_file_as_torchvision_does(torch_home):
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    _place("resnet18", "IMAGENET1K_V1", state)
    body = build_body("resnet18", "IMAGENET1K_V1")
    reference = torchvision.models.resnet18(weights="IMAGENET1K_V1")
    assert torch.equal(body.stages["c2"][0].weight, reference.conv1.weight)
    assert torch.equal(body.stages["c5"][1].conv2.weight, reference.layer4[1].conv2.weight)
    assert not torch_home  # nothing downloaded


def _checkpoint(model: pl.LightningModule, path) -> None:
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": pl.__version__,
        },
        path,
    )


def test_load_from_checkpoint_reads_no_torchvision_weights(torch_home, tmp_path):
    from models.detection.faster_rcnn import FasterRCNN

    torch.manual_seed(0)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    enum = _place("fasterrcnn_resnet50_fpn", "COCO_V1", tv.state_dict())
    kwargs = {"min_size": 128, "max_size": 128, "box_score_thresh": 0.0, "rpn_post_nms_top_n_test": 50}
    model = FasterRCNN(num_classes=2, class_names=["person", "dog"], weights="torchvision", builder_kwargs=kwargs)
    with torch.no_grad():  # fine-tuned weights differ from the file's
        model.detector.roi_heads.box_head.fc6.weight.mul_(1.5)
    _checkpoint(model, tmp_path / "model.ckpt")
    tw.weights_path(enum).unlink()

    restored = FasterRCNN.load_from_checkpoint(tmp_path / "model.ckpt", map_location="cpu")
    assert not torch_home  # no download tried
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    model.eval(), restored.eval()
    image = [torch.rand(3, 128, 128)]
    with torch.no_grad():
        expected, got = model.detector(image)[0], restored.detector(image)[0]  # all 91 classes
    assert len(got["boxes"]) > 0
    torch.testing.assert_close(got["boxes"], expected["boxes"])
    with pytest.raises(tw.WeightsNotFoundError):  # outside a restore the file is needed again
        FasterRCNN(num_classes=2, class_names=["person", "dog"], weights="torchvision", builder_kwargs=kwargs)


def test_load_from_checkpoint_reads_no_imagenet_weights(torch_home, tmp_path):
    from models.detection.retinanet import RetinaNet

    torch.manual_seed(0)
    enum = _place("resnet18", "IMAGENET1K_V1", torchvision.models.resnet18().state_dict())
    model = RetinaNet(num_classes=2, backbone="resnet18", weights="IMAGENET1K_V1", fpn_channels=32)
    _checkpoint(model, tmp_path / "model.ckpt")
    tw.weights_path(enum).unlink()
    restored = RetinaNet.load_from_checkpoint(tmp_path / "model.ckpt", map_location="cpu")
    assert not torch_home
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    # the restored network is built as the original: frozen batch norm, the first stages frozen
    assert [p.requires_grad for p in restored.parameters()] == [p.requires_grad for p in model.parameters()]


def test_the_training_cli_raises_the_one_line_not_a_union_error(torch_home, tmp_path):
    from scripts.train import main

    with pytest.raises(tw.WeightsNotFoundError) as info:
        main(
            args=[
                "--config",
                "experiments/faster_rcnn/shapes.yaml",
                "--model.init_args.weights=torchvision",
                f"--data.init_args.root={tmp_path / 'shapes'}",
            ],
            run=False,
            exit_on_error=False,
        )
    message = str(info.value)
    assert "\n" not in message and "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in message and "TORCH_HOME" in message


def test_test_with_a_checkpoint_reads_no_pretrained_weights(
    torch_home, tmp_path, tiny_shapes_dataset, tiny_shapes_params
):
    """``train.py test --ckpt_path`` with a config naming ImageNet weights: the checkpoint holds the weights, so
    nothing is read or downloaded (downloads fail here, and the cache is empty)."""
    from scripts.train import main

    common = [
        "--config",
        "experiments/fcos/shapes.yaml",
        f"--data.init_args.root={tiny_shapes_dataset}",
        f"--data.init_args.image_size={tiny_shapes_params['size']}",
        # the fixture's own generator settings: others would make the DataModule regenerate the shared dataset
        *(f"--data.init_args.{k}={tiny_shapes_params[k]}" for k in ("seed", "num_train", "num_val")),
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=4",
        "--model.init_args.backbone=resnet18",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=[]",
        "--trainer.enable_checkpointing=false",
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.num_sanity_val_steps=0",
        "--wandb.mode=disabled",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    fit = main(["fit", *common, "--model.init_args.weights=null"], exit_on_error=False)
    ckpt = tmp_path / "fcos.ckpt"
    fit.trainer.save_checkpoint(ckpt)
    with pytest.raises(tw.WeightsNotFoundError):  # without a checkpoint the ImageNet file is needed
        main(["test", *common, "--model.init_args.weights=IMAGENET1K_V1"], exit_on_error=False)
    torch_home.clear()
    test = main(
        ["test", *common, "--model.init_args.weights=IMAGENET1K_V1", f"--ckpt_path={ckpt}"], exit_on_error=False
    )
    assert not torch_home, f"downloads tried: {torch_home}"
    assert any(k.startswith("test/") for k in test.trainer.callback_metrics)
