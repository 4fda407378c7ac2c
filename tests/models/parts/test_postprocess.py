import pytest
import torch
from torchvision.ops import box_iou

from models.parts.postprocess import class_candidates, select_detections

BOXES = torch.tensor(
    [[0.0, 0.0, 20.0, 20.0], [1.0, 1.0, 21.0, 21.0], [100.0, 100.0, 140.0, 140.0], [50.0, 50.0, 50.5, 60.0]]
)


def test_candidates_pair_every_box_with_every_class():
    scores = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    boxes, flat, labels = class_candidates(BOXES[:2], scores)
    assert labels.tolist() == [1, 2, 3, 1, 2, 3] and flat.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert torch.equal(boxes, BOXES[:2].repeat_interleave(3, dim=0))


def test_candidates_take_class_specific_boxes():
    per_class = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    boxes, _, labels = class_candidates(per_class, torch.rand(2, 3))
    assert torch.equal(boxes[4], per_class[1, 1]) and labels[4] == 2


def test_candidates_below_the_threshold_are_never_built():
    scores = torch.tensor([[0.1, 0.7, 0.3], [0.9, 0.05, 0.6]])
    boxes, flat, labels = class_candidates(BOXES[:2], scores, score_thresh=0.5)
    assert labels.tolist() == [2, 1, 3] and flat.tolist() == pytest.approx([0.7, 0.9, 0.6])  # box-major
    assert torch.equal(boxes, BOXES[[0, 1, 1]])
    per_class = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    boxes, _, labels = class_candidates(per_class, scores, score_thresh=0.5)
    assert torch.equal(boxes, per_class[[0, 1, 1], [1, 0, 2]])


def test_threshold_nms_per_class_and_top_k():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([1, 1, 1, 2])
    kept = select_detections(BOXES, scores, labels, score_thresh=0.65, nms_thresh=0.5, max_detections=10)
    # the second box overlaps the first (IoU 0.82, same class) and goes; the fourth is under the threshold
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.7]) and kept["labels"].tolist() == [1, 1]
    other_class = select_detections(BOXES, scores, torch.tensor([1, 2, 1, 2]), 0.05, 0.5, 10)
    assert other_class["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])  # NMS never crosses classes
    assert select_detections(BOXES, scores, labels, 0.05, 0.5, 1)["scores"].tolist() == pytest.approx([0.9])


def test_clipping_and_small_boxes_only_when_asked():
    scores, labels = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 2, 3, 4])
    plain = select_detections(BOXES, scores, labels, 0.05, 0.5, 10)
    assert plain["boxes"][2].tolist() == [100.0, 100.0, 140.0, 140.0] and len(plain["boxes"]) == 4
    clipped = select_detections(BOXES, scores, labels, 0.05, 0.5, 10, image_size=(120, 130), min_size=1.0)
    assert clipped["boxes"][2].tolist() == [100.0, 100.0, 130.0, 120.0]  # W 130, H 120
    assert clipped["labels"].tolist() == [1, 2, 3]  # the 0.5 px wide box is dropped


def test_no_candidate_above_the_threshold_gives_empty_detections():
    kept = select_detections(BOXES, torch.full((4,), 0.01), torch.ones(4, dtype=torch.int64), 0.05, 0.5, 10, (64, 64))
    assert kept["boxes"].shape == (0, 4) and kept["scores"].shape == (0,) and kept["labels"].dtype == torch.int64


def test_survivors_of_one_class_overlap_less_than_the_threshold():
    torch.manual_seed(0)
    corners = torch.rand(200, 2) * 80
    boxes = torch.cat([corners, corners + 10 + torch.rand(200, 2) * 30], dim=1)
    kept = select_detections(boxes, torch.rand(200), torch.randint(1, 3, (200,)), 0.0, 0.3, 1000)
    for k in kept["labels"].unique():
        same = kept["boxes"][kept["labels"] == k]
        assert (box_iou(same, same).fill_diagonal_(0) <= 0.3 + 1e-6).all()
    assert (kept["scores"][:-1] >= kept["scores"][1:]).all()  # best first
