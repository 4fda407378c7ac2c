"""torchmetrics ``Metric`` classes for every LightningModule: detection and semantic segmentation.

DDP: every state is a tensor list with ``dist_reduce_fx="cat"`` (detection) or a summed
confusion matrix (segmentation). Detection rows are flat (one row per box) and the images are
described by per-image counts (``img_ndet``/``img_ngt``); ``cat`` gathers every state in rank
order, so splitting the gathered rows by the gathered counts gives back exactly the per-image
grouping of every rank. If targets carry an ``image_id``, an image seen twice (e.g. the padding
``DistributedSampler`` adds to make ranks even) is evaluated once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_convert

from .coco import _check_settings, coco_evaluate_flat
from .data import FlatDetections
from .lecture import lecture_evaluate, lecture_map
from .segmentation import confusion_matrix, segmentation_scores
from .voc import eleven_points, voc_evaluate, voc_map

__all__ = ["DetectionMetrics", "SegmentationMetrics", "encode_masks", "evaluate_detections", "segmentation_summary"]

PROTOCOLS = ("lecture", "voc07", "voc", "coco")
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def encode_masks(masks: Tensor | np.ndarray) -> list[dict]:
    """COCO compressed RLEs of ``N x H x W`` binary masks, or ``N x 1 x H x W`` probabilities
    (thresholded at 0.5, ``> 0.5``, as torchvision's Mask R-CNN paste does)."""
    from pycocotools import mask as mask_utils

    m = torch.as_tensor(masks)
    if m.ndim == 4:
        if m.shape[1] != 1:
            raise ValueError(f"masks must be N x H x W or N x 1 x H x W, got {tuple(m.shape)}")
        m = m[:, 0]
    if m.ndim != 3:
        raise ValueError(f"masks must be N x H x W or N x 1 x H x W, got {tuple(m.shape)}")
    m = (m > 0.5) if m.is_floating_point() else (m != 0)
    if m.shape[0] == 0:
        return []
    arr = np.asfortranarray(m.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
    return mask_utils.encode(arr)


def _rles_to_tensors(rles: list[dict]) -> tuple[Tensor, Tensor]:
    blobs = [r["counts"] if isinstance(r["counts"], bytes) else r["counts"].encode() for r in rles]
    lens = torch.tensor([len(b) for b in blobs], dtype=torch.int64)
    data = (
        torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)
        if blobs and lens.sum() > 0
        else torch.zeros(0, dtype=torch.uint8)
    )
    return data.clone(), lens


def _tensors_to_rles(data: np.ndarray, lens: np.ndarray, hw: np.ndarray) -> list[dict]:
    raw = data.tobytes()
    ends = np.cumsum(lens)
    starts = ends - lens
    return [
        {"size": [int(h), int(w)], "counts": raw[s:e]}
        for s, e, (h, w) in zip(starts.tolist(), ends.tolist(), hw.tolist())
    ]


class DetectionMetrics(Metric):
    """Course evaluator, Pascal VOC (2007 11-point and 2010+ all-point) and COCO metrics.

    ``update(preds, targets)`` takes torchvision-style lists of dicts: preds ``boxes`` (float pixels,
    N x 4, in ``box_format``), ``scores`` (N), ``labels`` (int64 N), optional ``masks`` (N x H x W
    binary or N x 1 x H x W probabilities); targets ``boxes``, ``labels`` (1..K), optional
    ``difficult``, ``iscrowd``, ``area``, ``masks`` (N x H x W), ``image_id``. ``compute()`` returns
    the flat dict of ``scripts/evaluate.py`` (COCO keys ``coco/...`` for boxes, ``coco_segm/...``
    for masks). Boxes are continuous pixel coordinates (``docs/data.md``); VOC and the course
    evaluator use the boxes at ``iou_threshold`` with continuous IoU.

    torchmetrics-style COCO settings: ``iou_thresholds``, ``rec_thresholds``,
    ``max_detection_thresholds`` (see :mod:`metrics.coco` for the keys they give), ``class_metrics``
    (adds ``coco/AP/<name>`` and ``coco/AR<last max dets>/<name>``), ``box_format`` (``xyxy``,
    ``xywh`` or ``cxcywh``, for preds and targets). ``class_names``: a list (label ``i`` is
    ``class_names[i - 1]``, labels 1..K) or a ``{label: name}`` mapping (any labels, 0 included);
    a GT label without a name raises ``ValueError`` in ``compute()``. ``voc07_grid``: the recall
    levels of the VOC2007 AP, ``"devkit"`` (default) or ``"tenths"``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        protocols: Sequence[str] = PROTOCOLS,
        iou_type: str | Sequence[str] = "bbox",
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        iou_threshold: float = 0.5,
        coco_backend: str = "faster_coco_eval",
        iou_thresholds: Sequence[float] | None = None,
        rec_thresholds: Sequence[float] | None = None,
        max_detection_thresholds: Sequence[int] | None = None,
        class_metrics: bool = False,
        box_format: str = "xyxy",
        voc07_grid: str = "devkit",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        bad = [p for p in protocols if p not in PROTOCOLS]
        if bad:
            raise ValueError(f"unknown protocol(s) {bad}; choose from {PROTOCOLS}")
        iou_types = (iou_type,) if isinstance(iou_type, str) else tuple(iou_type)
        if not iou_types or any(t not in ("bbox", "segm") for t in iou_types):
            raise ValueError(f"iou_type must be 'bbox', 'segm' or both, got {iou_type!r}")
        if box_format not in BOX_FORMATS:
            raise ValueError(f"box_format must be one of {BOX_FORMATS}, got {box_format!r}")
        if coco_backend not in ("faster_coco_eval", "pycocotools"):
            raise ValueError(f"coco_backend must be 'faster_coco_eval' or 'pycocotools', got {coco_backend!r}")
        eleven_points(voc07_grid)  # validates
        _check_settings(iou_thresholds, rec_thresholds, max_detection_thresholds)
        self.protocols = tuple(protocols)
        self.iou_types = iou_types
        if class_names is None or isinstance(class_names, Mapping):
            self.class_names = None if class_names is None else {int(k): str(v) for k, v in class_names.items()}
            self._names = self.class_names
        else:
            self.class_names = [str(n) for n in class_names]
            self._names = {i + 1: n for i, n in enumerate(self.class_names)}
        self.iou_threshold = float(iou_threshold)
        self.coco_backend = coco_backend
        self.coco_settings = {
            "iou_thresholds": None if iou_thresholds is None else [float(v) for v in iou_thresholds],
            "rec_thresholds": None if rec_thresholds is None else [float(v) for v in rec_thresholds],
            "max_detection_thresholds": None
            if max_detection_thresholds is None
            else [int(v) for v in max_detection_thresholds],
            "per_class": bool(class_metrics),
        }
        self.box_format = box_format
        self.voc07_grid = voc07_grid
        self.with_masks = "segm" in iou_types
        for name in (
            "img_ndet",
            "img_ngt",
            "img_id",
            "img_hw",
            "det_boxes",
            "det_scores",
            "det_labels",
            "gt_boxes",
            "gt_labels",
            "gt_difficult",
            "gt_crowd",
            "gt_area",
        ):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        if self.with_masks:
            for name in ("det_rle", "det_rle_len", "gt_rle", "gt_rle_len"):
                self.add_state(name, default=[], dist_reduce_fx="cat")

    # ------------------------------------------------------------------ update
    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Add one batch of images (see class docstring for the dict keys)."""
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} prediction dicts but {len(targets)} target dicts")
        if not preds:
            return
        dev = self.device
        ndet, ngt, ids, hws = [], [], [], []
        db, ds, dl, gb, gl, gd, gc, ga = [], [], [], [], [], [], [], []
        drle, grle = [], []
        for i, (p, t) in enumerate(zip(preds, targets)):
            for key, d, where in (
                ("boxes", p, "preds"),
                ("scores", p, "preds"),
                ("labels", p, "preds"),
                ("boxes", t, "targets"),
                ("labels", t, "targets"),
            ):
                if key not in d:
                    raise ValueError(f"{where}[{i}] has no '{key}'")
            pb = torch.as_tensor(p["boxes"]).reshape(-1, 4)
            tb = torch.as_tensor(t["boxes"]).reshape(-1, 4)
            if self.box_format != "xyxy":
                pb = box_convert(pb, self.box_format, "xyxy")
                tb = box_convert(tb, self.box_format, "xyxy")
            n, m = pb.shape[0], tb.shape[0]
            if torch.as_tensor(p["scores"]).numel() != n or torch.as_tensor(p["labels"]).numel() != n:
                raise ValueError(f"preds[{i}]: boxes, scores and labels differ in length")
            if torch.as_tensor(t["labels"]).numel() != m:
                raise ValueError(f"targets[{i}]: boxes and labels differ in length")
            ndet.append(n)
            ngt.append(m)
            ids.append(int(t["image_id"]) if "image_id" in t else -1)
            db.append(pb)
            ds.append(torch.as_tensor(p["scores"]).reshape(-1))
            dl.append(torch.as_tensor(p["labels"]).reshape(-1))
            gb.append(tb)
            gl.append(torch.as_tensor(t["labels"]).reshape(-1))
            for key, out in (("difficult", gd), ("iscrowd", gc)):
                v = t.get(key)
                out.append(
                    torch.zeros(m, dtype=torch.bool) if v is None else torch.as_tensor(v).reshape(-1).ne(0).cpu()
                )
            a = t.get("area")
            ga.append(
                torch.full((m,), float("nan"), dtype=torch.float64)
                if a is None
                else torch.as_tensor(a, dtype=torch.float64).reshape(-1).cpu()
            )
            h = w = 0
            if self.with_masks:
                if "masks" not in p or "masks" not in t:
                    raise ValueError(f"iou_type 'segm' needs 'masks' in preds[{i}] and targets[{i}]")
                pr, tr = encode_masks(p["masks"]), encode_masks(t["masks"])
                if len(pr) != n or len(tr) != m:
                    raise ValueError(f"image {i}: number of masks differs from number of boxes")
                h, w = int(torch.as_tensor(t["masks"]).shape[-2]), int(torch.as_tensor(t["masks"]).shape[-1])
                drle.extend(pr)
                grle.extend(tr)
            hws.append((h, w))
        self.img_ndet.append(torch.tensor(ndet, dtype=torch.int64, device=dev))
        self.img_ngt.append(torch.tensor(ngt, dtype=torch.int64, device=dev))
        self.img_id.append(torch.tensor(ids, dtype=torch.int64, device=dev))
        self.img_hw.append(torch.tensor(hws, dtype=torch.int64, device=dev).reshape(-1, 2))
        self.det_boxes.append(torch.cat(db).to(dev, torch.float64))
        self.det_scores.append(torch.cat(ds).to(dev, torch.float64))
        self.det_labels.append(torch.cat(dl).to(dev, torch.int64))
        self.gt_boxes.append(torch.cat(gb).to(dev, torch.float64))
        self.gt_labels.append(torch.cat(gl).to(dev, torch.int64))
        self.gt_difficult.append(torch.cat(gd).to(dev, torch.uint8))
        self.gt_crowd.append(torch.cat(gc).to(dev, torch.uint8))
        self.gt_area.append(torch.cat(ga).to(dev, torch.float64))
        if self.with_masks:
            for rles, data_state, len_state in (
                (drle, self.det_rle, self.det_rle_len),
                (grle, self.gt_rle, self.gt_rle_len),
            ):
                data, lens = _rles_to_tensors(rles)
                data_state.append(data.to(dev))
                len_state.append(lens.to(dev))

    # ----------------------------------------------------------------- compute
    @staticmethod
    def _cat(state: Any, dtype: Any, tail: tuple[int, ...] = ()) -> np.ndarray:
        if isinstance(state, Tensor):
            t = state
        elif len(state) == 0:
            return np.zeros((0, *tail), dtype=dtype)
        else:
            t = torch.cat([s.reshape(-1, *tail) for s in state])
        return t.detach().cpu().numpy().astype(dtype, copy=False).reshape(-1, *tail)

    def flat(self) -> FlatDetections:
        """All accumulated (and, under DDP, gathered) data as :class:`FlatDetections`."""
        ndet = self._cat(self.img_ndet, np.int64)
        ngt = self._cat(self.img_ngt, np.int64)
        ids = self._cat(self.img_id, np.int64)
        hw = self._cat(self.img_hw, np.int64, (2,))
        n = len(ndet)
        flat = FlatDetections(
            num_images=n,
            det_img=np.repeat(np.arange(n, dtype=np.int64), ndet),
            det_label=self._cat(self.det_labels, np.int64),
            det_score=self._cat(self.det_scores, np.float64),
            det_box=self._cat(self.det_boxes, np.float64, (4,)),
            gt_img=np.repeat(np.arange(n, dtype=np.int64), ngt),
            gt_label=self._cat(self.gt_labels, np.int64),
            gt_box=self._cat(self.gt_boxes, np.float64, (4,)),
            gt_difficult=self._cat(self.gt_difficult, np.uint8).astype(bool),
            gt_crowd=self._cat(self.gt_crowd, np.uint8).astype(bool),
            gt_area=self._cat(self.gt_area, np.float64),
            image_sizes=hw,
            image_ids=ids,
        )
        if self.with_masks:
            flat.det_masks = _tensors_to_rles(
                self._cat(self.det_rle, np.uint8), self._cat(self.det_rle_len, np.int64), hw[flat.det_img]
            )
            flat.gt_masks = _tensors_to_rles(
                self._cat(self.gt_rle, np.uint8), self._cat(self.gt_rle_len, np.int64), hw[flat.gt_img]
            )
        flat.validate()
        return _drop_duplicate_images(flat)

    def _label_names(self, flat: FlatDetections) -> dict[int, str]:
        if self._names is None:
            return {int(k): str(int(k)) for k in flat.labels}
        missing = sorted(set(np.unique(flat.gt_label).tolist()) - set(self._names))
        if missing:
            how = (
                "a list names labels 1..K: label i is class_names[i - 1]; pass a {label: name} dict"
                if isinstance(self.class_names, list)
                else "add them to the dict"
            )
            raise ValueError(f"ground-truth label(s) {missing} have no name in class_names ({how})")
        return dict(self._names)

    def compute(self) -> dict[str, float]:
        """Every metric of the chosen protocols as a flat ``{key: float}`` dict (-1 = undefined)."""
        flat = self.flat()
        return evaluate_detections(
            flat,
            self.protocols,
            self.iou_types,
            self._label_names(flat),
            self.iou_threshold,
            self.coco_backend,
            self.coco_settings,
            self.voc07_grid,
        )

    def pr_curves(self) -> dict[str, dict[str, np.ndarray | float]]:
        """Per-class VOC (devkit-ranked) precision/recall curves for plots.

        ``{class name: {"recall", "precision", "ap", "ap07", "recall_11", "precision_11"}}`` where
        the last two are the 11 interpolation points of the VOC2007 AP.
        """
        flat = self.flat()
        names = self._label_names(flat)
        out = {}
        grid = eleven_points(self.voc07_grid)
        for lab, r in voc_evaluate(flat, self.iou_threshold, "continuous", eleven_point_grid=self.voc07_grid).items():
            if r.npos == 0:
                continue
            rec, prec = r.recall, r.precision
            p11 = np.array([prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in grid])
            out[names.get(lab, str(lab))] = {
                "recall": rec,
                "precision": prec,
                "ap": r.ap,
                "ap07": r.ap07,
                "recall_11": grid.copy(),
                "precision_11": p11,
            }
        return out


def _drop_duplicate_images(flat: FlatDetections) -> FlatDetections:
    ids = flat.image_ids
    if ids is None or len(ids) == 0 or not (ids >= 0).any():
        return flat
    keep_img = np.ones(len(ids), bool)
    has = np.flatnonzero(ids >= 0)
    _, first = np.unique(ids[has], return_index=True)
    keep_img[has] = False
    keep_img[has[first]] = True
    if keep_img.all():
        return flat
    new_index = np.cumsum(keep_img) - 1
    kd, kg = keep_img[flat.det_img], keep_img[flat.gt_img]
    return FlatDetections(
        num_images=int(keep_img.sum()),
        det_img=new_index[flat.det_img[kd]],
        det_label=flat.det_label[kd],
        det_score=flat.det_score[kd],
        det_box=flat.det_box[kd],
        gt_img=new_index[flat.gt_img[kg]],
        gt_label=flat.gt_label[kg],
        gt_box=flat.gt_box[kg],
        gt_difficult=flat.gt_difficult[kg],
        gt_crowd=flat.gt_crowd[kg],
        gt_area=None if flat.gt_area is None else flat.gt_area[kg],
        det_masks=None if flat.det_masks is None else [m for m, k in zip(flat.det_masks, kd) if k],
        gt_masks=None if flat.gt_masks is None else [m for m, k in zip(flat.gt_masks, kg) if k],
        image_sizes=None if flat.image_sizes is None else flat.image_sizes[keep_img],
        image_ids=ids[keep_img],
    )


def evaluate_detections(
    flat: FlatDetections,
    protocols: Iterable[str] = PROTOCOLS,
    iou_types: Sequence[str] = ("bbox",),
    names: dict[int, str] | None = None,
    iou_threshold: float = 0.5,
    coco_backend: str = "faster_coco_eval",
    coco_settings: Mapping[str, Any] | None = None,
    voc07_grid: str = "devkit",
) -> dict[str, float]:
    """Shared by :class:`DetectionMetrics` and ``scripts/evaluate.py``: the flat metric dict.

    Boxes are continuous (``docs/data.md``). ``coco_settings``: keyword settings of
    :func:`metrics.coco.coco_evaluate`; per-class COCO keys use ``names``.
    """
    protocols = tuple(protocols)
    names = names if names is not None else {int(k): str(int(k)) for k in flat.labels}
    out: dict[str, float] = {}
    if "coco" in protocols:
        for iou_type in iou_types:
            prefix = "coco" if iou_type == "bbox" else "coco_segm"
            for k, v in coco_evaluate_flat(flat, iou_type, coco_backend, **dict(coco_settings or {})).items():
                if "/" in k:  # per class: "<stat>/<label>"
                    stat, lab = k.split("/")
                    if int(lab) not in names:
                        continue
                    k = f"{stat}/{names[int(lab)]}"
                out[f"{prefix}/{k}"] = v
            if coco_settings and coco_settings.get("per_class"):
                ar = f"AR{int((coco_settings.get('max_detection_thresholds') or [100])[-1])}"
                for name in names.values():  # classes without data: undefined
                    out.setdefault(f"{prefix}/AP/{name}", -1.0)
                    out.setdefault(f"{prefix}/{ar}/{name}", -1.0)
    if "voc07" in protocols or "voc" in protocols:
        voc = voc_evaluate(flat, iou_threshold, "continuous", eleven_point_grid=voc07_grid)
        for proto, use07 in (("voc07", True), ("voc", False)):
            if proto not in protocols:
                continue
            out[f"{proto}/mAP"] = voc_map(voc, use_07_metric=use07)
            for lab, name in names.items():
                r = voc.get(lab)
                out[f"{proto}/AP/{name}"] = -1.0 if r is None or r.npos == 0 else float(r.ap07 if use07 else r.ap)
    if "lecture" in protocols:
        out["lecture/mAP"] = lecture_map(lecture_evaluate(flat, iou_threshold, "continuous"))
    return out


class SegmentationMetrics(Metric):
    """Pixel accuracy, mean pixel accuracy, per-class IoU, mIoU and mean Dice from one summed
    confusion matrix (see :func:`metrics.segmentation.segmentation_scores` for the conventions:
    classes absent from both GT and prediction are left out of the means; MPA averages over
    classes with GT pixels)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = 255, **kwargs: Any) -> None:
        """``ignore_index``: GT value left out; one inside ``[0, num_classes)`` is also left out of
        every mean (its ``iou/<i>`` is -1), as torchmetrics' ``MulticlassJaccardIndex`` does."""
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.add_state(
            "confmat", default=torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds``: B x C x H x W logits or B x H x W labels; ``target``: B x H x W int64."""
        self.confmat += confusion_matrix(preds, target, self.num_classes, self.ignore_index).to(self.confmat.device)

    def compute(self) -> dict[str, float]:
        """Flat dict; -1 where a value is undefined (class absent from GT and prediction)."""
        return segmentation_summary(self.confmat, self.ignore_index)


def segmentation_summary(cm: Tensor | np.ndarray, ignore_index: int | None = None) -> dict[str, float]:
    """``pixel_accuracy, mean_pixel_accuracy, mean_iou, mean_dice, iou/<i>`` (-1 if undefined);
    an ``ignore_index`` inside the class range is left out of the means."""
    s = segmentation_scores(cm, ignore_index)

    def clean(v: float) -> float:
        return -1.0 if v != v else float(v)

    out = {k: clean(float(s[k])) for k in ("pixel_accuracy", "mean_pixel_accuracy", "mean_iou", "mean_dice")}
    for i, v in enumerate(s["iou"].tolist()):
        out[f"iou/{i}"] = clean(v)
    return out
