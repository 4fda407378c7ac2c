import math

import pytest
import torch
from torchvision.ops import box_iou

from models.detection.ssd import SSD

K = 3


def test_matching_forces_the_best_prior_then_thresholds_at_0_5():
    matcher = SSD(num_classes=K).detector.proposal_matcher
    priors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 20.0, 20.0],
            [50.0, 50.0, 60.0, 60.0],
            [100.0, 100.0, 120.0, 120.0],
            [1.0, 0.0, 11.0, 10.0],
        ]
    )
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [48.0, 48.0, 70.0, 70.0]])
    matched = matcher(box_iou(gt, priors))
    assert matched[0] == 0  # the box lies exactly on prior 0
    assert matched[4] == 0  # IoU 9 / 11 >= 0.5 with the first box
    assert matched[1] == -1 and matched[3] == -1  # IoU 0.25 and 0: background
    # the second box overlaps every prior by less than 0.5 (best: prior 2, IoU 100 / 484) but its best
    # prior is matched anyway (Sec. 2.2 "match each ground truth box to the default box with the best IoU")
    assert box_iou(gt[1:], priors).max() < 0.5
    assert matched[2] == 1


def test_hard_negative_mining_keeps_three_negatives_per_positive():
    model = SSD(num_classes=K)
    detector = model.detector
    num_priors = 20
    priors = torch.tensor([[i * 6.0, 0.0, i * 6.0 + 5.0, 5.0] for i in range(num_priors)])
    targets = [{"boxes": priors[[2, 7]].clone(), "labels": torch.tensor([1, 2])}]
    matched = [detector.proposal_matcher(box_iou(targets[0]["boxes"], priors))]
    assert (matched[0] >= 0).sum() == 2
    # uniform logits: every prior costs log(K + 1); 2 positives + 6 hardest negatives, divided by 2 positives
    head_outputs = {"cls_logits": torch.zeros(1, num_priors, K + 1), "bbox_regression": torch.zeros(1, num_priors, 4)}
    losses = detector.compute_loss(targets, head_outputs, [priors], matched)
    assert torch.allclose(losses["classification"], torch.tensor((2 + 6) * math.log(K + 1) / 2))
    assert torch.allclose(losses["bbox_regression"], torch.tensor(0.0))  # boxes exactly on their priors


def test_feature_maps_and_default_boxes_agree():
    model = SSD(num_classes=K)
    features = model.detector.backbone(torch.zeros(1, 3, 128, 128))
    assert [f.shape[-1] for f in features.values()] == [16, 8, 4, 2, 1]
    assert [f.shape[1] for f in features.values()] == model.detector.backbone.out_channels
    with pytest.raises(ValueError, match="one list per feature map"):
        SSD(num_classes=K, aspect_ratios=[[2], [2]])


def test_forward_train_and_eval(targets_for):
    torch.manual_seed(0)
    model = SSD(num_classes=K)
    images = [torch.rand(3, 128, 128), torch.rand(3, 100, 120)]
    model.train()
    losses = model(images, targets_for(2, empty=(1,)))
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.detector.backbone.extras[-1][0].weight.grad is not None

    model.eval()
    model.stage_timer.enabled = True
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    for p in predictions:
        assert len(p["boxes"]) <= 200
        assert ((p["labels"] >= 1) & (p["labels"] <= K)).all()
    assert (predictions[1]["boxes"][:, 2] <= 120).all() and (predictions[1]["boxes"][:, 3] <= 100).all()
    assert set(model.stage_times_ms()) == {"backbone", "head", "decode_nms"}
