import numpy as np
import pytest
import torch

from metrics.torchmetrics_wrappers import DetectionMetrics, SegmentationMetrics
from metrics_testutils import coco_to_torchvision, devkit_reference, random_coco_case


class FakeWorld:
    """Two-rank all_gather stand-in: rank 0 sees its own tensor followed by rank 1's, in the order
    torchmetrics gathers the states (recorded from rank 1 first)."""

    def __init__(self):
        self.recorded = []
        self.cursor = 0

    def record(self, tensor, group=None):
        self.recorded.append(tensor.clone())
        return [tensor]

    def gather(self, tensor, group=None):
        other = self.recorded[self.cursor]
        self.cursor += 1
        return [tensor, other]


def _split(preds, targets):
    return (preds[::2], targets[::2]), (preds[1::2], targets[1::2])


def test_ddp_gather_keeps_per_image_grouping_and_matches_single_process():
    gt, dt = random_coco_case(3, n_images=30)
    preds, targets = coco_to_torchvision(gt, dt)
    for t in targets:
        del t["image_id"]  # grouping must not rely on ids
    single = DetectionMetrics(class_names=["a", "b", "c", "d"])
    (p0, t0), (p1, t1) = _split(preds, targets)
    single.update(p0, t0)
    single.update(p1, t1)
    expected = single.compute()

    world = FakeWorld()
    rank1 = DetectionMetrics(class_names=["a", "b", "c", "d"], dist_sync_fn=world.record, distributed_available_fn=lambda: True)
    rank1.update(p1[:7], t1[:7])
    rank1.update(p1[7:], t1[7:])
    rank1.sync(dist_sync_fn=world.record)
    rank0 = DetectionMetrics(class_names=["a", "b", "c", "d"], dist_sync_fn=world.gather, distributed_available_fn=lambda: True)
    rank0.update(p0, t0)
    got = rank0.compute()
    assert world.cursor == len(world.recorded) > 0  # every state went through the gather
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], abs=1e-12), k
    # compute() unsyncs: local state is intact, a second compute is not double counted
    assert int(torch.cat(rank0.img_ndet).numel()) == len(p0)


def test_ddp_rank_without_data_and_duplicate_padding_images():
    gt, dt = random_coco_case(4, n_images=10)
    preds, targets = coco_to_torchvision(gt, dt)
    ref = DetectionMetrics()
    ref.update(preds, targets)
    expected = ref.compute()
    world = FakeWorld()
    empty = DetectionMetrics(dist_sync_fn=world.record, distributed_available_fn=lambda: True)
    empty.sync(dist_sync_fn=world.record)
    rank0 = DetectionMetrics(dist_sync_fn=world.gather, distributed_available_fn=lambda: True)
    rank0.update(preds, targets)
    got = rank0.compute()
    assert all(got[k] == pytest.approx(expected[k], abs=1e-12) for k in expected)
    # DistributedSampler padding repeats images: with image_id they are evaluated once
    dup = DetectionMetrics()
    dup.update(preds, targets)
    dup.update(preds[:3], targets[:3])
    assert dup.compute() == pytest.approx(expected, abs=1e-12)


def test_keys_and_voc_per_class_match_loop_devkit():
    gt, dt = random_coco_case(8, n_images=25, n_classes=3)
    preds, targets = coco_to_torchvision(gt, dt)
    m = DetectionMetrics(class_names=["cat", "dog", "cow"])
    m.update(preds, targets)
    out = m.compute()
    expected_keys = {f"coco/{k}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")}
    expected_keys |= {"voc07/mAP", "voc/mAP", "lecture/mAP"}
    expected_keys |= {f"{p}/AP/{n}" for p in ("voc07", "voc") for n in ("cat", "dog", "cow")}
    assert set(out) == expected_keys
    for label, name in enumerate(["cat", "dog", "cow"], start=1):
        gts = []
        for t in targets:
            sel = (t["labels"] == label).numpy()
            # devkit reference with +1 pixels on xyxy boxes; crowd acts as difficult
            gts.append({"boxes": t["boxes"].numpy()[sel].tolist(), "difficult": (t["iscrowd"].numpy()[sel] != 0).tolist()})
        dets = []
        for i, p in enumerate(preds):
            sel = (p["labels"] == label).numpy()
            dets += [(i, s, b) for s, b in zip(p["scores"].numpy()[sel].tolist(), p["boxes"].numpy()[sel].tolist())]
        ap, ap11, npos = devkit_reference(gts, dets)
        assert npos > 0
        assert out[f"voc/AP/{name}"] == pytest.approx(ap, abs=1e-12)
        assert out[f"voc07/AP/{name}"] == pytest.approx(ap11, abs=1e-12)
    assert out["voc/mAP"] == pytest.approx(np.mean([out[f"voc/AP/{n}"] for n in ("cat", "dog", "cow")]))
    curves = m.pr_curves()
    assert set(curves) == {"cat", "dog", "cow"}
    assert len(curves["cat"]["precision_11"]) == 11
    assert curves["cat"]["ap07"] == pytest.approx(out["voc07/AP/cat"])


def test_bad_inputs_raise():
    m = DetectionMetrics()
    with pytest.raises(ValueError, match="scores"):
        m.update([{"boxes": torch.zeros(1, 4), "labels": torch.ones(1, dtype=torch.int64)}],
                 [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="protocol"):
        DetectionMetrics(protocols=("voc12",))
    with pytest.raises(ValueError, match="masks"):
        DetectionMetrics(iou_type="segm").update(
            [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}],
            [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])


def test_segmentation_metric_hand_values_and_ddp_sum():
    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 2, 0, 0]]])
    m = SegmentationMetrics(num_classes=4)
    m.update(pred, target)
    out = m.compute()
    # confusion (rows GT): class 0: 2 right, 1 as 1; class 1: 2 right; class 2: 1 right, 1 as 0
    assert out["pixel_accuracy"] == pytest.approx(5 / 7)
    assert out["mean_pixel_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert out["iou/0"] == pytest.approx(2 / 4)  # TP 2, FN 1, FP 1
    assert out["iou/1"] == pytest.approx(2 / 3)  # TP 2, FP 1
    assert out["iou/2"] == pytest.approx(1 / 2)  # TP 1, FN 1
    assert out["iou/3"] == -1.0  # absent from GT and prediction: undefined, left out of the mean
    assert out["mean_iou"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert out["mean_dice"] == pytest.approx((4 / 6 + 4 / 5 + 2 / 3) / 3)
    # logits give the same result
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    m2 = SegmentationMetrics(num_classes=4)
    m2.update(logits, target)
    assert m2.compute() == out
    # DDP: summed confusion matrices
    world = FakeWorld()
    r1 = SegmentationMetrics(num_classes=4, dist_sync_fn=world.record, distributed_available_fn=lambda: True)
    r1.update(pred, target)
    r1.sync(dist_sync_fn=world.record)
    r0 = SegmentationMetrics(num_classes=4, dist_sync_fn=world.gather, distributed_available_fn=lambda: True)
    r0.update(pred, target)
    assert r0.compute() == pytest.approx(out)
    assert int(r0.confmat.sum()) == 7  # unsynced again after compute
