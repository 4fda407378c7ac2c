import torch
import pytest
from hypothesis import given, settings, strategies as st

from metrics.boxes import box_iou, box_iou_numpy


def test_continuous_and_inclusive_hand_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    cont = box_iou(a, b)
    assert cont.shape == (1, 2)
    assert cont[0, 0].item() == pytest.approx(50 / 150)
    assert cont[0, 1].item() == 0.0
    inc = box_iou(a, b, convention="inclusive")
    # 11 x 11 boxes, overlap 6 x 11 = 66, union 121 + 121 - 66 = 176
    assert inc[0, 0].item() == pytest.approx(66 / 176)
    # single-pixel box: continuous area 0, inclusive area 1
    px = torch.tensor([[3.0, 3.0, 3.0, 3.0]])
    assert box_iou(px, px).item() == 0.0
    assert box_iou(px, px, convention="inclusive").item() == 1.0


def test_empty_inputs_and_bad_convention():
    assert box_iou(torch.zeros(0, 4), torch.ones(3, 4)).shape == (0, 3)
    assert box_iou_numpy(torch.zeros(2, 4).numpy(), torch.zeros(0, 4).numpy()).shape == (2, 0)
    with pytest.raises(ValueError, match="convention"):
        box_iou(torch.zeros(1, 4), torch.zeros(1, 4), convention="voc")


def test_matches_torchvision_continuous():
    import torchvision

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g) * 50
    a = torch.cat([xy, xy + torch.rand(30, 2, generator=g) * 40 + 0.5], 1).double()
    b = a[torch.randperm(30, generator=g)[:17]] + torch.rand(17, 4, generator=g).double()
    b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2] + 0.5)
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        torch.from_numpy(box_iou_numpy(a.numpy(), b.numpy(), "inclusive")),
        box_iou(a, b, "inclusive"),
        rtol=0,
        atol=1e-12,
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=8, max_size=8))
def test_inclusive_equals_shifted_continuous(v):
    a = torch.tensor([[min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])]], dtype=torch.float64)
    b = torch.tensor([[min(v[4], v[6]), min(v[5], v[7]), max(v[4], v[6]), max(v[5], v[7])]], dtype=torch.float64)
    grow = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    inc = box_iou(a, b, "inclusive")
    assert 0.0 <= inc.item() <= 1.0
    assert inc.item() == pytest.approx(box_iou(a + grow, b + grow).item(), abs=1e-12)
    assert box_iou(a, b, "inclusive").item() == pytest.approx(box_iou(b, a, "inclusive").item(), abs=1e-15)
