import json

import numpy as np
import pytest
import torch

from metrics.coco import COCO_STAT_NAMES, coco_evaluate
from metrics.torchmetrics_wrappers import DetectionMetrics
from metrics_testutils import coco_to_torchvision, pycocotools_stats, random_coco_case, require_coco_json

ATOL = 1e-6


def ours(metric: DetectionMetrics, prefix: str = "coco") -> np.ndarray:
    out = metric.compute()
    return np.array([out[f"{prefix}/{k}"] for k in COCO_STAT_NAMES])


def jittered_detections(gt: dict, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    dts = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(int(rng.integers(0, 3))):
            j = rng.normal(0, 0.1, 4) * [w, h, w, h]
            dts.append(
                {
                    "image_id": a["image_id"],
                    "category_id": a["category_id"] if rng.random() < 0.9 else int(rng.choice(cats)),
                    "bbox": [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)],
                    "score": float(np.round(rng.random(), 2)),
                }
            )
    for im in gt["images"][:-1]:  # the last image gets no extra detections
        for _ in range(5):
            w, h = rng.uniform(5, 200), rng.uniform(5, 200)
            dts.append(
                {
                    "image_id": im["id"],
                    "category_id": int(rng.choice(cats)),
                    "bbox": [rng.uniform(0, im["width"] - w), rng.uniform(0, im["height"] - h), w, h],
                    "score": float(np.round(rng.random(), 2)),
                }
            )
    return dts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bbox_random_cases_match_pycocotools(seed):
    gt, dt = random_coco_case(seed)
    ref = pycocotools_stats(gt, dt, "bbox")
    got = np.array([coco_evaluate(gt, dt, "bbox")[k] for k in COCO_STAT_NAMES])
    np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL)
    preds, targets = coco_to_torchvision(gt, dt)
    m = DetectionMetrics(protocols=("coco",))
    m.update(preds[:15], targets[:15])  # two batches
    m.update(preds[15:], targets[15:])
    np.testing.assert_allclose(ours(m), ref, rtol=0, atol=ATOL)


def test_edge_cases_no_detections_at_all_and_undefined_values():
    gt, _ = random_coco_case(5, n_images=6)
    ref = pycocotools_stats(gt, [], "bbox")
    got = np.array([coco_evaluate(gt, [], "bbox")[k] for k in COCO_STAT_NAMES])
    np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL)
    # no GT at all: everything is undefined (-1), as pycocotools reports it
    m = DetectionMetrics(protocols=("coco", "voc", "lecture"))
    m.update(
        [{"boxes": torch.tensor([[0.0, 0, 5, 5]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}],
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}],
    )
    out = m.compute()
    assert all(out[f"coco/{k}"] == -1.0 for k in COCO_STAT_NAMES)
    assert out["voc/mAP"] == -1.0 and out["lecture/mAP"] == -1.0


def test_real_coco_json_bbox_and_segm_match_pycocotools():
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    path = require_coco_json()
    gt = json.loads(path.read_text())
    dt = jittered_detections(gt, seed=0)
    ref_bbox = pycocotools_stats(gt, dt, "bbox")
    preds, targets = coco_to_torchvision(gt, dt)
    m = DetectionMetrics(protocols=("coco",))
    m.update(preds, targets)
    np.testing.assert_allclose(ours(m), ref_bbox, rtol=0, atol=ATOL)

    # segm: GT masks decoded from the json (polygons + 2 crowd RLE); detections are shifted GT masks
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    rng = np.random.default_rng(1)
    seg_dt = []
    index = {im["id"]: k for k, im in enumerate(gt["images"])}
    t_masks = [[] for _ in index]
    p_masks = [[] for _ in index]
    p_boxes = [[] for _ in index]
    p_scores = [[] for _ in index]
    p_labels = [[] for _ in index]
    for a in gt["annotations"]:
        gm = coco.annToMask(a)
        t_masks[index[a["image_id"]]].append(gm)
        if a["iscrowd"] or rng.random() < 0.2:
            continue
        dm = np.roll(gm, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
        rle = mask_utils.encode(np.asfortranarray(dm))
        score = float(np.round(rng.random(), 2))
        seg_dt.append({"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": rle, "score": score})
        k = index[a["image_id"]]
        p_masks[k].append(dm)
        x, y, w, h = mask_utils.toBbox(rle).tolist()
        p_boxes[k].append([x, y, x + w, y + h])
        p_scores[k].append(score)
        p_labels[k].append(a["category_id"])
    ref_segm = pycocotools_stats(gt, seg_dt, "segm")
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    seg_preds, seg_targets = [], []
    for im in gt["images"]:
        k = index[im["id"]]
        h, w = sizes[im["id"]]
        seg_targets.append(
            {
                **targets[k],
                "masks": torch.from_numpy(np.stack(t_masks[k]) if t_masks[k] else np.zeros((0, h, w), np.uint8)),
            }
        )
        seg_preds.append(
            {
                "boxes": torch.tensor(p_boxes[k], dtype=torch.float64).reshape(-1, 4),
                "scores": torch.tensor(p_scores[k], dtype=torch.float64),
                "labels": torch.tensor(p_labels[k], dtype=torch.int64),
                # probabilities, N x 1 x H x W, thresholded at 0.5 inside
                "masks": torch.from_numpy(
                    np.stack(p_masks[k])[:, None].astype(np.float32) * 0.8
                    if p_masks[k]
                    else np.zeros((0, 1, h, w), np.float32)
                ),
            }
        )
    ms = DetectionMetrics(protocols=("coco",), iou_type="segm")
    ms.update(seg_preds[:3], seg_targets[:3])
    ms.update(seg_preds[3:], seg_targets[3:])
    np.testing.assert_allclose(ours(ms, "coco_segm"), ref_segm, rtol=0, atol=ATOL)
    assert ref_segm[0] > 0.1  # the case is not degenerate


def test_segm_random_masks_with_crowd_and_ties():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(7)
    h, w = 48, 64
    images = [{"id": i + 1, "height": h, "width": w} for i in range(6)]
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    anns, dts, preds, targets = [], [], [], []
    for im in images:
        gms, gl, gc, pm, ps, pl = [], [], [], [], [], []
        for _ in range(int(rng.integers(0, 4)) if im["id"] != 1 else 0):  # image 1: empty
            m = np.zeros((h, w), np.uint8)
            y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
            m[y : y + rng.integers(5, 20), x : x + rng.integers(5, 25)] = 1
            c, crowd = int(rng.integers(1, 3)), int(rng.random() < 0.25)
            rle = mask_utils.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": c,
                    "segmentation": rle,
                    "area": float(m.sum()),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": crowd,
                }
            )
            gms.append(m), gl.append(c), gc.append(crowd)
            if im["id"] != 2:  # image 2: no predictions
                for _ in range(int(rng.integers(1, 3))):
                    d = np.roll(m, int(rng.integers(-3, 4)), axis=1)
                    s = float(np.round(rng.random(), 1))
                    dts.append(
                        {
                            "image_id": im["id"],
                            "category_id": c,
                            "score": s,
                            "segmentation": mask_utils.encode(np.asfortranarray(d)),
                        }
                    )
                    pm.append(d), ps.append(s), pl.append(c)
        targets.append(
            {
                "boxes": torch.tensor(
                    [a["bbox"] for a in anns if a["image_id"] == im["id"]], dtype=torch.float64
                ).reshape(-1, 4),
                "labels": torch.tensor(gl, dtype=torch.int64),
                "iscrowd": torch.tensor(gc),
                "masks": torch.from_numpy(np.stack(gms) if gms else np.zeros((0, h, w), np.uint8)),
            }
        )
        preds.append(
            {
                "boxes": torch.zeros(len(pm), 4),
                "scores": torch.tensor(ps, dtype=torch.float64),
                "labels": torch.tensor(pl, dtype=torch.int64),
                "masks": torch.from_numpy(np.stack(pm).astype(bool) if pm else np.zeros((0, h, w), bool)),
            }
        )
    gt = {"images": images, "categories": cats, "annotations": anns}
    ref = pycocotools_stats(gt, dts, "segm")
    m = DetectionMetrics(protocols=("coco",), iou_type=("bbox", "segm"))
    m.update(preds, targets)
    np.testing.assert_allclose(ours(m, "coco_segm"), ref, rtol=0, atol=ATOL)
    assert "coco/AP" in m.compute()  # both iou types reported


def test_backends_agree_exactly():
    gt, dt = random_coco_case(11, n_images=25)
    a = coco_evaluate(gt, dt, "bbox", backend="faster_coco_eval")
    b = coco_evaluate(gt, dt, "bbox", backend="pycocotools")
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= ATOL for k in a)
    with pytest.raises(ValueError, match="backend"):
        coco_evaluate(gt, dt, "bbox", backend="nope")


def test_mask_areas_of_more_than_255_instances():
    """pycocotools 2.0.11's mask.area overflows past 255 RLEs in one call (found on Mask R-CNN's 200
    validation images); rle_areas chunks the call."""
    from metrics.coco import rle_areas
    from metrics.torchmetrics_wrappers import encode_masks

    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((600, 12, 10)) > 0.7).to(torch.uint8)
    assert np.array_equal(rle_areas(encode_masks(masks)), masks.sum((1, 2)).numpy().astype(np.float64))

    metric = DetectionMetrics(protocols=("coco",), iou_type="segm")
    for i in range(3):  # 3 images x 100 objects: one perfect detection each
        m = masks[i * 100 : (i + 1) * 100]
        boxes = torch.tensor([[0.0, 0.0, 10.0, 12.0]]).repeat(100, 1)
        target = {"boxes": boxes, "labels": torch.ones(100, dtype=torch.int64), "masks": m, "image_id": i}
        pred = {
            "boxes": boxes,
            "labels": torch.ones(100, dtype=torch.int64),
            "scores": torch.linspace(1, 0.5, 100),
            "masks": m[:, None].float(),
        }
        metric.update([pred], [target])
    assert metric.compute()["coco_segm/AP50"] == pytest.approx(1.0)


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_coco_evaluate_leaves_the_inputs_alone(backend):
    import copy

    from pycocotools import mask as mask_utils

    gt, dt = random_coco_case(6)
    gt0, dt0 = copy.deepcopy(gt), copy.deepcopy(dt)
    first = coco_evaluate(gt, dt, "bbox", backend)
    assert gt == gt0 and dt == dt0
    assert coco_evaluate(gt, dt, "bbox", backend) == first
    # segm results: loadRes used to write a numpy bbox into them, and a second call then failed
    h, w = 30, 40
    images = [{"id": 1, "height": h, "width": w}]
    m = np.zeros((h, w), np.uint8)
    m[5:20, 4:30] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    sgt = {
        "images": images,
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": rle,
                "area": float(m.sum()),
                "bbox": mask_utils.toBbox(rle).tolist(),
                "iscrowd": 0,
            }
        ],
    }
    d = np.roll(m, 2, axis=1)
    drle = mask_utils.encode(np.asfortranarray(d))
    drle["counts"] = drle["counts"].decode()
    sdt = [{"image_id": 1, "category_id": 1, "segmentation": drle, "score": 0.7}]
    sdt0 = copy.deepcopy(sdt)
    a = coco_evaluate(sgt, sdt, "segm", backend)
    assert sdt == sdt0
    assert coco_evaluate(sgt, sdt, "segm", backend) == a
    np.testing.assert_allclose([a[k] for k in COCO_STAT_NAMES], pycocotools_stats(sgt, sdt0, "segm"), rtol=0, atol=ATOL)
