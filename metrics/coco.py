"""COCO detection metrics (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) for boxes and masks.

Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014; the definitions are those of
the official ``pycocotools.cocoeval.COCOeval`` (101 recall points, IoU 0.50:0.05:0.95, area
ranges small < 32^2 <= medium < 96^2 <= large, crowd GT matched last and ignored). The numbers are
computed by ``faster-coco-eval`` (C++ port of the same algorithm, identical results, checked
against pycocotools in ``tests/metrics/test_coco.py``) or, on request, by pycocotools itself.

The COCO objects are built in memory from arrays: no JSON round trip, and no per-annotation
``loadRes`` pass (its only work, ``area``/``id``/``iscrowd`` of the results, is done here in
bulk). Boxes are continuous (``w = x2 - x1``).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Literal, Sequence

import numpy as np

from .data import FlatDetections

__all__ = ["COCO_STAT_NAMES", "coco_image_ids", "coco_evaluate", "coco_evaluate_flat", "coco_gt_dataset", "coco_dt_annotations"]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

Backend = Literal["faster_coco_eval", "pycocotools"]


def _api(backend: str) -> tuple[Any, Any]:
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    raise ValueError(f"backend must be 'faster_coco_eval' or 'pycocotools', got {backend!r}")


def _coco_from_dataset(COCO: Any, dataset: dict) -> Any:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_evaluate(
    gt_dataset: dict,
    dt_annotations: Sequence[dict],
    iou_type: Literal["bbox", "segm"] = "bbox",
    backend: Backend = "faster_coco_eval",
    prepared: bool = False,
) -> dict[str, float]:
    """The 12 COCO summary numbers for an in-memory GT dataset dict and a results list.

    ``prepared=True`` means ``dt_annotations`` already carry ``id`` (1..n), ``area`` and
    ``iscrowd=0`` (as :func:`coco_dt_annotations` makes them) and skips ``loadRes``; the results
    are otherwise exactly those of ``COCO.loadRes`` + ``COCOeval`` (-1 where undefined).
    """
    COCO, COCOeval = _api(backend)
    gt = _coco_from_dataset(COCO, gt_dataset)
    if prepared:
        dt = _coco_from_dataset(
            COCO,
            {"images": gt_dataset["images"], "categories": gt_dataset["categories"], "annotations": list(dt_annotations)},
        )
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(list(dt_annotations)) if len(dt_annotations) else _coco_from_dataset(
                COCO, {"images": gt_dataset["images"], "categories": gt_dataset["categories"], "annotations": []}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, dt, iou_type)
        if backend == "faster_coco_eval":
            ev.print_function = lambda *a, **k: None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, np.asarray(ev.stats[:12], dtype=np.float64))}


def _xywh(boxes: np.ndarray) -> np.ndarray:
    out = boxes.astype(np.float64, copy=True)
    out[:, 2:] -= out[:, :2]
    return out


def coco_image_ids(flat: FlatDetections) -> np.ndarray:
    """COCO image id of every image index: ``flat.image_ids`` when all are given (>= 0) and
    unique, else 1..n. It matters: COCOeval visits images in id order and its stable score sort
    breaks ties between images in that order."""
    ids = flat.image_ids
    if ids is not None and len(ids) == flat.num_images and (ids >= 0).all() and len(np.unique(ids)) == len(ids):
        return np.asarray(ids, dtype=np.int64)
    return np.arange(1, flat.num_images + 1, dtype=np.int64)


def rle_areas(rles: list[dict], chunk: int = 255) -> np.ndarray:
    """Pixel areas of COCO RLEs. pycocotools 2.0.11's ``mask.area`` fails with an OverflowError on
    more than 255 RLEs in one call, so it is called on chunks of at most 255."""
    from pycocotools import mask as mask_utils

    parts = [np.asarray(mask_utils.area(rles[i:i + chunk]), np.float64).reshape(-1) for i in range(0, len(rles), chunk)]
    return np.concatenate(parts) if parts else np.zeros(0)


def coco_gt_dataset(flat: FlatDetections, iou_type: str = "bbox", categories: Sequence[int] | None = None) -> dict:
    """COCO GT dataset dict of ``flat`` (image ids: :func:`coco_image_ids`, annotation ids 1..m).

    GT ``area`` is ``flat.gt_area`` where given, else the mask area (segm) or box area (bbox).
    """
    n = flat.num_images
    sizes = flat.image_sizes if flat.image_sizes is not None else np.zeros((n, 2), np.int64)
    coco_ids = coco_image_ids(flat)
    images = [{"id": int(i), "height": int(h), "width": int(w)} for i, (h, w) in zip(coco_ids.tolist(), sizes.tolist())]
    cats = flat.labels.tolist() if categories is None else list(categories)
    box = _xywh(flat.gt_box)
    if iou_type == "segm":
        if flat.gt_masks is None:
            raise ValueError("iou_type='segm' needs GT masks")
        default_area = rle_areas(flat.gt_masks)
    else:
        default_area = box[:, 2] * box[:, 3]
    area = default_area if flat.gt_area is None else np.where(np.isnan(flat.gt_area), default_area, flat.gt_area)
    img = coco_ids[flat.gt_img].tolist()
    lab = flat.gt_label.tolist()
    crowd = flat.gt_crowd.astype(int).tolist()
    bl = box.tolist()
    al = area.tolist()
    if iou_type == "segm":
        anns = [
            {"id": k + 1, "image_id": img[k], "category_id": lab[k], "bbox": bl[k], "area": al[k],
             "iscrowd": crowd[k], "segmentation": flat.gt_masks[k]}
            for k in range(len(img))
        ]
    else:
        anns = [
            {"id": k + 1, "image_id": img[k], "category_id": lab[k], "bbox": bl[k], "area": al[k], "iscrowd": crowd[k]}
            for k in range(len(img))
        ]
    return {"images": images, "categories": [{"id": int(c), "name": str(c)} for c in cats], "annotations": anns}


def coco_dt_annotations(flat: FlatDetections, iou_type: str = "bbox") -> list[dict]:
    """Results list of ``flat`` with ``id``/``area``/``iscrowd`` filled in as ``loadRes`` would."""
    box = _xywh(flat.det_box)
    img = coco_image_ids(flat)[flat.det_img].tolist()
    lab = flat.det_label.tolist()
    sc = flat.det_score.tolist()
    bl = box.tolist()
    if iou_type == "segm":
        if flat.det_masks is None:
            raise ValueError("iou_type='segm' needs predicted masks")
        area = rle_areas(flat.det_masks).tolist() if len(img) else []
        return [
            {"id": k + 1, "image_id": img[k], "category_id": lab[k], "bbox": bl[k], "score": sc[k], "area": area[k],
             "iscrowd": 0, "segmentation": flat.det_masks[k]}
            for k in range(len(img))
        ]
    area = (box[:, 2] * box[:, 3]).tolist()
    return [
        {"id": k + 1, "image_id": img[k], "category_id": lab[k], "bbox": bl[k], "score": sc[k], "area": area[k],
         "iscrowd": 0}
        for k in range(len(img))
    ]


def coco_evaluate_flat(
    flat: FlatDetections, iou_type: Literal["bbox", "segm"] = "bbox", backend: Backend = "faster_coco_eval"
) -> dict[str, float]:
    """COCO summary numbers of a :class:`FlatDetections` (all labels present are categories)."""
    return coco_evaluate(
        coco_gt_dataset(flat, iou_type), coco_dt_annotations(flat, iou_type), iou_type, backend, prepared=True
    )
