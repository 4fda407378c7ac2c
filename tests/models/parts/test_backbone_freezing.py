"""Reference-style fine-tuning of torchvision bodies: FrozenBatchNorm2d and torchvision's trainable stages."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.ssd import _vgg_extractor
from torchvision.ops import FrozenBatchNorm2d

from models.parts.backbones import build_backbone, build_body, configure_body, freeze_batchnorm


def _flags(module: nn.Module) -> list[bool]:
    return [p.requires_grad for p in module.parameters()]


@pytest.mark.parametrize("layers", [0, 1, 2, 3, 4, 5])
def test_resnet_trainable_layers_match_torchvision(layers):
    body = configure_body(
        build_body("resnet50"), "resnet50", "IMAGENET1K_V1", trainable_layers=layers, detection_defaults=True
    )
    reference = _resnet_fpn_extractor(torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d), layers).body
    assert _flags(body) == _flags(reference)  # same parameter order: conv1, layer1 .. layer4
    assert sum(_flags(body)) == sum(_flags(reference))


@pytest.mark.parametrize("layers", [0, 2, 3, 5])
def test_vgg_trainable_layers_match_torchvision(layers):
    body = configure_body(build_body("vgg16"), "vgg16", "IMAGENET1K_V1", trainable_layers=layers)
    features = torchvision.models.vgg16()
    extractor = _vgg_extractor(features, False, layers)
    reference = list(extractor.features) + list(extractor.extra[0])[:-1]  # conv1_1 .. conv5_3
    assert _flags(body) == [p.requires_grad for m in reference for p in m.parameters()]


def test_imagenet_resnet_defaults_to_frozen_bn_and_three_stages_for_the_detectors():
    body = configure_body(build_body("resnet18"), "resnet18", "IMAGENET1K_V1", detection_defaults=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in body.modules()) == 20  # every BN of ResNet-18
    assert not any(p.requires_grad for p in body.stages["c2"].parameters())  # conv1, layer1
    assert all(p.requires_grad for name in ("c3", "c4", "c5") for p in body.stages[name].parameters())


def test_imagenet_resnet_trains_everything_without_the_detection_defaults():
    """The segmenters' references (torchvision's FCN / DeepLabv3 recipe, the DeepLab paper) train batch norm."""
    body = configure_body(build_body("resnet18"), "resnet18", "IMAGENET1K_V1")
    assert any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    assert all(p.requires_grad for p in body.parameters())


def test_scratch_and_small_cnn_keep_training_batch_norm():
    for name, weights in (("small_cnn", None), ("small_cnn", "shapes"), ("resnet18", None)):
        body = configure_body(build_body(name), name, weights, detection_defaults=True)
        assert any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
        assert not any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
        assert all(p.requires_grad for p in body.parameters())
    with pytest.raises(ValueError, match="trainable_layers"):
        configure_body(build_body("small_cnn"), "small_cnn", None, trainable_layers=2)


def test_frozen_batchnorm_is_batchnorm_in_eval_and_never_updates():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    bn = net[1]
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    x = torch.randn(2, 3, 16, 16)
    expected = net.eval()(x)
    freeze_batchnorm(net)
    assert isinstance(net[1], FrozenBatchNorm2d)
    stats = net[1].running_mean.clone()
    got = net.train()(x)  # train mode: still the stored statistics
    torch.testing.assert_close(got, expected)
    assert torch.equal(net[1].running_mean, stats)


def test_build_backbone_passes_the_options():
    features = build_backbone("resnet18", None, ("c3", "c4", "c5"), fpn=True, trainable_layers=2, frozen_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in features.body.modules())
    assert not any(p.requires_grad for name in ("c2", "c3") for p in features.body.stages[name].parameters())
    assert all(p.requires_grad for name in ("c4", "c5") for p in features.body.stages[name].parameters())
    assert all(p.requires_grad for p in features.fpn.parameters())
