import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align, roi_pool

from models.parts.box_coding import BoxCoder
from models.parts.roi_heads import FastRCNNHead, RoIPooler, fast_rcnn_loss, postprocess_detections

BOXES = [torch.tensor([[16.0, 16.0, 48.0, 48.0], [0.0, 8.0, 100.0, 60.0]]), torch.tensor([[30.5, 2.0, 41.0, 70.0]])]


def rois_with_batch_index(boxes: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])


def test_roi_pool_equals_torchvision():
    features = torch.randn(2, 5, 16, 16)  # a stride-8 map of 128 px images
    ours = RoIPooler(7, 1 / 8, "pool")(features, BOXES)
    assert torch.equal(ours, roi_pool(features, rois_with_batch_index(BOXES), 7, 1 / 8))


def test_roi_align_equals_torchvision():
    features = torch.randn(2, 5, 16, 16)
    ours = RoIPooler(7, 1 / 8, "align", sampling_ratio=2)(features, BOXES)
    expected = roi_align(features, rois_with_batch_index(BOXES), 7, 1 / 8, sampling_ratio=2, aligned=True)
    assert torch.equal(ours, expected)


def test_spatial_scale_maps_image_pixels_to_feature_cells():
    # Feature value = its column: the box [16, 48) px of a stride-8 map covers columns 2..6.
    features = torch.arange(16.0).expand(1, 1, 16, 16).contiguous()
    pooled = RoIPooler(7, 1 / 8, "pool")(features, [torch.tensor([[16.0, 16.0, 48.0, 48.0]])])
    assert pooled.shape == (1, 1, 7, 7)
    assert pooled.min() == 2 and pooled.max() == 6
    # 5 cells into 7 bins of 5/7 cell: bin i spans cells floor(5i/7) .. ceil(5(i+1)/7) - 1 (Sec. 2.1), max of each
    assert torch.equal(pooled[0, 0, 0], torch.tensor([2.0, 3, 4, 4, 5, 6, 6]))


def test_head_outputs_scores_and_class_specific_deltas():
    torch.manual_seed(0)
    head = FastRCNNHead(
        in_channels=5, num_classes_with_background=4, roi_pooler=RoIPooler(7, 1 / 8), representation_size=32
    )
    logits, deltas = head(torch.randn(2, 5, 16, 16), BOXES)
    assert logits.shape == (3, 4) and deltas.shape == (3, 16)


def test_loss_is_cross_entropy_plus_smooth_l1_of_the_true_class():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2, 1])
    targets = torch.tensor([[9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]])
    deltas = torch.full((3, 12), 100.0)  # every other class's deltas are far off: they must not count
    deltas[1, 8:12] = torch.tensor([0.5, 0.0, -2.0, 0.0])  # class 2: |d| 0.5 -> 0.125, 2 -> 1.5
    deltas[2, 4:8] = torch.tensor([1.0, -1.0, 0.0, 0.0])  # class 1: exact
    losses = fast_rcnn_loss(logits, deltas, labels, targets)
    assert losses["loss_classifier"].item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert losses["loss_box_reg"].item() == pytest.approx((0.125 + 1.5) / 3)  # summed, averaged over 3 RoIs


def test_box_labels_choose_which_rois_regress():
    logits, labels = torch.zeros(2, 3), torch.tensor([1, 2])
    deltas, targets = torch.zeros(2, 12), torch.ones(2, 4)
    losses = fast_rcnn_loss(logits, deltas, labels, targets, box_labels=torch.tensor([0, 2]))
    assert losses["loss_box_reg"].item() == pytest.approx(4 * 0.5 / 2)  # one RoI, 4 coordinates of |d| = 1


def test_loss_without_rois_is_zero_and_differentiable():
    logits, deltas = torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 12, requires_grad=True)
    losses = fast_rcnn_loss(logits, deltas, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))
    total = sum(losses.values())
    total.backward()
    assert total.item() == 0.0


def test_regression_targets_round_trip_through_the_decoding():
    coder = BoxCoder()
    proposals = torch.tensor([[10.0, 12.0, 40.0, 50.0], [60.0, 60.0, 90.0, 100.0]])
    objects = torch.tensor([[14.0, 10.0, 44.0, 46.0], [55.0, 62.0, 95.0, 99.0]])
    classes = [2, 1]
    deltas = torch.zeros(2, 12)
    for i, c in enumerate(classes):
        deltas[i, 4 * c : 4 * c + 4] = coder.encode(objects[i : i + 1], proposals[i : i + 1])[0]
    scores = torch.zeros(2, 3)
    scores[0, 2], scores[1, 1] = 0.9, 0.8
    detections = postprocess_detections(scores, deltas, proposals, (128, 128), coder, score_thresh=0.5)
    assert detections["labels"].tolist() == [2, 1]
    assert torch.allclose(detections["boxes"], objects, atol=1e-4)
    assert torch.allclose(detections["scores"], torch.tensor([0.9, 0.8]))


def test_decoding_clips_thresholds_and_suppresses_per_class():
    coder = BoxCoder()
    proposals = torch.tensor([[0.0, 0.0, 20.0, 20.0], [1.0, 1.0, 21.0, 21.0], [100.0, 100.0, 140.0, 140.0]])
    scores = torch.tensor([[0.0, 0.9, 0.6], [0.0, 0.8, 0.01], [0.0, 0.7, 0.0]])
    detections = postprocess_detections(scores, torch.zeros(3, 12), proposals, (120, 130), coder, 0.05, 0.3)
    # Class 1: the second box overlaps the first (IoU 0.82) and goes; class 2 keeps its own copy.
    assert detections["labels"].tolist() == [1, 1, 2]
    assert detections["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert detections["boxes"][1].tolist() == [100.0, 100.0, 130.0, 120.0]  # clipped to W 130, H 120
    capped = postprocess_detections(
        scores, torch.zeros(3, 12), proposals, (120, 130), coder, 0.05, 0.3, detections_per_img=2
    )
    assert capped["scores"].tolist() == pytest.approx([0.9, 0.7])


def test_rejects_unknown_pooler_kind():
    with pytest.raises(ValueError, match="pool"):
        RoIPooler(kind="warp")
