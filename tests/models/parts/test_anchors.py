import math

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from models.parts.anchors import (
    default_box_generator,
    retinanet_anchor_generator,
    retinanet_anchor_sizes,
    rpn_anchor_generator,
    ssd_scales,
)


def anchors_for(generator, image_size: int, feature_sizes: list[int]) -> torch.Tensor:
    images = ImageList(torch.zeros(1, 3, image_size, image_size), [(image_size, image_size)])
    return generator(images, [torch.zeros(1, 4, s, s) for s in feature_sizes])[0]


def test_rpn_anchors_of_the_faster_rcnn_shapes_config_tile_the_stride_grid():
    # one stride-16 map of a 128 px image, sizes 16/32/64 x ratios 0.5/1/2: 9 anchors at each of 8 x 8 points
    generator = rpn_anchor_generator((16, 32, 64), (0.5, 1.0, 2.0), num_levels=1)
    assert generator.num_anchors_per_location() == [9]
    anchors = anchors_for(generator, 128, [8]).reshape(8, 8, 9, 4)  # (y, x, anchor, xyxy)
    centres = (anchors[..., :2] + anchors[..., 2:]) / 2
    grid = torch.arange(8.0) * 16
    assert torch.allclose(centres[..., 0], grid[None, :, None].expand(8, 8, 9))
    assert torch.allclose(centres[..., 1], grid[:, None, None].expand(8, 8, 9))
    sizes = anchors[0, 0, :, 2:] - anchors[0, 0, :, :2]
    areas, ratios = sizes.prod(1), sizes[:, 1] / sizes[:, 0]
    # torchvision orders them ratio-major: (0.5: 16, 32, 64), (1: 16, 32, 64), (2: ...); sides are rounded
    assert torch.allclose(areas.sqrt(), torch.tensor([16.0, 32, 64]).repeat(3), rtol=0.05)
    assert torch.allclose(ratios, torch.tensor([0.5, 1.0, 2.0]).repeat_interleave(3), rtol=0.1)


def test_rpn_anchors_on_an_fpn_put_one_size_on_each_level():
    generator = rpn_anchor_generator((16, 32, 64), (0.5, 1.0, 2.0), num_levels=3)
    assert generator.num_anchors_per_location() == [3, 3, 3]
    anchors = anchors_for(generator, 128, [16, 8, 4])
    assert len(anchors) == 3 * (16 * 16 + 8 * 8 + 4 * 4)
    side = (anchors[:, 2:] - anchors[:, :2]).prod(1).sqrt()
    assert torch.allclose(side[: 3 * 256], torch.full((3 * 256,), 16.0), rtol=0.1)
    assert torch.allclose(side[-3 * 16 :], torch.full((3 * 16,), 64.0), rtol=0.1)
    with pytest.raises(ValueError, match="one anchor size per level"):
        rpn_anchor_generator((16, 32), (1.0,), num_levels=3)


def test_ssd_scales_follow_eq_4_with_one_extra_step():
    assert ssd_scales(6, 0.2, 0.9) == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04])
    assert ssd_scales(5, 0.1, 0.8) == pytest.approx([0.1, 0.275, 0.45, 0.625, 0.8, 0.975])
    with pytest.raises(ValueError):
        ssd_scales(1)


def test_default_boxes_of_the_shapes_config():
    ratios = [[2], [2, 3], [2, 3], [2], [2]]
    generator = default_box_generator(ratios, 0.1, 0.8)
    assert generator.num_anchors_per_location() == [4, 6, 6, 4, 4]
    boxes = anchors_for(generator, 128, [16, 8, 4, 2, 1])
    assert boxes.shape == (16 * 16 * 4 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 4 + 1 * 4, 4)
    # the first location of the 16 x 16 map: centred on its cell (4, 4); squares of 0.1 x 128 and
    # sqrt(0.1 x 0.275) x 128, then 0.1 x 128 x sqrt(2) by 0.1 x 128 / sqrt(2) and its transpose
    first = boxes[:4]
    assert torch.allclose((first[:, :2] + first[:, 2:]) / 2, torch.tensor([4.0, 4.0]).expand(4, 2))
    wh = first[:, 2:] - first[:, :2]
    s, s_prime = 12.8, math.sqrt(0.1 * 0.275) * 128
    expected = torch.tensor(
        [[s, s], [s_prime, s_prime], [s * math.sqrt(2), s / math.sqrt(2)], [s / math.sqrt(2), s * math.sqrt(2)]]
    )
    assert torch.allclose(wh, expected, atol=1e-4)
    # the 1 x 1 map: one location at the image centre, the biggest boxes (0.8 x 128 square)
    last = boxes[-4:]
    assert torch.allclose((last[:, :2] + last[:, 2:]) / 2, torch.tensor([64.0, 64.0]).expand(4, 2))
    assert torch.allclose(last[0, 2:] - last[0, :2], torch.tensor([0.8 * 128] * 2))


def test_retinanet_anchor_sizes_are_three_octave_scales():
    sizes = retinanet_anchor_sizes([16, 32])
    assert sizes[0] == pytest.approx((16, 16 * 2 ** (1 / 3), 16 * 2 ** (2 / 3)))
    assert sizes[1] == pytest.approx((32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)))


def test_retinanet_anchors_per_level_and_single_level():
    pyramid = retinanet_anchor_generator([16, 32, 64])
    assert pyramid.num_anchors_per_location() == [9, 9, 9]
    anchors = anchors_for(pyramid, 128, [16, 8, 4])
    assert len(anchors) == 9 * (256 + 64 + 16)
    # every anchor of the first level is one of the 9 shapes of base size 16: areas 16^2 .. (16 x 2^(2/3))^2
    side = (anchors[: 9 * 256, 2:] - anchors[: 9 * 256, :2]).prod(1).sqrt()
    assert side.min() == pytest.approx(16, rel=0.05) and side.max() == pytest.approx(16 * 2 ** (2 / 3), rel=0.05)

    single = retinanet_anchor_generator([16, 32, 64], single_level=True)
    assert single.num_anchors_per_location() == [27]  # the same 27 shapes on one map
    anchors = anchors_for(single, 128, [8])
    assert len(anchors) == 27 * 64
    side = (anchors[:27, 2:] - anchors[:27, :2]).prod(1).sqrt()
    assert side.min() == pytest.approx(16, rel=0.05) and side.max() == pytest.approx(64 * 2 ** (2 / 3), rel=0.05)
