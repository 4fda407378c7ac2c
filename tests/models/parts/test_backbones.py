import pytest
import torch

from models.parts.backbones import BACKBONES, build_backbone


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_strides_and_channels_match_outputs(name):
    backbone = build_backbone(name, return_layers=("c3", "c4", "c5"), fpn=True, fpn_channels=32)
    out = backbone(torch.zeros(1, 3, 128, 128))
    assert list(out) == ["c3", "c4", "c5"]
    for stride, feature in zip(backbone.strides, out.values()):
        assert feature.shape[1] == backbone.out_channels == 32
        assert feature.shape[-1] == 128 // stride


def test_small_cnn_without_fpn_returns_raw_stage():
    backbone = build_backbone("small_cnn", return_layers=("c4",))
    out = backbone(torch.zeros(2, 3, 64, 96))
    assert out["c4"].shape == (2, backbone.out_channels, 4, 6)


def test_fpn_extra_levels_extend_strides():
    backbone = build_backbone("small_cnn", return_layers=("c3", "c4", "c5"), fpn=True, fpn_extra="p6p7")
    out = backbone(torch.zeros(1, 3, 128, 128))
    assert backbone.strides == [8, 16, 32, 64, 128]
    assert [v.shape[-1] for v in out.values()] == [16, 8, 4, 2, 1]


def test_bad_backbone_arguments_are_named():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("alexnet")
    with pytest.raises(ValueError, match="not in the backbone's stages"):
        build_backbone("small_cnn", return_layers=("c9",))
    with pytest.raises(ValueError, match="equal channels"):
        build_backbone("small_cnn", return_layers=("c2", "c3"))
    with pytest.raises(ValueError, match="no torchvision weights"):
        build_backbone("small_cnn", weights="DEFAULT")
