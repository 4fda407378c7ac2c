import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from models.detection.retinanet import ClassificationSubnet, RetinaNet

K = 3


def test_anchor_matching_thresholds_and_low_quality_matches():
    matcher = RetinaNet(num_classes=K).detector.proposal_matcher
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # exactly the first box
            [0.0, 0.0, 20.0, 20.0],  # IoU 0.25: background
            [0.0, 0.0, 10.0, 14.0],  # IoU 100 / 140 = 0.71: positive
            [0.0, 0.0, 10.0, 22.0],  # IoU 100 / 220 = 0.45: between 0.4 and 0.5, ignored
            [50.0, 50.0, 60.0, 60.0],  # best anchor of the second box, IoU 0.21
        ]
    )
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [48.0, 48.0, 70.0, 70.0]])
    matched = matcher(box_iou(gt, anchors))
    assert matched.tolist()[:4] == [0, -1, 0, -2]
    assert matched[4] == 1  # low-quality match: a box's best anchor is positive whatever its IoU


def test_classification_starts_at_the_prior_probability():
    model = RetinaNet(num_classes=K)
    features = list(model.detector.backbone(torch.rand(1, 3, 128, 128)).values())
    probabilities = model.detector.head.classification_head(features).sigmoid()
    assert torch.allclose(probabilities.mean(), torch.tensor(0.01), rtol=0.05)


def test_focal_and_ce_classification_losses_hand_computed():
    focal = ClassificationSubnet(8, 1, 2, loss="focal")
    ce = ClassificationSubnet(8, 1, 2, loss="ce")
    logits = torch.zeros(1, 4, 2)  # 4 anchors, 2 classes, p = 0.5 everywhere
    matched = [torch.tensor([0, -1, -2, -1])]  # anchor 0 positive (class 1), anchor 2 ignored
    targets = [{"labels": torch.tensor([1])}]
    log2 = math.log(2)
    # 6 valid terms (3 anchors x 2 classes), one positive; divided by 1 positive anchor
    expected_ce = 6 * log2
    expected_focal = 0.25 * 0.25 * log2 + 5 * 0.75 * 0.25 * log2  # alpha_t (1 - p_t)^2 log 2
    assert torch.allclose(ce.compute_loss(targets, {"cls_logits": logits}, matched), torch.tensor(expected_ce))
    assert torch.allclose(focal.compute_loss(targets, {"cls_logits": logits}, matched), torch.tensor(expected_focal))
    with pytest.raises(ValueError, match="focal"):
        ClassificationSubnet(8, 1, 2, loss="softmax")


def test_ce_ablation_weighs_easy_negatives_far_more_than_focal():
    # many confident (easy) negatives and one hard positive, as in a dense detector
    logits = torch.full((1, 1000, 1), -4.0)
    logits[0, 0, 0] = -1.0
    matched = [torch.cat([torch.zeros(1, dtype=torch.int64), torch.full((999,), -1)])]
    targets = [{"labels": torch.tensor([0])}]
    ce = ClassificationSubnet(8, 1, 1, loss="ce").compute_loss(targets, {"cls_logits": logits}, matched)
    focal = ClassificationSubnet(8, 1, 1, loss="focal").compute_loss(targets, {"cls_logits": logits}, matched)
    negatives_ce = 999 * F.softplus(torch.tensor(-4.0))
    assert ce > 0.9 * negatives_ce  # CE: the easy negatives make most of the loss (slide 64)
    assert focal < 0.1 * ce


@pytest.mark.parametrize(
    "options",
    [{}, {"fpn": False, "return_layers": ["c4"]}, {"loss": "ce", "box_loss": "giou"}],
    ids=["fpn_focal", "single_scale", "ce_giou"],
)
def test_forward_train_and_eval(options, targets_for):
    torch.manual_seed(0)
    model = RetinaNet(num_classes=K, **options)
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 96)]
    model.train()
    losses = model(images, targets_for(2, empty=(1,)))  # labels 1 and K: K maps to the last of the K sigmoids
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()

    model.eval()
    model.detector.score_thresh = 0.0  # untrained: scores are ~0.01, keep them to check the labels
    model.stage_timer.enabled = True
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    for p in predictions:
        assert 0 < len(p["boxes"]) <= 100
        assert ((p["labels"] >= 1) & (p["labels"] <= K)).all()
    assert set(predictions[0]["labels"].tolist()) == set(range(1, K + 1))
    assert set(model.stage_times_ms()) == {"backbone", "head", "decode_nms"}


def test_invalid_configurations():
    with pytest.raises(ValueError, match="one map"):
        RetinaNet(num_classes=K, fpn=False)
    with pytest.raises(ValueError, match="one anchor size per level"):
        RetinaNet(num_classes=K, anchor_sizes=(16, 32))


@pytest.mark.parametrize("p6_from", ["c5", "p5"])
def test_p6_is_a_strided_conv_on_c5_by_default(p6_from):
    """RetinaNet Sec. 4: P6 = 3x3 stride-2 conv on C5 (not P5), P7 = ReLU + 3x3 stride-2 conv on P6."""
    torch.manual_seed(0)
    kwargs = {} if p6_from == "c5" else {"p6_from": "p5"}
    model = RetinaNet(num_classes=K, fpn_extra="p6p7", anchor_sizes=(16, 32, 64, 128, 256), **kwargs).eval()
    backbone = model.detector.backbone
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        levels = backbone(images)
        c5 = backbone.body(images)["c5"]
        extra = backbone.fpn.extra_blocks
        source = c5 if p6_from == "c5" else levels["c5"]  # levels["c5"] is P5
        torch.testing.assert_close(levels["p6"], extra.p6(source))
        torch.testing.assert_close(levels["p7"], extra.p7(F.relu(extra.p6(source))))
    assert extra.p6.in_channels == (backbone.body.stage_channels["c5"] if p6_from == "c5" else 64)
    assert list(levels) == ["c3", "c4", "c5", "p6", "p7"] and backbone.strides == [8, 16, 32, 64, 128]
    with pytest.raises(ValueError, match="p6_from"):
        RetinaNet(num_classes=K, fpn_extra="p6p7", anchor_sizes=(16, 32, 64, 128, 256), p6_from="c4")


def test_p6_from_c5_also_when_c5_has_the_fpn_width():
    """torchvision's LastLevelP6P7 switches to P5 when the channel counts are equal; ours stays on C5."""
    torch.manual_seed(0)
    model = RetinaNet(num_classes=K, fpn_extra="p6p7", fpn_channels=128, anchor_sizes=(16, 32, 64, 128, 256)).eval()
    backbone = model.detector.backbone
    assert backbone.body.stage_channels["c5"] == 128
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(backbone(images)["p6"], backbone.fpn.extra_blocks.p6(backbone.body(images)["c5"]))
