import math

import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from models.parts.box_coding import BoxCoder


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 100
    wh = torch.rand(n, 2, generator=generator) * 60 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_encode_hand_computed_case():
    # proposal: centre (5, 10), size 10 x 20; box: centre (15, 25), size 20 x 40
    proposal = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    box = torch.tensor([[5.0, 5.0, 25.0, 45.0]])
    deltas = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)).encode(box, proposal)
    assert torch.allclose(deltas, torch.tensor([[1.0, 0.75, math.log(2), math.log(2)]]))
    weighted = BoxCoder().encode(box, proposal)  # (10, 10, 5, 5)
    assert torch.allclose(weighted, torch.tensor([[10.0, 7.5, 5 * math.log(2), 5 * math.log(2)]]))


def test_round_trip_recovers_random_boxes():
    g = torch.Generator().manual_seed(0)
    coder = BoxCoder()
    boxes, proposals = random_boxes(500, g), random_boxes(500, g)
    decoded = coder.decode(coder.encode(boxes, proposals), proposals)
    assert torch.allclose(decoded, boxes, atol=1e-3)


def test_decode_k_boxes_per_proposal_decodes_each_slice():
    g = torch.Generator().manual_seed(1)
    coder = BoxCoder()
    proposals = random_boxes(7, g)
    deltas = torch.randn(7, 4 * 3, generator=g)
    decoded = coder.decode(deltas, proposals)
    assert decoded.shape == (7, 12)
    for k in range(3):
        assert torch.allclose(decoded[:, 4 * k : 4 * k + 4], coder.decode(deltas[:, 4 * k : 4 * k + 4], proposals))


def test_zero_deltas_return_the_proposals():
    g = torch.Generator().manual_seed(2)
    proposals = random_boxes(10, g)
    assert torch.allclose(BoxCoder().decode(torch.zeros(10, 8), proposals), proposals.repeat(1, 2), atol=1e-4)


def test_decode_clamps_dw_dh():
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(4.0))
    proposal = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    decoded = coder.decode(torch.tensor([[0.0, 0.0, 50.0, 50.0]]), proposal)  # exp(50) would overflow
    assert torch.allclose(decoded, torch.tensor([[-15.0, -15.0, 25.0, 25.0]]))  # 4 x the size, same centre
    assert torch.isfinite(BoxCoder().decode(torch.full((1, 4), 1e4), proposal)).all()


def test_agrees_with_torchvision_box_coder():
    g = torch.Generator().manual_seed(3)
    ours, theirs = BoxCoder(), TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0))
    boxes, proposals = random_boxes(50, g), random_boxes(50, g)
    assert torch.allclose(ours.encode(boxes, proposals), theirs.encode_single(boxes, proposals), atol=1e-5)
    deltas = torch.randn(50, 8, generator=g)
    assert torch.allclose(
        ours.decode(deltas, proposals), theirs.decode_single(deltas, proposals).reshape(50, 8), atol=1e-4
    )


def test_empty_inputs_keep_their_shape():
    coder = BoxCoder()
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 8)
