"""DeepLabv3: atrous backbones at output stride 8 / 16, the ASPP head, logits at input size."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from models.parts.backbones import build_body
from models.registry import get_model
from models.segmentation.deeplabv3 import DeepLabV3, deeplab_head, dilate_stage


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_backbone_keeps_output_stride_and_logits_have_input_size(backbone, output_stride):
    torch.manual_seed(0)
    model = DeepLabV3(backbone=backbone, output_stride=output_stride, aspp_channels=16, num_classes=6)
    images = torch.rand(2, 3, 64, 96)
    for train in (True, False):
        model.train(train)
        assert model.backbone(images)["c5"].shape[-2:] == (64 // output_stride, 96 // output_stride)
        logits = model(images)
        assert logits.shape == (2, 7, 64, 96) and torch.isfinite(logits).all()


def test_dilate_stage_keeps_the_strided_conv_at_the_previous_rate():
    stage = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 5, padding=2), nn.Conv2d(4, 4, 1, stride=2)
    )
    dilate_stage(stage, 2)
    assert [m.stride for m in stage] == [(1, 1)] * 3
    assert [m.dilation for m in stage] == [(1, 1), (2, 2), (1, 1)]
    assert [m.padding for m in stage] == [(1, 1), (4, 4), (0, 0)]
    assert stage(torch.rand(1, 2, 9, 9)).shape == (1, 4, 9, 9)  # "same" padding kept
    stage = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=1)
    )
    dilate_stage(stage, 4, previous_dilation=2)
    assert [m.dilation for m in stage] == [(2, 2), (2, 2), (4, 4)]
    with pytest.raises(ValueError, match="needs dilation 4"):
        dilate_stage(nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1)), 2, previous_dilation=2)
    with pytest.raises(ValueError, match="pooling"):
        dilate_stage(nn.Sequential(nn.MaxPool2d(2)), 2)


def _undilated_twin(model: DeepLabV3, backbone: str) -> nn.Module:
    """The same body with its strides, holding ``model``'s (float64) weights."""
    body = build_body(backbone).double().eval()
    body.load_state_dict(model.backbone.body.state_dict())
    return body


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_backbone_equals_the_strided_one_at_its_positions(backbone, output_stride):
    """DeepLabv3 Sec. 3.1: atrous convolution computes the strided network's responses densely, so the
    dilated c4 / c5 sampled at the strided grid's positions are the strided network's c4 / c5."""
    torch.manual_seed(0)
    model = DeepLabV3(backbone=backbone, output_stride=output_stride, aspp_channels=16, num_classes=3).double().eval()
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    strided = _undilated_twin(model, backbone)
    images = torch.rand(2, 3, 96, 128, dtype=torch.float64)
    with torch.no_grad():
        dense, sparse = model.backbone.body(images), strided(images)
    step = 32 // output_stride
    torch.testing.assert_close(dense["c5"][..., ::step, ::step], sparse["c5"])
    if output_stride == 8:
        torch.testing.assert_close(dense["c4"][..., ::2, ::2], sparse["c4"])


@pytest.mark.parametrize("output_stride, replace", [(16, [False, False, True]), (8, [False, True, True])])
def test_resnet50_dilation_is_torchvision_replace_stride_with_dilation(output_stride, replace):
    torch.manual_seed(0)
    model = DeepLabV3(backbone="resnet50", output_stride=output_stride, aspp_channels=16, num_classes=3).double().eval()
    reference = torchvision.models.resnet50(replace_stride_with_dilation=replace).double().eval()
    stages = model.backbone.body.stages
    for ours, theirs in ((stages["c4"], reference.layer3), (stages["c5"], reference.layer4)):
        ours_convs = [(m.stride, m.dilation, m.padding) for m in ours.modules() if isinstance(m, nn.Conv2d)]
        assert ours_convs == [(m.stride, m.dilation, m.padding) for m in theirs.modules() if isinstance(m, nn.Conv2d)]
    prefixes = {
        "stages.c2.0.": "conv1.",
        "stages.c2.1.": "bn1.",
        "stages.c2.4.": "layer1.",
        "stages.c3.": "layer2.",
        "stages.c4.": "layer3.",
        "stages.c5.": "layer4.",
    }
    renamed = {}
    for key, value in model.backbone.body.state_dict().items():
        prefix = next(p for p in prefixes if key.startswith(p))
        renamed[prefixes[prefix] + key[len(prefix) :]] = value
    missing, unexpected = reference.load_state_dict(renamed, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    r = reference
    with torch.no_grad():
        expected = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(images))))))))
        torch.testing.assert_close(model.backbone.body(images)["c5"], expected)


def test_head_is_torchvision_aspp_and_backbone_must_reach_stride_32():
    head = deeplab_head(32, 7, (1, 2, 3), channels=16)
    assert isinstance(head[0], ASPP) and head[-1].out_channels == 7
    with pytest.raises(ValueError, match="stride 32"):
        DeepLabV3(backbone="vgg16", num_classes=3)
    entry = get_model("deeplabv3")
    assert (entry.cls, entry.family, entry.task) == (DeepLabV3, "semantic_segmentation", "semantic")
