"""Helpers shared by the metrics tests: shared-data lookup, seeded random COCO cases, references."""

from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
COCO_JSON = SHARED / "data" / "real" / "coco" / "annotations" / "instances_val2017.json"


def require_coco_json() -> Path:
    if not COCO_JSON.is_file():
        pytest.skip(f"shared data not found: {COCO_JSON} (expected ../shared next to the repo root)")
    return COCO_JSON


def pycocotools_stats(gt: dict, dt: list[dict], iou_type: str) -> np.ndarray:
    """Reference numbers straight from pycocotools (GT dict, results list)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = copy.deepcopy(gt)
        g.createIndex()
        d = g.loadRes(copy.deepcopy(dt)) if dt else COCO()
        if not dt:
            d.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            d.createIndex()
        ev = COCOeval(g, d, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:12], dtype=np.float64)


def random_coco_case(seed: int, n_images: int = 40, n_classes: int = 4, max_extra: int = 12) -> tuple[dict, list[dict]]:
    """Seeded COCO GT + results with crowd GT, empty images, images without predictions and
    tied (rounded) scores; detections are jittered GT plus random boxes."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 200, "height": 160} for i in range(n_images)]
    cats = [{"id": c + 1, "name": f"class{c + 1}"} for c in range(n_classes)]
    anns, dts = [], []
    for im in images:
        kind = rng.integers(0, 6)  # 0: no GT, 1: no predictions, else both
        n_gt = 0 if kind == 0 else int(rng.integers(1, 8))
        for _ in range(n_gt):
            w, h = rng.uniform(3, 90), rng.uniform(3, 70)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 160 - h)
            c = int(rng.integers(1, n_classes + 1))
            crowd = int(rng.random() < 0.1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": c,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
            if kind != 1 and rng.random() < 0.85:
                j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                dts.append(
                    {
                        "image_id": im["id"],
                        "category_id": c,
                        "bbox": [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)],
                        "score": float(np.round(rng.random(), 1)),
                    }
                )
        if kind != 1:
            for _ in range(int(rng.integers(0, max_extra))):
                w, h = rng.uniform(3, 90), rng.uniform(3, 70)
                dts.append(
                    {
                        "image_id": im["id"],
                        "category_id": int(rng.integers(1, n_classes + 1)),
                        "bbox": [rng.uniform(0, 200 - w), rng.uniform(0, 160 - h), w, h],
                        "score": float(np.round(rng.random(), 1)),
                    }
                )
    return {"images": images, "categories": cats, "annotations": anns}, dts


def coco_to_torchvision(gt: dict, dt: list[dict]) -> tuple[list[dict], list[dict]]:
    """COCO dicts -> torchvision-style preds/targets (float64 so values are carried exactly)."""
    index = {im["id"]: k for k, im in enumerate(gt["images"])}
    P = [{"boxes": [], "scores": [], "labels": []} for _ in index]
    T = [{"boxes": [], "labels": [], "iscrowd": [], "area": [], "image_id": im["id"]} for im in gt["images"]]
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        t = T[index[a["image_id"]]]
        t["boxes"].append([x, y, x + w, y + h])
        t["labels"].append(a["category_id"])
        t["iscrowd"].append(a.get("iscrowd", 0))
        t["area"].append(a["area"])
    for d in dt:
        x, y, w, h = d["bbox"]
        p = P[index[d["image_id"]]]
        p["boxes"].append([x, y, x + w, y + h])
        p["labels"].append(d["category_id"])
        p["scores"].append(d["score"])

    def conv(items: list[dict]) -> list[dict]:
        out = []
        for d in items:
            o = {}
            for k, v in d.items():
                if k == "boxes":
                    o[k] = torch.tensor(v, dtype=torch.float64).reshape(-1, 4)
                elif k == "image_id":
                    o[k] = v
                elif k in ("scores", "area"):
                    o[k] = torch.tensor(v, dtype=torch.float64)
                else:
                    o[k] = torch.tensor(v, dtype=torch.int64)
            out.append(o)
        return out

    return conv(P), conv(T)


def devkit_reference(gts: list[dict], dets: list[tuple[int, float, list[float]]]) -> tuple[float, float, int]:
    """Loop-by-loop Pascal VOC devkit (one class): returns (all-point AP, 11-point AP, npos).

    Boxes are devkit pixel indices (the +1 below). ``gts[i] = {"boxes": [[x1, y1, x2, y2], ...],
    "difficult": [bool, ...]}``; dets (image, score, box).
    """
    npos = sum(1 for g in gts for d in g["difficult"] if not d)
    used = [[False] * len(g["boxes"]) for g in gts]
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])  # Python's sort is stable
    tp, fp = [], []
    for i in order:
        img, _, bb = dets[i]
        ovmax, jmax = -math.inf, -1
        for j, bbgt in enumerate(gts[img]["boxes"]):
            iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
            ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
            if iw > 0 and ih > 0:
                ua = (
                    (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                    + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1)
                    - iw * ih
                )
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= 0.5:
            if gts[img]["difficult"][jmax]:
                tp.append(0)
                fp.append(0)
            elif not used[img][jmax]:
                used[img][jmax] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    ctp = np.cumsum(tp).astype(float)
    cfp = np.cumsum(fp).astype(float)
    rec = ctp / npos
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    ap11 = 0.0
    # MATLAB's 0:0.1:1 element by element: k * 0.1 up to the middle, 1 - k * 0.1 after it
    for t in [k * 0.1 for k in range(5)] + [0.5] + [1.0 - k * 0.1 for k in range(4, -1, -1)]:
        sel = prec[rec >= t]
        ap11 += (sel.max() if sel.size else 0.0) / 11
    mrec = [0.0, *rec.tolist(), 1.0]
    mpre = [0.0, *prec.tolist(), 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    ap = sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])
    return ap, ap11, npos
