import sys
from pathlib import Path

import pytest
import torch

from models.detection.rcnn import RCNN, svm_hinge_loss, svm_targets, warp_regions, with_context
from models.parts.image_ops import crop_windows
from models.registry import get_model

sys.path.insert(0, str(Path(__file__).parent))
from test_fast_rcnn import K, batch  # noqa: E402  (the same in-memory shapes images)


def small_model(tmp_path, **kwargs) -> RCNN:
    torch.manual_seed(0)
    defaults = dict(num_classes=K, proposal_cache_dir=str(tmp_path / "ss"), crop_size=32, representation_size=64)
    return RCNN(**{**defaults, **kwargs})


def test_registered_as_two_stage():
    assert get_model("rcnn").cls is RCNN and get_model("rcnn").family == "two_stage"


def test_warp_without_context_is_the_crop():
    image = torch.rand(3, 64, 96)
    boxes = torch.tensor([[8.0, 16.0, 40.0, 48.0], [10.0, 0.0, 74.0, 64.0]])
    assert torch.equal(warp_regions(image, boxes, 32, 0.0), crop_windows(image, boxes, 32))


def test_context_padding_dilates_the_box():
    # 4 px of context in a 32 px crop: the box fills the middle 24 px, so it is dilated by 32 / 24 about its centre.
    boxes = torch.tensor([[8.0, 16.0, 40.0, 48.0], [0.0, 0.0, 12.0, 24.0]])
    expected = torch.tensor([[24.0 - 64 / 3, 32.0 - 64 / 3, 24.0 + 64 / 3, 32.0 + 64 / 3], [-2.0, -4.0, 14.0, 28.0]])
    assert torch.allclose(with_context(boxes, 32, 4.0), expected)
    assert torch.equal(with_context(boxes, 32, 0.0), boxes)
    image = torch.rand(3, 64, 96)
    assert torch.equal(warp_regions(image, boxes, 32, 4.0), crop_windows(image, with_context(boxes, 32, 4.0), 32))


def test_context_outside_the_image_is_the_mean():
    image = torch.ones(3, 32, 32)  # a normalised image is 0 at the mean
    warped = warp_regions(image, torch.tensor([[0.0, 0.0, 32.0, 32.0]]), 32, 8.0)
    assert warped[0, :, 16, 16].eq(1).all() and warped[0, :, 0, 0].eq(0).all()


def test_default_context_is_the_papers_16_of_227():
    assert small_model(Path("/nonexistent"), crop_size=64).context_padding == pytest.approx(16 * 64 / 227)


def test_every_region_is_its_own_cnn_input(tmp_path):
    model = small_model(tmp_path).eval()
    inputs = []
    model.cnn.body.register_forward_hook(lambda m, i, o: inputs.append(tuple(i[0].shape)))
    image = batch()[0][0]
    proposals = model.selective_search(image)
    with torch.no_grad():
        model([image], proposals=[proposals])
    assert inputs == [(len(proposals), 3, 32, 32)]  # one warped crop per proposal: nothing shared


def test_train_forward_returns_losses(tmp_path):
    model = small_model(tmp_path).train()
    losses = model(*batch())
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())


def test_eval_forward_returns_detections_in_the_image(tmp_path):
    model = small_model(tmp_path).eval()
    images = [batch()[0][0], torch.rand(3, 80, 100)]
    with torch.no_grad():
        detections = model(images)
    for image, d in zip(images, detections):
        assert set(d) == {"boxes", "labels", "scores"} and len(d["scores"]) > 0
        assert ((d["labels"] >= 1) & (d["labels"] <= K)).all() and d["labels"].dtype == torch.int64
        height, width = image.shape[-2:]
        assert (d["boxes"][:, :2] >= 0).all()
        assert (d["boxes"][:, 2] <= width).all() and (d["boxes"][:, 3] <= height).all()


def test_stage_times(tmp_path):
    model = small_model(tmp_path).eval()
    model.stage_timer.enabled = True
    with torch.no_grad():
        model(batch()[0][:1])
    assert set(model.stage_times_ms()) == {"proposals", "per_region_cnn", "classify_regress", "nms"}


def test_svm_targets_hand_made():
    gt_boxes, gt_labels = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]]), torch.tensor([1, 3])
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # the class-1 object itself
            [0.0, 0.0, 10.0, 20.0],  # IoU 0.5 with it: neither positive nor negative for class 1
            [20.0, 20.0, 40.0, 25.0],  # IoU 0.25 with the class-3 object: a negative for every class
        ]
    )
    targets = svm_targets(boxes, gt_boxes, gt_labels, num_classes=3, positive_iou=1.0, negative_iou=0.3)
    assert targets.tolist() == [[1, -1, -1], [0, -1, -1], [-1, -1, -1]]


def test_svm_hinge_loss_counts_only_targets():
    scores = torch.tensor([[2.0, 0.5, -3.0]])
    targets = torch.tensor([[1.0, 0.0, -1.0]])  # margins 2 and 3 met: no loss
    assert svm_hinge_loss(scores, targets).item() == 0.0
    assert svm_hinge_loss(torch.tensor([[0.5, 9.0, 0.5]]), targets).item() == pytest.approx(0.5 + 1.5)


def test_svm_hinge_loss_weighs_positives_as_much_as_negatives():
    scores = torch.tensor([[0.0, -1.0, -1.0, -1.0, 1.0]])  # one positive at 0 (hinge 1); negatives: 0, 0, 0, 2
    targets = torch.tensor([[1.0, -1.0, -1.0, -1.0, -1.0]])
    assert svm_hinge_loss(scores, targets).item() == pytest.approx(1.0 + 2.0 / 4)
    assert svm_hinge_loss(scores[:, 1:], targets[:, 1:]).item() == pytest.approx(2.0 / 4)  # no positive: negatives only


def test_svms_learn_on_detached_features(tmp_path):
    model = small_model(tmp_path, classifier="svm").train()
    losses = model(*batch())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_svm"}
    losses["loss_svm"].backward()
    assert model.svm.weight.grad is not None
    assert all(p.grad is None for p in model.cnn.parameters())  # the SVMs leave the fine-tuned CNN alone
    model.eval()
    with torch.no_grad():
        d = model(batch()[0][:1])[0]
    assert ((d["scores"] > 0) & (d["scores"] < 1)).all()


def test_box_regression_only_from_close_regions(tmp_path):
    model = small_model(tmp_path, bbox_reg_iou=1.01).train()  # no region qualifies
    assert model(*batch())["loss_box_reg"].item() == 0.0
