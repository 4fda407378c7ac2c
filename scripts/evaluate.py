#!/usr/bin/env python
"""Evaluate detections (COCO files) or semantic label maps (PNG folders) with every metric.

  python scripts/evaluate.py detection --gt GT.json --dt DT.json [--iou-type bbox|segm] [--json OUT]
  python scripts/evaluate.py semantic --gt DIR --pred DIR --num-classes K [--ignore-index 255] [--json OUT]

Detection: COCO numbers (pycocotools semantics, via faster-coco-eval), Pascal VOC 2007 (11-point,
the devkit's recall levels) and 2010+ (all-point) AP and the course evaluator's mAP. Every protocol
reads a COCO box [x, y, w, h] as the continuous corners (x, y, x+w, y+h) (``docs/data.md``, "Box
convention"); segm results get their VOC/course box from the mask, their COCO area from the mask. A
``difficult`` key on a GT annotation marks a VOC difficult object; crowd GT are ignored by VOC and
left out of the course evaluator (where difficult GT count as ordinary GT). Detections must name GT
categories and images; annotation ids must be unique. Values are in [0, 1]; -1 where undefined.
The ``--json`` path is checked for writability before any work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class InputError(Exception):
    """A malformed input file; the message names the file and the field."""


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_box(path: Path, where: str, v: Any) -> None:
    if not (isinstance(v, list) and len(v) == 4 and all(_number(x) for x in v)):
        raise InputError(f"{path}: {where}.bbox: expected [x, y, w, h] (4 numbers), got {v!r}")
    if v[2] < 0 or v[3] < 0:
        raise InputError(f"{path}: {where}.bbox: negative width/height {v!r}")


def _check_segm(path: Path, where: str, v: Any) -> None:
    ok = (
        isinstance(v, list) and all(isinstance(p, list) and len(p) >= 6 and all(_number(x) for x in p) for p in v)
    ) or (isinstance(v, dict) and "counts" in v and isinstance(v.get("size"), list) and len(v["size"]) == 2)
    if not ok:
        raise InputError(f"{path}: {where}.segmentation: expected polygons or an RLE dict with 'size' and 'counts'")


def _mask_area(segm: Any, images: list[dict], image_id: int) -> float:
    """Pixel area of a GT segmentation (polygons or RLE), as COCO stores ``area``."""
    from pycocotools import mask as mask_utils

    im = next(im for im in images if im["id"] == image_id)
    h, w = im["height"], im["width"]
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, h, w)
    else:
        rle = segm
    return float(mask_utils.area(rle))


def load_detection_inputs(gt_path: Path, dt_path: Path, iou_type: str) -> tuple[dict, list[dict]]:
    """Load and validate a COCO GT file and a COCO results file."""
    gt = _load_json(gt_path)
    if not isinstance(gt, dict):
        raise InputError(f"{gt_path}: expected a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise InputError(f"{gt_path}: missing or non-list field '{key}'")
    img_ids = set()
    for i, im in enumerate(gt["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int):
            raise InputError(f"{gt_path}: images[{i}].id: expected an integer")
        if iou_type == "segm" and not (isinstance(im.get("height"), int) and isinstance(im.get("width"), int)):
            raise InputError(f"{gt_path}: images[{i}].height/width: needed for iou_type segm")
        if im["id"] in img_ids:
            raise InputError(f"{gt_path}: images[{i}].id: duplicate image id {im['id']}")
        img_ids.add(im["id"])
    cat_ids = set()
    for i, c in enumerate(gt["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int):
            raise InputError(f"{gt_path}: categories[{i}].id: expected an integer")
        if c["id"] in cat_ids:
            raise InputError(f"{gt_path}: categories[{i}].id: duplicate category id {c['id']}")
        cat_ids.add(c["id"])
    ann_ids: dict[int, int] = {}
    for i, a in enumerate(gt["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            raise InputError(f"{gt_path}: {where}: expected an object")
        for key in ("id", "image_id", "category_id"):
            if not isinstance(a.get(key), int):
                raise InputError(f"{gt_path}: {where}.{key}: expected an integer, got {a.get(key)!r}")
        if a["id"] in ann_ids:
            raise InputError(
                f"{gt_path}: {where}.id: duplicate annotation id {a['id']} (also annotations[{ann_ids[a['id']]}])"
            )
        ann_ids[a["id"]] = i
        if a["image_id"] not in img_ids:
            raise InputError(f"{gt_path}: {where}.image_id: {a['image_id']} is not in images")
        if a["category_id"] not in cat_ids:
            raise InputError(f"{gt_path}: {where}.category_id: {a['category_id']} is not in categories")
        _check_box(gt_path, where, a.get("bbox"))
        if "area" in a and not _number(a["area"]):
            raise InputError(f"{gt_path}: {where}.area: expected a number")
        if iou_type == "segm":
            _check_segm(gt_path, where, a.get("segmentation"))
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = (
                _mask_area(a["segmentation"], gt["images"], a["image_id"])
                if iou_type == "segm"
                else float(a["bbox"][2] * a["bbox"][3])
            )
    dt = _load_json(dt_path)
    if not isinstance(dt, list):
        raise InputError(f"{dt_path}: expected a JSON list of results")
    for i, d in enumerate(dt):
        where = f"[{i}]"
        if not isinstance(d, dict):
            raise InputError(f"{dt_path}: {where}: expected an object")
        for key in ("image_id", "category_id"):
            if not isinstance(d.get(key), int):
                raise InputError(f"{dt_path}: {where}.{key}: expected an integer, got {d.get(key)!r}")
        if d["image_id"] not in img_ids:
            raise InputError(f"{dt_path}: {where}.image_id: {d['image_id']} is not in the GT images")
        if d["category_id"] not in cat_ids:
            raise InputError(f"{dt_path}: {where}.category_id: {d['category_id']} is not in the GT categories")
        if not _number(d.get("score")):
            raise InputError(f"{dt_path}: {where}.score: expected a number, got {d.get('score')!r}")
        if iou_type == "segm":
            seg = d.get("segmentation")
            if not (isinstance(seg, dict) and "counts" in seg and "size" in seg):
                raise InputError(f"{dt_path}: {where}.segmentation: expected an RLE dict with 'size' and 'counts'")
            if "bbox" in d:
                _check_box(dt_path, where, d["bbox"])
        else:
            _check_box(dt_path, where, d.get("bbox"))
    return gt, dt


def detection_metrics(gt: dict, dt: list[dict], iou_type: str = "bbox") -> dict[str, float]:
    """The flat metric dict of a COCO GT dict and results list."""
    from pycocotools import mask as mask_utils

    from metrics.coco import coco_evaluate
    from metrics.data import FlatDetections
    from metrics.torchmetrics_wrappers import evaluate_detections

    out: dict[str, float] = {}
    prefix = "coco" if iou_type == "bbox" else "coco_segm"
    # segm: COCO takes the results as masks only (area = mask area, as loadRes does for them); a
    # bbox in the results would make loadRes use box areas for the size ranges
    coco_dt = [{k: v for k, v in d.items() if k != "bbox"} for d in dt] if iou_type == "segm" else dt
    for k, v in coco_evaluate(gt, coco_dt, iou_type).items():
        out[f"{prefix}/{k}"] = v
    det_boxes = [
        mask_utils.toBbox(d["segmentation"]).tolist() if iou_type == "segm" and "bbox" not in d else d["bbox"]
        for d in dt
    ]

    images = [im["id"] for im in gt["images"]]
    index = {i: k for k, i in enumerate(images)}
    anns = gt["annotations"]

    def xyxy(b: list[float]) -> list[float]:
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]

    flat = FlatDetections(
        num_images=len(images),
        det_img=np.array([index[d["image_id"]] for d in dt], np.int64),
        det_label=np.array([d["category_id"] for d in dt], np.int64),
        det_score=np.array([d["score"] for d in dt], np.float64),
        det_box=np.array([xyxy(b) for b in det_boxes], np.float64).reshape(-1, 4),
        gt_img=np.array([index[a["image_id"]] for a in anns], np.int64),
        gt_label=np.array([a["category_id"] for a in anns], np.int64),
        gt_box=np.array([xyxy(a["bbox"]) for a in anns], np.float64).reshape(-1, 4),
        gt_difficult=np.array([bool(a.get("difficult", 0)) for a in anns], bool),
        gt_crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        image_ids=np.array(images, np.int64),
    )
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    out.update(evaluate_detections(flat, ("voc07", "voc", "lecture"), names=names))
    return out


def _read_label_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "1"):
                raise InputError(f"{path}: mode {im.mode} is not a single-channel label map (use palette or grey PNG)")
            return np.array(im, dtype=np.int64)  # palette PNGs give the indices
    except InputError:
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise InputError(f"{path}: cannot read PNG ({e})") from None


def semantic_metrics(gt_dir: Path, pred_dir: Path, num_classes: int, ignore_index: int = 255) -> dict[str, float]:
    """Metrics over two folders of PNG label maps with the same file names (an ``ignore_index``
    inside the class range is also left out of the means)."""
    import torch

    from metrics.segmentation import confusion_matrix
    from metrics.torchmetrics_wrappers import segmentation_summary

    for d in (gt_dir, pred_dir):
        if not d.is_dir():
            raise InputError(f"{d}: not a directory")
    gt_files = {p.name for p in gt_dir.glob("*.png")}
    pred_files = {p.name for p in pred_dir.glob("*.png")}
    if not gt_files:
        raise InputError(f"{gt_dir}: no .png files")
    missing = sorted(gt_files - pred_files)
    extra = sorted(pred_files - gt_files)
    if missing:
        raise InputError(
            f"{pred_dir}: missing prediction {missing[0]} (and {len(missing) - 1} more)"
            if len(missing) > 1
            else f"{pred_dir}: missing prediction {missing[0]}"
        )
    if extra:
        raise InputError(f"{pred_dir / extra[0]}: prediction without ground truth in {gt_dir}")
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for name in sorted(gt_files):
        g = _read_label_png(gt_dir / name)
        p = _read_label_png(pred_dir / name)
        if g.shape != p.shape:
            raise InputError(f"{pred_dir / name}: size {p.shape[::-1]} differs from ground truth {g.shape[::-1]}")
        try:
            cm += confusion_matrix(torch.from_numpy(p), torch.from_numpy(g), num_classes, ignore_index)
        except ValueError as e:
            raise InputError(f"{gt_dir / name} / {pred_dir / name}: {e}") from None
    return segmentation_summary(cm, ignore_index)


def check_writable(path: Path) -> None:
    """Raise :class:`InputError` naming ``path`` if a file cannot be written there (no file is left
    behind by the check)."""
    if path.is_dir():
        raise InputError(f"{path}: cannot write the metrics: is a directory")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as e:
        raise InputError(f"{path}: cannot write the metrics: {e.strerror or e}") from None
    if not existed:
        os.unlink(path)


def print_table(metrics: dict[str, float], stream: Any = sys.stdout) -> None:
    width = max(len(k) for k in metrics) if metrics else 10
    print(f"{'metric':<{width}}  value", file=stream)
    print("-" * (width + 9), file=stream)
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:7.4f}", file=stream)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)
    det = sub.add_parser("detection", help="COCO GT json + COCO results json")
    det.add_argument("--gt", type=Path, required=True)
    det.add_argument("--dt", type=Path, required=True)
    det.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox")
    det.add_argument("--json", type=Path, default=None, help="write the metrics as one flat JSON object")
    sem = sub.add_parser("semantic", help="folders of PNG label maps")
    sem.add_argument("--gt", type=Path, required=True)
    sem.add_argument("--pred", type=Path, required=True)
    sem.add_argument("--num-classes", type=int, required=True)
    sem.add_argument("--ignore-index", type=int, default=255)
    sem.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.json is not None:
            check_writable(args.json)
        if args.task == "detection":
            gt, dt = load_detection_inputs(args.gt, args.dt, args.iou_type)
            result = detection_metrics(gt, dt, args.iou_type)
        else:
            if args.num_classes < 1:
                raise InputError("--num-classes must be >= 1")
            result = semantic_metrics(args.gt, args.pred, args.num_classes, args.ignore_index)
    except InputError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    print_table(result)
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(result, indent=2))
        except OSError as e:  # e.g. the folder vanished while evaluating
            print(f"evaluate.py: error: {args.json}: cannot write the metrics: {e.strerror or e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
