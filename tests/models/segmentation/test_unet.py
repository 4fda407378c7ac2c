"""U-Net: shapes through the contracting and expanding paths, and a short fit."""

import pytest
import torch

from datamodules.shapes_generator import render_image
from models.registry import get_model
from models.segmentation.unet import UNet


def shapes_batch(n: int = 8, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B x 3 x H x W in [0, 1]) and class maps (B x H x W, 255 = border) of the shapes generator."""
    rendered = [render_image(seed=0, split="train", index=i, size=size) for i in range(n)]
    images = torch.stack([torch.from_numpy(r.image).permute(2, 0, 1).float() / 255 for r in rendered])
    return images, torch.stack([torch.from_numpy(r.class_map).long() for r in rendered])


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


@pytest.mark.slow
def test_short_fit_lowers_the_loss(train_steps):
    torch.manual_seed(0)
    model = UNet(channels=(8, 16, 32, 32), num_classes=6)
    batch = shapes_batch(8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = train_steps(lambda: model.compute_losses(batch)["loss_ce"], optimizer, 40)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


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
