"""The upsampling ops against the course's worked examples (slides 136-153)."""

import pytest
import torch
import torch.nn.functional as F

from models.parts.upsampling import (
    UPSAMPLING_KINDS,
    bed_of_nails_unpool,
    build_upsampler,
    max_unpool,
    nearest_unpool,
    pad_to_multiple,
)

SLIDE_INPUT = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]


def test_nearest_unpool_matches_slide():
    expected = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], dtype=torch.float32)
    assert torch.equal(nearest_unpool(SLIDE_INPUT)[0, 0], expected)


def test_bed_of_nails_unpool_matches_slide():
    expected = torch.tensor([[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(bed_of_nails_unpool(SLIDE_INPUT)[0, 0], expected)


def test_bed_of_nails_factor_three_keeps_values_at_block_corners():
    x = torch.randn(2, 3, 4, 5)
    out = bed_of_nails_unpool(x, factor=3)
    assert out.shape == (2, 3, 12, 15)
    assert torch.equal(out[..., ::3, ::3], x)
    assert out.abs().sum() == pytest.approx(x.abs().sum().item())


def test_max_unpool_puts_values_back_at_pooling_indices():
    x = torch.tensor([[1.0, 6.0, 3.0, 2.0], [5.0, 2.0, 1.0, 7.0], [0.0, 1.0, 9.0, 4.0], [3.0, 8.0, 2.0, 1.0]])[
        None, None
    ]
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    assert pooled[0, 0].tolist() == [[6.0, 7.0], [8.0, 9.0]]
    out = max_unpool(torch.tensor([[10.0, 20.0], [30.0, 40.0]])[None, None], indices)
    expected = torch.zeros(4, 4)
    expected[0, 1], expected[1, 3], expected[3, 1], expected[2, 2] = 10.0, 20.0, 30.0, 40.0
    assert torch.equal(out[0, 0], expected)


def test_max_unpool_of_pooled_map_keeps_maxima_and_zeros_elsewhere():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    out = max_unpool(pooled, indices)
    kept = out != 0
    assert kept.sum() == pooled.numel()
    assert torch.equal(out[kept], x[kept])
    assert torch.equal(F.max_pool2d(out.masked_fill(~kept, float("-inf")), 2), pooled)


def _conv_matrix_1d(kernel: torch.Tensor, length: int, stride: int, padding: int) -> torch.Tensor:
    """X with conv1d(a) == X a (slides 150-153), for an input of ``length`` zero-padded by ``padding``."""
    size = kernel.numel()
    out_length = (length + 2 * padding - size) // stride + 1
    padded = torch.zeros(out_length, length + 2 * padding, dtype=kernel.dtype)
    for row in range(out_length):
        padded[row, row * stride : row * stride + size] = kernel
    return padded[:, padding : padding + length]  # the padded zeros contribute nothing


def test_conv_matrix_is_the_slides_matrix():
    x, y, z = 2.0, 3.0, 5.0
    X = _conv_matrix_1d(torch.tensor([x, y, z], dtype=torch.float64), length=4, stride=2, padding=1)
    # Slide 152: the rows [x y z 0 0 0] and [0 0 x y z 0] acting on [0 a b c d 0], padding dropped.
    assert X.tolist() == [[y, z, 0.0, 0.0], [0.0, x, y, z]]  # [ay + bz, bx + cy + dz]


@pytest.mark.parametrize("seed", range(5))
def test_stride2_transpose_convolution_multiplies_by_transposed_conv_matrix(seed):
    g = torch.Generator().manual_seed(seed)
    kernel = torch.randn(3, generator=g, dtype=torch.float64)
    a = torch.randn(4, generator=g, dtype=torch.float64)
    b = torch.randn(2, generator=g, dtype=torch.float64)
    X = _conv_matrix_1d(kernel, length=4, stride=2, padding=1)
    w = kernel.view(1, 1, 3)
    assert torch.allclose(F.conv1d(a.view(1, 1, 4), w, stride=2, padding=1).flatten(), X @ a)
    # output_padding=1 gives back the length 4 the stride-2 convolution came from.
    transposed = F.conv_transpose1d(b.view(1, 1, 2), w, stride=2, padding=1, output_padding=1).flatten()
    assert torch.allclose(transposed, X.T @ b)


def test_stride2_transpose_convolution_on_slide_values():
    x, y, z, a, b = 2.0, 3.0, 5.0, 7.0, 11.0
    w = torch.tensor([x, y, z], dtype=torch.float64).view(1, 1, 3)
    out = F.conv_transpose1d(torch.tensor([a, b], dtype=torch.float64).view(1, 1, 2), w, stride=2).flatten()
    # Slide 153: X^T [a, b] = [ax, ay, az + bx, by, bz, 0]; the last 0 is the padding column.
    assert out.tolist() == [a * x, a * y, a * z + b * x, b * y, b * z]


@pytest.mark.parametrize("seed", range(5))
def test_stride1_transpose_convolution_is_convolution_with_flipped_kernel(seed):
    g = torch.Generator().manual_seed(seed)
    kernel = torch.randn(3, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    X = _conv_matrix_1d(kernel, length=6, stride=1, padding=1)
    w = kernel.view(1, 1, 3)
    transposed = F.conv_transpose1d(b.view(1, 1, 6), w, padding=1).flatten()
    assert torch.allclose(transposed, X.T @ b)
    assert torch.allclose(transposed, F.conv1d(b.view(1, 1, 6), w.flip(-1), padding=1).flatten())


def _is_convolution_matrix(m: torch.Tensor) -> bool:
    """A stride-1 convolution's matrix is Toeplitz: entry (i, j) depends only on j - i."""
    return bool(torch.equal(m[1:, 1:], m[:-1, :-1]))


def test_transpose_is_a_convolution_only_for_stride_1():
    kernel = torch.tensor([2.0, 3.0, 5.0])
    assert _is_convolution_matrix(_conv_matrix_1d(kernel, length=6, stride=1, padding=1).T)
    # Slide 153: "when stride > 1, convolution transpose is no longer a normal convolution".
    assert not _is_convolution_matrix(_conv_matrix_1d(kernel, length=6, stride=2, padding=1).T)


@pytest.mark.parametrize("kind", UPSAMPLING_KINDS)
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_build_upsampler_scales_size_and_keeps_channels(kind, factor):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6 * factor, 4 * factor)
    pooled, indices = F.max_pool2d(x, factor, return_indices=True)
    up = build_upsampler(kind, channels=5, factor=factor)
    out = up(pooled, indices)
    assert out.shape == x.shape
    assert up.needs_pool_indices == (kind == "max_unpool")


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_transpose_upsampler_starts_as_bilinear_interpolation(factor):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 6, 6)
    out = build_upsampler("transpose", channels=3, factor=factor)(x)
    reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    inner = slice(factor, -factor)  # the transpose convolution zero-pads where interpolation clamps
    assert torch.allclose(out[..., inner, inner], reference[..., inner, inner], atol=1e-5)


def test_bad_upsampler_arguments_are_named():
    with pytest.raises(ValueError, match="unknown upsampling"):
        build_upsampler("cubic", 4)
    with pytest.raises(ValueError, match="factor must be >= 2"):
        build_upsampler("nearest", 4, factor=1)
    with pytest.raises(ValueError, match="needs the indices"):
        build_upsampler("max_unpool", 4)(torch.zeros(1, 4, 2, 2))


def test_pad_to_multiple_pads_bottom_right_only():
    x = torch.ones(1, 2, 5, 8)
    out = pad_to_multiple(x, 4)
    assert out.shape == (1, 2, 8, 8)
    assert torch.equal(out[..., :5, :], x) and out[..., 5:, :].abs().sum() == 0
    already = torch.ones(1, 1, 8, 12)
    assert pad_to_multiple(already, 4) is already


def test_max_unpool_equals_torch_and_runs_in_deterministic_mode():
    """``trainer.deterministic: true`` turns on torch's deterministic algorithms, under which
    F.max_unpool2d raises; ours must run there and give the same map (odd sizes included)."""
    x = torch.randn(2, 3, 9, 11)
    pooled, indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    expected = torch.nn.functional.max_unpool2d(pooled, indices, 2, 2, output_size=[9, 11])
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        out = max_unpool(pooled, indices, output_size=[9, 11])
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(out, expected)
