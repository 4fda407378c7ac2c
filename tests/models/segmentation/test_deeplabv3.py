"""DeepLabv3: atrous backbones at output stride 8 / 16, the ASPP head, logits at input size."""

import pytest
import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

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


def test_dilate_stage_trades_stride_for_dilation():
    stage = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 5, padding=2), nn.Conv2d(4, 4, 1, stride=2))
    dilate_stage(stage, 2)
    assert [m.stride for m in stage] == [(1, 1)] * 3
    assert [m.dilation for m in stage] == [(2, 2), (2, 2), (1, 1)]
    assert stage(torch.rand(1, 2, 9, 9)).shape == (1, 4, 9, 9)  # "same" padding kept
    with pytest.raises(ValueError, match="pooling"):
        dilate_stage(nn.Sequential(nn.MaxPool2d(2)), 2)


def test_head_is_torchvision_aspp_and_backbone_must_reach_stride_32():
    head = deeplab_head(32, 7, (1, 2, 3), channels=16)
    assert isinstance(head[0], ASPP) and head[-1].out_channels == 7
    with pytest.raises(ValueError, match="stride 32"):
        DeepLabV3(backbone="vgg16", num_classes=3)
    entry = get_model("deeplabv3")
    assert (entry.cls, entry.family, entry.task) == (DeepLabV3, "semantic_segmentation", "semantic")


def test_shapes_pretrained_backbone_is_loaded_at_fit_setup(tiny_shapes_dataset):
    from models.parts.pretrain import pretrain_on_shapes

    model = DeepLabV3(weights="shapes", data_root=str(tiny_shapes_dataset), num_classes=6)
    model.setup("fit")
    pretrained = torch.load(pretrain_on_shapes(tiny_shapes_dataset).path, weights_only=True)["state_dict"]
    assert all(torch.equal(v, pretrained[k]) for k, v in model.backbone.body.state_dict().items())
