"""U-Net: shapes through the contracting and expanding paths (its short fit: tests/models/test_model_contract.py)."""

import pytest
import torch

from models.registry import get_model
from models.segmentation.unet import UNet


@pytest.mark.parametrize("channels", [(4, 8), (4, 8, 16, 16, 32)])
def test_forward_gives_logits_at_input_size_in_train_and_eval(channels):
    torch.manual_seed(0)
    model = UNet(channels=channels, num_classes=6)
    for train in (True, False):
        model.train(train)
        assert model(torch.rand(2, 3, 45, 61)).shape == (2, 7, 45, 61)


def test_expanding_path_concatenates_the_contracting_maps():
    model = UNet(channels=(4, 8, 16), num_classes=2)
    seen = []
    for step in model.expanding:
        step.convs.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[1:])))
    model(torch.rand(1, 3, 32, 32))
    # up-convolution halves the channels, then the skip of the same level is concatenated
    assert seen == [(8 + 8, 16, 16), (4 + 4, 32, 32)]


def test_needs_two_levels_and_is_registered():
    with pytest.raises(ValueError, match="at least two levels"):
        UNet(channels=(8,), num_classes=2)
    entry = get_model("unet")
    assert (entry.cls, entry.family, entry.task) == (UNet, "semantic_segmentation", "semantic")


def test_on_a_backbone_the_expanding_path_takes_every_stage_and_returns_full_resolution():
    torch.manual_seed(0)
    model = UNet(backbone="small_cnn", num_classes=6)
    strides = sorted(model.stage_widths)
    assert strides[0] == 2 and len(model.expanding) == len(strides) - 1 and len(model.to_full_resolution) == 1
    seen = []
    for step in model.expanding:
        step.convs.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    for train in (True, False):
        model.train(train)
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7, 64, 64)
    assert seen[: len(strides) - 1] == [(64 // s, 64 // s) for s in reversed(strides[:-1])]
