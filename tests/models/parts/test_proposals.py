import pytest
import torch

from models.parts.box_coding import BoxCoder
from models.parts.proposals import IGNORE, RoISampler, label_proposals, sample_rois

GT_BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
GT_LABELS = torch.tensor([2, 3])


def test_labels_by_iou_hand_made():
    proposals = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # the first object itself: IoU 1
            [0.0, 0.0, 10.0, 20.0],  # IoU 100 / 200 = 0.5 exactly: foreground
            [0.0, 0.0, 10.0, 21.0],  # IoU 100 / 210 < 0.5: background
            [20.0, 20.0, 40.0, 30.0],  # IoU 200 / 400 with the second object
            [2.0, 2.0, 40.0, 40.0],  # IoU 400 / 1444 = 0.28 with the second, 0.07 with the first
            [60.0, 60.0, 70.0, 70.0],  # touches nothing: IoU 0
        ]
    )
    labelled = label_proposals(proposals, GT_BOXES, GT_LABELS, fg_iou=0.5, bg_iou=(0.0, 0.5))
    assert labelled.labels.tolist() == [2, 2, 0, 3, 0, 0]
    assert torch.allclose(labelled.ious, torch.tensor([1.0, 0.5, 100 / 210, 0.5, 400 / 1444, 0.0]))
    assert torch.equal(labelled.matched_boxes[:4], GT_BOXES[[0, 0, 0, 1]])
    # Fast R-CNN's background in [0.1, 0.5): the proposal touching nothing is no longer used.
    fast = label_proposals(proposals, GT_BOXES, GT_LABELS, fg_iou=0.5, bg_iou=(0.1, 0.5))
    assert fast.labels.tolist() == [2, 2, 0, 3, 0, IGNORE]


def test_iou_between_background_and_foreground_is_ignored():
    proposals = torch.tensor([[0.0, 0.0, 10.0, 16.0]])  # IoU 0.625 with the first object
    assert label_proposals(proposals, GT_BOXES, GT_LABELS, fg_iou=0.7, bg_iou=(0.0, 0.3)).labels.tolist() == [IGNORE]


def test_image_without_objects_is_all_background():
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 30.0, 30.0]])
    empty = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    assert label_proposals(proposals, *empty, bg_iou=(0.0, 0.5)).labels.tolist() == [0, 0]
    assert label_proposals(proposals, *empty, bg_iou=(0.1, 0.5)).labels.tolist() == [IGNORE, IGNORE]


def test_sampling_takes_a_quarter_foreground():
    labels = torch.cat([torch.full((100,), 2), torch.zeros(300, dtype=torch.int64), torch.full((50,), IGNORE)])
    picked = sample_rois(labels, 64, 0.25, torch.Generator().manual_seed(0))
    assert len(picked) == 64 and len(set(picked.tolist())) == 64
    assert (labels[picked] > 0).sum() == 16 and (labels[picked] == 0).sum() == 48


def test_sampling_fills_with_background_when_foreground_is_short():
    labels = torch.cat([torch.full((5,), 1), torch.zeros(300, dtype=torch.int64)])
    picked = sample_rois(labels, 64, 0.25, torch.Generator().manual_seed(0))
    assert (labels[picked] > 0).sum() == 5 and (labels[picked] == 0).sum() == 59


def test_sampling_never_picks_ignored_and_never_pads():
    labels = torch.tensor([IGNORE, 1, IGNORE, 0, 0, IGNORE])
    picked = sample_rois(labels, 64, 0.25)
    assert sorted(picked.tolist()) == [1, 3, 4]


def test_sampling_is_reproducible_with_a_generator():
    labels = torch.randint(-1, 4, (500,), generator=torch.Generator().manual_seed(1))
    first = sample_rois(labels, 32, 0.25, torch.Generator().manual_seed(7))
    assert torch.equal(first, sample_rois(labels, 32, 0.25, torch.Generator().manual_seed(7)))


def test_sampler_adds_ground_truth_and_encodes_targets():
    torch.manual_seed(0)
    coder = BoxCoder()
    sampler = RoISampler(rois_per_image=8, positive_fraction=1.0, fg_iou=0.5, bg_iou=(0.0, 0.5), box_coder=coder)
    proposals = [torch.tensor([[1.0, 1.0, 11.0, 12.0], [50.0, 50.0, 60.0, 60.0]])]  # one positive, one background
    rois = sampler(proposals, [{"boxes": GT_BOXES, "labels": GT_LABELS}])
    boxes = rois.boxes[0]
    # Every object is among the regions (added as the papers do), with its own class and zero deltas.
    for gt, label in zip(GT_BOXES, GT_LABELS):
        row = torch.where((boxes == gt).all(dim=1))[0]
        assert len(row) == 1 and rois.labels[row].item() == label
        assert torch.allclose(rois.regression_targets[row], torch.zeros(4))
    assert sorted(rois.labels.tolist()) == [0, 2, 2, 3]
    # Targets decode back onto the matched object.
    foreground = rois.labels > 0
    decoded = coder.decode(rois.regression_targets[foreground], boxes[foreground])
    matched = GT_BOXES[(rois.labels[foreground] == 3).long()]
    assert torch.allclose(decoded, matched, atol=1e-4)


def test_sampler_batches_images_in_order():
    sampler = RoISampler(rois_per_image=4, positive_fraction=0.25, bg_iou=(0.0, 0.5))
    proposals = [torch.tensor([[30.0, 30.0, 50.0, 50.0]] * 6), torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 6)]
    targets = [{"boxes": GT_BOXES[:1], "labels": GT_LABELS[:1]}, {"boxes": GT_BOXES[1:], "labels": GT_LABELS[1:]}]
    rois = sampler(proposals, targets)
    assert [len(b) for b in rois.boxes] == [4, 4]
    assert rois.labels.tolist() == [2, 0, 0, 0, 3, 0, 0, 0]  # foreground first within each image
    assert rois.regression_targets.shape == (8, 4) and rois.ious.shape == (8,)


def test_sampler_rejects_inconsistent_thresholds():
    with pytest.raises(ValueError):
        RoISampler(fg_iou=0.5, bg_iou=(0.1, 0.6))
