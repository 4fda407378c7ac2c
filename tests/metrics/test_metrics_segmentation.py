import pytest
import torch

from metrics.segmentation import confusion_matrix, segmentation_scores


def test_confusion_matrix_matches_torchmetrics_and_ignores_255():
    from torchmetrics.functional.classification import multiclass_confusion_matrix, multiclass_jaccard_index

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 17, 19), generator=g)
    target[:, :2] = 255
    pred = torch.randint(0, 5, (3, 17, 19), generator=g)
    cm = confusion_matrix(pred, target, 5)
    ref = multiclass_confusion_matrix(pred, target, 5, ignore_index=255)
    assert torch.equal(cm, ref)
    assert int(cm.sum()) == int((target != 255).sum())
    miou = segmentation_scores(cm)["mean_iou"]
    assert miou == pytest.approx(
        float(multiclass_jaccard_index(pred, target, 5, ignore_index=255, average="macro")), abs=1e-6
    )
    # an ignore_index inside the class range takes the masking path
    cm0 = confusion_matrix(pred, target.clamp(max=4), 5, ignore_index=0)
    assert int(cm0[0].sum()) == 0 and int(cm0.sum()) == int((target.clamp(max=4) != 0).sum())


def test_absent_classes_left_out_and_mpa_over_gt_classes():
    # class 2 only predicted (no GT): counts in mIoU (IoU 0) but not in MPA; class 3 absent everywhere
    cm = torch.tensor([[3, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    s = segmentation_scores(cm)
    assert s["pixel_accuracy"] == pytest.approx(5 / 6)
    assert s["mean_pixel_accuracy"] == pytest.approx((3 / 4 + 1) / 2)
    assert s["mean_iou"] == pytest.approx((3 / 4 + 1 + 0) / 3)
    assert s["mean_dice"] == pytest.approx((6 / 7 + 1 + 0) / 3)
    assert torch.isnan(s["iou"][3]) and s["iou"][2] == 0
    assert s["precision"][0] == pytest.approx(1.0) and s["recall"][0] == pytest.approx(0.75)
    assert torch.allclose(s["f1"], s["dice"], equal_nan=True)


def test_invalid_labels_raise_clear_errors():
    t = torch.tensor([[0, 1, 7]])
    with pytest.raises(ValueError, match="label 7"):
        confusion_matrix(torch.tensor([[0, 1, 1]]), t, 3)
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(torch.tensor([[0, 1, 3]]), torch.tensor([[0, 1, 1]]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="negative"):
        confusion_matrix(torch.tensor([[0]]), torch.tensor([[-1]]), 3)
