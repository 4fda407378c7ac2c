import pytest
import torch

from models.parts.hourglass import Hourglass, Residual, StackedHourglass


def test_residual_block_changes_shape_only_when_asked():
    x = torch.randn(2, 8, 16, 16)
    assert Residual(8, 8)(x).shape == (2, 8, 16, 16)
    assert Residual(8, 12, stride=2)(x).shape == (2, 12, 8, 8)


def test_hourglass_returns_its_input_resolution():
    hourglass = Hourglass((8, 12, 16))  # two stride-2 levels
    assert hourglass(torch.randn(1, 8, 16, 12)).shape == (1, 8, 16, 12)
    with pytest.raises(ValueError, match="two levels"):
        Hourglass((8,))


@pytest.mark.parametrize("num_stacks", [1, 2])
def test_stacked_hourglass_gives_one_stride_4_map_per_stack(num_stacks):
    torch.manual_seed(0)
    net = StackedHourglass(num_stacks, channels=(16, 24, 32), stem_channels=8)
    features = net(torch.randn(2, 3, 64, 96))
    assert len(features) == num_stacks
    for f in features:
        assert f.shape == (2, net.out_channels, 64 // net.stride, 96 // net.stride)
    features[-1].mean().backward()
    assert net.stem[0].weight.grad is not None and net.stem[0].weight.grad.abs().sum() > 0


def test_hourglass_output_depends_on_the_whole_image():
    # The bottleneck sees the whole 32 x 32 input, so a change in one corner moves the opposite one.
    torch.manual_seed(0)
    net = StackedHourglass(1, channels=(8, 8, 8, 8), stem_channels=8).eval()
    x = torch.randn(1, 3, 32, 32)
    y = x.clone()
    y[:, :, :4, :4] += 5.0
    with torch.no_grad():
        a, b = net(x)[0], net(y)[0]
    assert not torch.allclose(a[..., -1, -1], b[..., -1, -1])
