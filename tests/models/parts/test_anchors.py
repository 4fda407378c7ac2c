import math

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from models.parts.anchors import default_box_generator, retinanet_anchor_generator, retinanet_anchor_sizes, ssd_scales


def anchors_for(generator, image_size: int, feature_sizes: list[int]) -> torch.Tensor:
    images = ImageList(torch.zeros(1, 3, image_size, image_size), [(image_size, image_size)])
    return generator(images, [torch.zeros(1, 4, s, s) for s in feature_sizes])[0]


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
    expected = torch.tensor([[s, s], [s_prime, s_prime], [s * math.sqrt(2), s / math.sqrt(2)], [s / math.sqrt(2), s * math.sqrt(2)]])
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
