import pytest
import torch

from models.parts.corner_pooling import CornerPooling, corner_pool_bottom_right, corner_pool_top_left


def naive_top_left(top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    # Eq. 6 of the paper, element by element: max over rows i..H-1 of `top`, columns j..W-1 of `left`.
    out = torch.empty_like(top)
    _, _, height, width = top.shape
    for i in range(height):
        for j in range(width):
            out[:, :, i, j] = top[:, :, i:, j].amax(-1) + left[:, :, i, j:].amax(-1)
    return out


def naive_bottom_right(bottom: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(bottom)
    _, _, height, width = bottom.shape
    for i in range(height):
        for j in range(width):
            out[:, :, i, j] = bottom[:, :, : i + 1, j].amax(-1) + right[:, :, i, : j + 1].amax(-1)
    return out


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 8, 3), (1, 1, 1, 1)])
def test_corner_pooling_equals_the_naive_loop(shape):
    g = torch.Generator().manual_seed(sum(shape))
    a, b = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    assert torch.equal(corner_pool_top_left(a, b), naive_top_left(a, b))
    assert torch.equal(corner_pool_bottom_right(a, b), naive_bottom_right(a, b))


def test_top_left_pooling_sees_an_object_below_and_to_the_right():
    # One bright pixel at (row 3, col 4): the top-left corner map lights up above-left of it only.
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 3, 4] = 1.0
    out = corner_pool_top_left(x, x)[0, 0]
    assert out[3, 4] == 2  # both directions see it
    assert out[0, 4] == 1 and out[3, 0] == 1  # above it (vertical) and left of it (horizontal)
    assert out[0, 0] == 0 and out[4, 4] == 0 and out[3, 5] == 0  # not diagonal, below or right of it
    out = corner_pool_bottom_right(x, x)[0, 0]
    assert out[3, 4] == 2 and out[5, 4] == 1 and out[3, 5] == 1
    assert out[2, 4] == 0 and out[3, 3] == 0


def test_corner_pooling_module_shapes_gradients_and_ablation():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 9, 11, requires_grad=True)
    pooled = CornerPooling(8, "top_left")
    assert pooled(x).shape == (2, 8, 9, 11)
    pooled(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    plain = CornerPooling(8, "top_left", pool=False)
    plain.load_state_dict(pooled.state_dict())  # same weights: only the pooling differs
    assert not torch.allclose(plain(x), pooled(x))
    with pytest.raises(ValueError, match="corner"):
        CornerPooling(8, "top_right")
