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


def to_devkit(boxes):
    """Continuous xyxy -> devkit pixel indices (the inverse of the VOC reader's conversion)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, :2] += 1
    return b.tolist()


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
    rank1 = DetectionMetrics(
        class_names=["a", "b", "c", "d"], dist_sync_fn=world.record, distributed_available_fn=lambda: True
    )
    rank1.update(p1[:7], t1[:7])
    rank1.update(p1[7:], t1[7:])
    rank1.sync(dist_sync_fn=world.record)
    rank0 = DetectionMetrics(
        class_names=["a", "b", "c", "d"], dist_sync_fn=world.gather, distributed_available_fn=lambda: True
    )
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
    expected_keys = {
        f"coco/{k}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    }
    expected_keys |= {"voc07/mAP", "voc/mAP", "lecture/mAP"}
    expected_keys |= {f"{p}/AP/{n}" for p in ("voc07", "voc") for n in ("cat", "dog", "cow")}
    assert set(out) == expected_keys
    for label, name in enumerate(["cat", "dog", "cow"], start=1):
        gts = []
        for t in targets:
            sel = (t["labels"] == label).numpy()
            # the devkit reference reads pixel indices (+1): continuous (x1, y1, x2, y2) is (x1 + 1, y1 + 1, x2, y2)
            # there; crowd acts as difficult
            gts.append(
                {"boxes": to_devkit(t["boxes"].numpy()[sel]), "difficult": (t["iscrowd"].numpy()[sel] != 0).tolist()}
            )
        dets = []
        for i, p in enumerate(preds):
            sel = (p["labels"] == label).numpy()
            dets += [(i, s, b) for s, b in zip(p["scores"].numpy()[sel].tolist(), to_devkit(p["boxes"].numpy()[sel]))]
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
        m.update(
            [{"boxes": torch.zeros(1, 4), "labels": torch.ones(1, dtype=torch.int64)}],
            [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}],
        )
    with pytest.raises(ValueError, match="protocol"):
        DetectionMetrics(protocols=("voc12",))
    with pytest.raises(ValueError, match="masks"):
        DetectionMetrics(iou_type="segm").update(
            [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}],
            [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}],
        )


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


def _one(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float64),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_continuous_boxes_get_no_extra_pixel():
    # issue 13.6: an 8x8 box shifted by (1, 2) has IoU 0.488 < 0.5; with the +1 it was 0.528 (a TP)
    target = {"boxes": torch.tensor([[0.0, 0, 8, 8]]), "labels": torch.tensor([1])}
    m = DetectionMetrics(protocols=("voc07", "voc", "lecture"))
    m.update([_one([[1, 2, 9, 10]], [0.9], [1])], [target])
    out = m.compute()
    assert out["voc/mAP"] == 0.0 and out["voc07/mAP"] == 0.0 and out["lecture/mAP"] == 0.0
    assert m.pr_curves()["1"]["ap"] == 0.0
    m = DetectionMetrics(protocols=("voc", "lecture"), iou_threshold=0.48)
    m.update([_one([[1, 2, 9, 10]], [0.9], [1])], [target])
    assert m.compute()["voc/mAP"] == 1.0 and m.compute()["lecture/mAP"] == 1.0


def test_voc07_grid_option():
    gt_boxes = [[20.0 * k, 0, 20.0 * k + 10, 10] for k in range(10)]
    pred = _one(
        [gt_boxes[0], gt_boxes[1], gt_boxes[2], [500, 500, 510, 510], gt_boxes[3]], [0.9, 0.8, 0.7, 0.6, 0.5], [1] * 5
    )
    target = {"boxes": torch.tensor(gt_boxes), "labels": torch.ones(10, dtype=torch.int64)}
    for grid, expected in (("devkit", 4.6 / 11), ("tenths", 4.8 / 11)):
        m = DetectionMetrics(protocols=("voc07",), voc07_grid=grid)
        m.update([pred], [target])
        assert m.compute()["voc07/mAP"] == pytest.approx(expected, abs=1e-12)
        assert m.pr_curves()["1"]["recall_11"][3] == (0.30000000000000004 if grid == "devkit" else 0.3)
    with pytest.raises(ValueError, match="eleven_point_grid"):
        DetectionMetrics(voc07_grid="numpy")


def _pycoco_eval(gt, dt, iou_type="bbox", cat_ids=None, **params):
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = copy.deepcopy(gt)
        g.createIndex()
        ev = COCOeval(g, g.loadRes(copy.deepcopy(dt)), iou_type)
        for k, v in params.items():
            setattr(ev.params, k, v)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_coco_settings_match_pycocotools(backend):
    gt, dt = random_coco_case(11, n_images=25, n_classes=3)
    preds, targets = coco_to_torchvision(gt, dt)
    iou_thrs, rec_thrs, max_dets = [0.5, 0.6, 0.75], np.linspace(0, 1, 21).tolist(), [1, 3, 100]
    m = DetectionMetrics(
        protocols=("coco",),
        coco_backend=backend,
        iou_thresholds=iou_thrs,
        rec_thresholds=rec_thrs,
        max_detection_thresholds=max_dets,
    )
    m.update(preds, targets)
    out = m.compute()
    ev = _pycoco_eval(gt, dt, iouThrs=np.array(iou_thrs), recThrs=np.array(rec_thrs), maxDets=max_dets)
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR3", "AR100", "ARs", "ARm", "ARl")
    assert set(out) == {f"coco/{n}" for n in names}
    np.testing.assert_allclose([out[f"coco/{n}"] for n in names], ev.stats[:12], rtol=0, atol=1e-12)
    # pycocotools' summarize fixes AP at 100 detections; faster-coco-eval (and we) use the last value
    from faster_coco_eval import COCO, COCOeval_faster

    m2 = DetectionMetrics(
        protocols=("coco",), coco_backend=backend, iou_thresholds=[0.55, 0.95], max_detection_thresholds=[2, 5, 7]
    )
    m2.update(preds, targets)
    out2 = m2.compute()
    import contextlib
    import copy
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(copy.deepcopy(gt))
        ev2 = COCOeval_faster(g, g.loadRes(copy.deepcopy(dt)), "bbox", print_function=lambda *a, **k: None)
        ev2.params.iouThrs = np.array([0.55, 0.95])
        ev2.params.maxDets = [2, 5, 7]
        ev2.evaluate()
        ev2.accumulate()
        ev2.summarize()
    names2 = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR2", "AR5", "AR7", "ARs", "ARm", "ARl")
    np.testing.assert_allclose([out2[f"coco/{n}"] for n in names2], ev2.stats[:12], rtol=0, atol=1e-12)
    assert out2["coco/AP50"] == -1.0 and out2["coco/AP75"] == -1.0  # not IoU thresholds here
    with pytest.raises(ValueError, match="max_detection_thresholds"):
        DetectionMetrics(max_detection_thresholds=[10, 1])
    with pytest.raises(ValueError, match="iou_thresholds"):
        DetectionMetrics(iou_thresholds=[0.5, 1.5])


def test_class_metrics_match_pycocotools_per_category():
    gt, dt = random_coco_case(12, n_images=25, n_classes=3)
    preds, targets = coco_to_torchvision(gt, dt)
    m = DetectionMetrics(
        protocols=("coco",), class_metrics=True, class_names=["cat", "dog", "cow"], coco_backend="pycocotools"
    )
    m.update(preds, targets)
    out = m.compute()
    for cat, name in ((1, "cat"), (2, "dog"), (3, "cow")):
        ev = _pycoco_eval(gt, dt, cat_ids=[cat])
        assert out[f"coco/AP/{name}"] == pytest.approx(ev.stats[0], abs=1e-12)
        assert out[f"coco/AR100/{name}"] == pytest.approx(ev.stats[8], abs=1e-12)
    assert out["coco/AP"] == pytest.approx(_pycoco_eval(gt, dt).stats[0], abs=1e-12)


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_format(fmt):
    from torchvision.ops import box_convert

    gt, dt = random_coco_case(13, n_images=12, n_classes=2)
    preds, targets = coco_to_torchvision(gt, dt)
    ref = DetectionMetrics()
    ref.update(preds, targets)
    conv = lambda ds: [{**d, "boxes": box_convert(d["boxes"], "xyxy", fmt)} for d in ds]  # noqa: E731
    m = DetectionMetrics(box_format=fmt)
    m.update(conv(preds), conv(targets))
    assert m.compute() == pytest.approx(ref.compute(), abs=1e-9)
    with pytest.raises(ValueError, match="box_format"):
        DetectionMetrics(box_format="yolo")


def test_class_names_label_zero():
    pred = _one([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1])
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 1])}
    m = DetectionMetrics(protocols=("voc",), class_names={0: "zero", 1: "one"})
    m.update([pred], [target])
    out = m.compute()
    assert out["voc/AP/zero"] == 1.0 and out["voc/AP/one"] == 1.0
    m = DetectionMetrics(protocols=("voc",), class_names=["one"])
    m.update([pred], [target])
    with pytest.raises(ValueError, match=r"label\(s\) \[0\] have no name"):
        m.compute()


def test_segmentation_ignore_index_inside_class_range_matches_torchmetrics():
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 9, 11), generator=g)
    pred = torch.randint(0, 4, (2, 9, 11), generator=g)
    m = SegmentationMetrics(num_classes=4, ignore_index=0)
    m.update(pred, target)
    out = m.compute()
    ref = MulticlassJaccardIndex(4, ignore_index=0, average="macro")
    ref.update(pred, target)
    assert out["mean_iou"] == pytest.approx(float(ref.compute()), abs=1e-6)
    assert out["iou/0"] == -1.0
    per = MulticlassJaccardIndex(4, ignore_index=0, average="none")
    per.update(pred, target)
    for c in (1, 2, 3):
        assert out[f"iou/{c}"] == pytest.approx(float(per.compute()[c]), abs=1e-6)
