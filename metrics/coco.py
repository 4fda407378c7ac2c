"""COCO detection metrics (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) for boxes and masks.

Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014; the definitions are those of
the official ``pycocotools.cocoeval.COCOeval`` (101 recall points, IoU 0.50:0.05:0.95, area
ranges small < 32^2 <= medium < 96^2 <= large, crowd GT matched last and ignored). The numbers are
computed by ``faster-coco-eval`` (C++ port of the same algorithm, identical results, checked
against pycocotools in ``tests/metrics/test_coco.py``) or, on request, by pycocotools itself.

The COCO objects are built in memory from arrays: no JSON round trip, and no per-annotation
``loadRes`` pass (its only work, ``area``/``id``/``iscrowd`` of the results, is done here in
bulk). Boxes are continuous (``w = x2 - x1``). The callers' result dicts are never modified.

Settings (as torchmetrics' ``MeanAveragePrecision`` names them): ``iou_thresholds``,
``rec_thresholds``, ``max_detection_thresholds`` set ``params.iouThrs/recThrs/maxDets``;
``per_class`` adds ``AP/<category id>`` and ``AR<last max dets>/<category id>``. The summary is read
from the accumulated ``precision``/``recall`` arrays the way pycocotools' ``summarize`` reads them
(mean of the defined entries, -1 if none), with AP and the size-range numbers at the *last*
max-detections value (pycocotools hard-codes 100 there; the two agree for the defaults), AP50/AP75
-1 when 0.5/0.75 is not an IoU threshold, and one ``AR<m>`` per max-detections value.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Literal, Sequence

import numpy as np

from .data import FlatDetections

__all__ = [
    "COCO_STAT_NAMES",
    "coco_image_ids",
    "coco_evaluate",
    "coco_evaluate_flat",
    "coco_gt_dataset",
    "coco_dt_annotations",
    "coco_stat_names",
]

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


def coco_stat_names(max_detection_thresholds: Sequence[int] | None = None) -> tuple[str, ...]:
    """Summary names: ``COCO_STAT_NAMES`` for the default max detections (1, 10, 100), else one
    ``AR<m>`` per value in place of AR1/AR10/AR100."""
    if max_detection_thresholds is None:
        return COCO_STAT_NAMES
    return (*COCO_STAT_NAMES[:6], *(f"AR{int(m)}" for m in max_detection_thresholds), *COCO_STAT_NAMES[9:])


def _check_settings(
    iou_thresholds: Sequence[float] | None,
    rec_thresholds: Sequence[float] | None,
    max_detection_thresholds: Sequence[int] | None,
) -> None:
    for name, v in (("iou_thresholds", iou_thresholds), ("rec_thresholds", rec_thresholds)):
        if v is not None:
            a = np.asarray(v, dtype=np.float64).reshape(-1)
            if a.size == 0 or not ((a >= 0) & (a <= 1)).all():
                raise ValueError(f"{name} must be a non-empty list of values in [0, 1], got {list(v)!r}")
    if max_detection_thresholds is not None:
        m = list(max_detection_thresholds)
        if not m or any(not isinstance(x, (int, np.integer)) or x < 1 for x in m) or m != sorted(set(m)):
            raise ValueError(f"max_detection_thresholds must be increasing positive integers, got {m!r}")


def _summary(ev: Any, per_class: bool) -> dict[str, float]:
    p = ev.params
    max_dets = [int(m) for m in p.maxDets]
    last = max_dets[-1]
    iou_thrs = np.asarray(p.iouThrs, dtype=np.float64)
    areas = list(p.areaRngLbl)
    prec = np.asarray(ev.eval["precision"], dtype=np.float64)  # T x R x K x A x M
    rec = np.asarray(ev.eval["recall"], dtype=np.float64)  # T x K x A x M

    def mean(x: np.ndarray) -> float:
        v = x[x > -1]
        return float(np.mean(v)) if v.size else -1.0

    def pick(arr: np.ndarray, iou: float | None, area: str, m: int) -> np.ndarray:
        if iou is not None:
            arr = arr[np.flatnonzero(iou_thrs == iou)]
        if area not in areas or m not in max_dets:
            return arr[..., :0, :0]
        return arr[..., areas.index(area), max_dets.index(m)]

    out = {
        "AP": mean(pick(prec, None, "all", last)),
        "AP50": mean(pick(prec, 0.5, "all", last)),
        "AP75": mean(pick(prec, 0.75, "all", last)),
    }
    for key, area in (("s", "small"), ("m", "medium"), ("l", "large")):
        out[f"AP{key}"] = mean(pick(prec, None, area, last))
    for m in max_dets:
        out[f"AR{m}"] = mean(pick(rec, None, "all", m))
    for key, area in (("s", "small"), ("m", "medium"), ("l", "large")):
        out[f"AR{key}"] = mean(pick(rec, None, area, last))
    if per_class:
        pa, ra = pick(prec, None, "all", last), pick(rec, None, "all", last)  # T x R x K, T x K
        for k, cat in enumerate(p.catIds):
            out[f"AP/{cat}"] = mean(pa[:, :, k])
            out[f"AR{last}/{cat}"] = mean(ra[:, k])
    return out


def coco_evaluate(
    gt_dataset: dict,
    dt_annotations: Sequence[dict],
    iou_type: Literal["bbox", "segm"] = "bbox",
    backend: Backend = "faster_coco_eval",
    prepared: bool = False,
    iou_thresholds: Sequence[float] | None = None,
    rec_thresholds: Sequence[float] | None = None,
    max_detection_thresholds: Sequence[int] | None = None,
    per_class: bool = False,
    copy_inputs: bool = True,
) -> dict[str, float]:
    """The COCO summary numbers for an in-memory GT dataset dict and a results list.

    ``prepared=True`` means ``dt_annotations`` already carry ``id`` (1..n), ``area`` and
    ``iscrowd=0`` (as :func:`coco_dt_annotations` makes them) and skips ``loadRes``; the results
    are otherwise exactly those of ``COCO.loadRes`` + ``COCOeval`` (-1 where undefined). Neither
    ``gt_dataset`` nor the result dicts are modified (``copy_inputs=False`` skips the shallow
    copies that ensure it, for dicts the caller does not reuse). Settings: see the module docstring;
    keys are :func:`coco_stat_names` (plus the per-class keys).
    """
    _check_settings(iou_thresholds, rec_thresholds, max_detection_thresholds)
    COCO, COCOeval = _api(backend)
    # COCOeval writes into the annotation dicts ("ignore"; segm: RLE in place of polygons) and loadRes
    # writes id/area/iscrowd (and bbox or segmentation) into the results: they get shallow copies
    own = (lambda items: [dict(a) for a in items]) if copy_inputs else list
    gt = _coco_from_dataset(COCO, {**gt_dataset, "annotations": own(gt_dataset["annotations"])})
    empty = {"images": gt_dataset["images"], "categories": gt_dataset["categories"], "annotations": []}
    if prepared:
        dt = _coco_from_dataset(COCO, {**empty, "annotations": own(dt_annotations)})
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(own(dt_annotations)) if len(dt_annotations) else _coco_from_dataset(COCO, empty)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, dt, iou_type)
        if backend == "faster_coco_eval":
            ev.print_function = lambda *a, **k: None
        if iou_thresholds is not None:
            ev.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
        if rec_thresholds is not None:
            ev.params.recThrs = np.asarray(rec_thresholds, dtype=np.float64).reshape(-1)
        if max_detection_thresholds is not None:
            ev.params.maxDets = [int(m) for m in max_detection_thresholds]
        ev.evaluate()
        ev.accumulate()
    out = _summary(ev, per_class)
    return {k: out[k] for k in coco_stat_names(max_detection_thresholds)} | {k: v for k, v in out.items() if "/" in k}


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

    parts = [
        np.asarray(mask_utils.area(rles[i : i + chunk]), np.float64).reshape(-1) for i in range(0, len(rles), chunk)
    ]
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
            {
                "id": k + 1,
                "image_id": img[k],
                "category_id": lab[k],
                "bbox": bl[k],
                "area": al[k],
                "iscrowd": crowd[k],
                "segmentation": flat.gt_masks[k],
            }
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
            {
                "id": k + 1,
                "image_id": img[k],
                "category_id": lab[k],
                "bbox": bl[k],
                "score": sc[k],
                "area": area[k],
                "iscrowd": 0,
                "segmentation": flat.det_masks[k],
            }
            for k in range(len(img))
        ]
    area = (box[:, 2] * box[:, 3]).tolist()
    return [
        {
            "id": k + 1,
            "image_id": img[k],
            "category_id": lab[k],
            "bbox": bl[k],
            "score": sc[k],
            "area": area[k],
            "iscrowd": 0,
        }
        for k in range(len(img))
    ]


def coco_evaluate_flat(
    flat: FlatDetections,
    iou_type: Literal["bbox", "segm"] = "bbox",
    backend: Backend = "faster_coco_eval",
    **settings: Any,
) -> dict[str, float]:
    """COCO summary numbers of a :class:`FlatDetections` (all labels present are categories);
    ``settings``: the keyword settings of :func:`coco_evaluate`."""
    return coco_evaluate(
        coco_gt_dataset(flat, iou_type),
        coco_dt_annotations(flat, iou_type),
        iou_type,
        backend,
        prepared=True,
        copy_inputs=False,
        **settings,  # the dicts are made here and used once
    )
