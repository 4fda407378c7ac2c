"""models.parts.roi_align against torchvision's RoIAlign, the reference it replaces for CPU training."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as torchvision_roi_align

from models.parts import roi_align as module
from models.parts.roi_align import FeaturePyramidRoIAlign, roi_align, separable_roi_align


def random_case(seed: int, dtype: torch.dtype = torch.float64):
    """Maps of 1-19 cells a side, RoIs partly outside the map, some far below one cell, unsorted images."""
    g = torch.Generator().manual_seed(seed)
    images, channels = int(torch.randint(1, 4, (), generator=g)), 3
    height, width = (int(v) for v in torch.randint(1, 20, (2,), generator=g))
    scale = [1.0, 0.5, 0.25][seed % 3]
    features = torch.randn(images, channels, height, width, generator=g, dtype=dtype, requires_grad=True)
    extent = torch.tensor([width, height], dtype=dtype) / scale
    corner = torch.rand(17, 2, generator=g, dtype=dtype) * extent * 1.4 - 0.2 * extent
    size = torch.rand(17, 2, generator=g, dtype=dtype) * 10 / scale * (0.01 if seed % 5 == 0 else 1.0)
    index = torch.randint(0, images, (17, 1), generator=g).to(dtype)
    output = tuple(int(v) for v in torch.randint(1, 8, (2,), generator=g))
    return features, torch.cat([index, corner, corner + size], 1), output, scale


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("seed", range(8))
def test_separable_op_is_torchvisions_roi_align_with_its_gradient(seed, sampling_ratio, aligned):
    features, rois, output, scale = random_case(seed)
    reference = torchvision_roi_align(features, rois, output, scale, sampling_ratio, aligned)
    ours = separable_roi_align(features, rois, output, scale, sampling_ratio, aligned)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    upstream = torch.randn_like(reference)
    (grad_reference,) = torch.autograd.grad((reference * upstream).sum(), features)
    (grad_ours,) = torch.autograd.grad((ours * upstream).sum(), features)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=0, atol=1e-12)


def test_float32_and_no_rois():
    features, rois, output, scale = random_case(3, torch.float32)
    torch.testing.assert_close(
        separable_roi_align(features, rois, output, scale, 2, False),
        torchvision_roi_align(features, rois, output, scale, 2, False),
        rtol=1e-5,
        atol=1e-5,
    )
    empty = separable_roi_align(features, rois[:0], (7, 7), scale, 2, False)
    assert empty.shape == (0, features.shape[1], 7, 7)


def test_the_dispatcher_uses_the_separable_op_only_to_train_on_a_cpu_with_fixed_sampling(monkeypatch):
    calls = []
    monkeypatch.setattr(module, "separable_roi_align", lambda *a: calls.append(a) or torchvision_roi_align(*a))
    features, rois, output, scale = random_case(1)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(features.shape[0])]
    roi_align(features, boxes, output, scale, 2)  # training: separable
    assert len(calls) == 1 and calls[0][1].shape == (sum(len(b) for b in boxes), 5)
    roi_align(features, rois, output, scale, -1)  # adaptive sampling: torchvision
    roi_align(features.detach(), rois, output, scale, 2)  # no gradient: torchvision
    with torch.no_grad():
        roi_align(features, rois, output, scale, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: torchvision's float32 op
        roi_align(features, rois, output, scale, 2)
    roi_align(features.detach().half().requires_grad_(), rois.half(), output, scale, 2)
    side = int(module.SEPARABLE_MAX_MAP_CELLS**0.5) + 1
    large_map = torch.zeros(1, 1, side, side, dtype=rois.dtype, requires_grad=True)
    roi_align(large_map, rois[:1] * 0, output, scale, 2)  # torchvision
    assert len(calls) == 1


def test_feature_pyramid_roi_align_is_torchvisions_multiscale_roi_align():
    g = torch.Generator().manual_seed(0)
    levels = OrderedDict(
        (name, torch.randn(2, 4, 128 // stride, 128 // stride, generator=g, dtype=torch.float64, requires_grad=True))
        for name, stride in (("c3", 8), ("c4", 16), ("c5", 32))
    )
    levels["unused"] = torch.randn(2, 4, 2, 2, dtype=torch.float64)
    boxes = []
    for _ in range(2):
        corner = torch.rand(30, 2, generator=g, dtype=torch.float64) * 60
        boxes.append(torch.cat([corner, corner + torch.rand(30, 2, generator=g, dtype=torch.float64) * 90 + 1], 1))
    shapes = [(128, 128), (128, 128)]
    reference = MultiScaleRoIAlign(["c3", "c4", "c5"], 7, sampling_ratio=2, canonical_scale=32)
    ours = FeaturePyramidRoIAlign(["c3", "c4", "c5"], 7, sampling_ratio=2, canonical_scale=32)
    expected, got = reference(levels, boxes, shapes), ours(levels, boxes, shapes)
    assert len(set(reference.map_levels(boxes).tolist())) == 3  # every level pools some RoIs
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    upstream = torch.randn_like(expected)
    inputs = [levels[name] for name in ("c3", "c4", "c5")]
    grads_expected = torch.autograd.grad((expected * upstream).sum(), inputs)
    grads_got = torch.autograd.grad((got * upstream).sum(), inputs)
    for a, b in zip(grads_got, grads_expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("aligned", [False, True])
def test_samples_exactly_one_pixel_outside_count_as_the_border_pixel(aligned):
    """torchvision keeps a sample at -1 or at the map's size (clamped onto the border) and drops one
    beyond: RoIs whose single sample lands on those values."""
    features = torch.arange(1.0, 17.0, dtype=torch.float64).reshape(1, 1, 4, 4).requires_grad_()
    shift = 0.5 if aligned else 0.0
    rois = torch.tensor(
        [[0, 1, 3, 3, 5], [0, 1, -2, 3, 0], [0, 1, 3.5, 3, 5.5], [0, -2.5, 1, -0.5, 3]], dtype=torch.float64
    )
    rois[:, 1:] += shift
    reference = torchvision_roi_align(features, rois, (1, 1), 1.0, 1, aligned)
    assert (reference[:2] != 0).all() and (reference[2] == 0).all()
    torch.testing.assert_close(separable_roi_align(features, rois, (1, 1), 1.0, 1, aligned), reference, rtol=0, atol=0)
