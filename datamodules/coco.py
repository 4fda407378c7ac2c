"""COCO instances reader (any ``instances_*.json``, through pycocotools) and its DataModule.

* boxes: COCO ``[x, y, w, h]`` -> ``(x, y, x + w, y + h)`` (0-based continuous pixels), clipped to the
  image; empty ones dropped and counted;
* labels: category ids -> contiguous 1..K in sorted category-id order (``category_id_to_label``);
* ``iscrowd`` is a flag; crowd regions are not training targets by default, kept flagged in val/test;
* masks: polygons, compressed and uncompressed RLE, decoded with ``pycocotools.mask``; checked before
  decoding (finite polygon coordinates near the image, RLE run lengths summing to height * width), so
  one bad value never reaches pycocotools' C code;
* ids: integer-valued ids given as strings (``"id": "42"``) are read as the integers they spell, for
  images, annotations and categories alike, so annotations always find their image;
* task ``semantic``: a label map painted from the instance masks in annotation order (later over
  earlier), crowd regions as 255 (ignore).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from datamodules.base import IGNORE_INDEX, AnnotatedDataset, BaseDataModule, ImageRecord, Task, check_choice
from datamodules.checks import DatasetError, ImageIndex, as_number, clip_boxes, new_stats, safe_image_path

__all__ = ["COCODataset", "COCODataModule", "load_coco_json", "decode_segmentation", "rle_counts", "POLYGON_MARGIN"]

OnUnknown = Literal["error", "skip"]

#: polygon vertices may lie outside the image by at most this fraction of its longer side (plus 1 px);
#: farther ones are annotation errors (and would make pycocotools rasterise a huge canvas)
POLYGON_MARGIN = 0.25


def _int_field(value: Any, source: str, field: str, positive: bool = False) -> int:
    x = as_number(value, source, field)
    if x != int(x) or (positive and x <= 0):
        raise DatasetError(f"{source}: {field}: expected a {'positive ' if positive else ''}integer, got {value!r}")
    return int(x)


def _integral_or_as_is(value: Any) -> Any:
    """``value`` as an int when it spells one (``"3"``, ``3.0``); anything else unchanged (for the
    unknown-category check to report)."""
    if isinstance(value, bool) or isinstance(value, int):
        return value
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return value
    return int(x) if x.is_integer() else value


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read and validate an instances JSON (structure only; annotations are checked per object later).

    Required: ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (a list),
    ``categories`` (``id``, ``name``). Raises :class:`DatasetError` ``"<file>: <field>: ..."``.
    Ids that spell integers (``"42"``) are replaced by those integers in the returned data.
    """
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{source}: annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{source}: malformed JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{source}: unreadable annotation file ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{source}: top level: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{source}: {key}: missing")
        if not isinstance(data[key], list):
            raise DatasetError(f"{source}: {key}: expected a list, got {type(data[key]).__name__}")
    if not data["categories"]:
        raise DatasetError(f"{source}: categories: empty")
    seen: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        where = f"categories[{i}]"
        if not isinstance(cat, dict):
            raise DatasetError(f"{source}: {where}: expected an object")
        cid = _int_field(cat.get("id"), source, f"{where}.id")
        cat["id"] = cid
        if cid in seen:
            raise DatasetError(f"{source}: {where}.id: duplicate category id {cid}")
        seen.add(cid)
        if not isinstance(cat.get("name"), str) or not cat["name"]:
            raise DatasetError(f"{source}: {where}.name: missing")
    seen = set()
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(img, dict):
            raise DatasetError(f"{source}: {where}: expected an object")
        iid = _int_field(img.get("id"), source, f"{where}.id")
        img["id"] = iid  # "42" and 42 name the same image (pycocotools' index compares them as keys)
        if iid in seen:
            raise DatasetError(f"{source}: {where}.id: duplicate image id {iid}")
        seen.add(iid)
        if "file_name" not in img:
            raise DatasetError(f"{source}: {where}.file_name: missing")
        _int_field(img.get("width"), source, f"{where}.width", positive=True)
        _int_field(img.get("height"), source, f"{where}.height", positive=True)
    ann_ids: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise DatasetError(f"{source}: {where}: expected an object")
        aid = _int_field(ann.get("id"), source, f"{where}.id")
        ann["id"] = aid
        if aid in ann_ids:
            raise DatasetError(f"{source}: {where}.id: duplicate annotation id {aid}")
        ann_ids.add(aid)
        image_id = _int_field(ann.get("image_id"), source, f"{where}.image_id")
        ann["image_id"] = image_id
        if image_id not in seen:
            raise DatasetError(f"{source}: {where}.image_id: no image with id {image_id}")
        if "category_id" not in ann:
            raise DatasetError(f"{source}: {where}.category_id: missing")
        ann["category_id"] = _integral_or_as_is(ann["category_id"])
    return data


def categories_of(data: dict[str, Any]) -> list[tuple[int, str]]:
    """``(category id, name)`` in sorted id order: label ``i`` is entry ``i - 1``."""
    return sorted((int(c["id"]), str(c["name"])) for c in data["categories"])


def rle_counts(counts: str | bytes, source: str = "RLE", field: str = "counts") -> np.ndarray:
    """Run lengths (int64) of a compressed COCO RLE string, decoded as pycocotools reads it.

    Each run is a little-endian sequence of 5-bit groups stored as ``chr(48 + group)``, bit 0x20 meaning
    "more groups follow" and bit 0x10 of the last group the sign; from the fourth run on, the value is a
    difference to the run two places earlier. Raises :class:`DatasetError` on a malformed string.
    """
    raw = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    b = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if b.size == 0:
        return np.zeros(0, np.int64)
    if b.min() < 0 or b.max() > 63:
        bad = raw[int(np.flatnonzero((b < 0) | (b > 63))[0])]
        raise DatasetError(f"{source}: {field}: character {chr(bad)!r} is not part of a compressed RLE string")
    ends = (b & 0x20) == 0
    if not ends[-1]:
        raise DatasetError(f"{source}: {field}: compressed RLE string is truncated (last run unfinished)")
    starts = np.flatnonzero(np.r_[True, ends[:-1]])
    run = np.cumsum(np.r_[0, ends[:-1].astype(np.int64)])
    pos = np.arange(b.size) - starts[run]
    if pos.max() >= 12:  # 60 bits: far beyond any image, and int64 arithmetic stays exact
        raise DatasetError(f"{source}: {field}: compressed RLE run too long to be a pixel count")
    x = np.add.reduceat((b & 0x1F) << (5 * pos), starts)
    last = b[ends]
    neg = (last & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * (pos[ends][neg] + 1))
    out = x.copy()
    out[1::2] = np.cumsum(x[1::2])
    out[2::2] = np.cumsum(x[2::2])
    return out


def _check_segmentation(segm: Any, h: int, w: int, source: str, where: str) -> None:
    field = f"{where}.segmentation"
    if segm is None:
        raise DatasetError(f"{source}: {field}: missing (needed for task instance / semantic)")
    if isinstance(segm, list):
        if not segm:
            raise DatasetError(f"{source}: {field}: empty polygon list (the object has no mask)")
        margin = POLYGON_MARGIN * max(h, w) + 1.0
        for j, poly in enumerate(segm):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise DatasetError(f"{source}: {field}[{j}]: a polygon needs an even number (>= 6) of coordinates")
            for v in poly:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise DatasetError(f"{source}: {field}[{j}]: non-numeric coordinate {v!r}")
            xy = np.asarray(poly, np.float64).reshape(-1, 2)
            if not np.isfinite(xy).all():
                k = int(np.flatnonzero(~np.isfinite(xy.ravel()))[0])
                raise DatasetError(f"{source}: {field}[{j}][{k}]: coordinate {poly[k]!r} is not finite")
            far = (xy[:, 0] < -margin) | (xy[:, 0] > w + margin) | (xy[:, 1] < -margin) | (xy[:, 1] > h + margin)
            if far.any():
                k = int(np.flatnonzero(far)[0])
                raise DatasetError(
                    f"{source}: {field}[{j}]: vertex {k} ({poly[2 * k]!r}, {poly[2 * k + 1]!r}) lies far outside the "
                    f"{w}x{h} (WxH) image (allowed margin {margin:g} px)"
                )
        return
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not isinstance(size, list) or len(size) != 2:
            raise DatasetError(f"{source}: {field}.size: expected [height, width]")
        size_hw = [_int_field(v, source, f"{field}.size[{j}]") for j, v in enumerate(size)]
        if size_hw != [h, w]:
            raise DatasetError(f"{source}: {field}.size: {size} differs from the image size [{h}, {w}]")
        if isinstance(counts, list):
            if all(type(c) is int for c in counts):  # the usual case, without a call per run
                runs = np.asarray(counts, np.int64)
            else:
                runs = np.asarray(
                    [_int_field(c, source, f"{field}.counts[{j}]") for j, c in enumerate(counts)], np.int64
                )
            what = "uncompressed"
        elif isinstance(counts, (str, bytes)):
            runs = rle_counts(counts, source, f"{field}.counts")
            what = "compressed"
        else:
            raise DatasetError(f"{source}: {field}.counts: expected a list (uncompressed) or a string (compressed RLE)")
        if runs.size and runs.min() < 0:
            raise DatasetError(f"{source}: {field}.counts: {what} RLE has a negative run length")
        if int(runs.sum()) != h * w:
            raise DatasetError(
                f"{source}: {field}.counts: {what} RLE runs sum to {int(runs.sum())}, not height * width = {h * w}"
            )
        return
    raise DatasetError(f"{source}: {field}: expected polygons (a list) or RLE (an object), got {type(segm).__name__}")


def decode_segmentation(segm: Any, h: int, w: int) -> np.ndarray:
    """H x W uint8 mask of a COCO ``segmentation`` (polygons, uncompressed or compressed RLE)."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        if not segm:
            raise ValueError("empty polygon list (the object has no mask)")
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, h, w)
    else:
        counts = segm["counts"]
        rle = {
            "size": [int(v) for v in segm["size"]],
            "counts": counts.encode("utf-8") if isinstance(counts, str) else counts,
        }
    with warnings.catch_warnings():  # pycocotools' numpy-2 "copy keyword" DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = mask_utils.decode(rle)
    return np.ascontiguousarray(mask, dtype=np.uint8).reshape(h, w)


class COCODataset(AnnotatedDataset):
    """One COCO instances file over one image folder.

    Args:
        annotation_file: ``instances_*.json``.
        image_root: folder the images' ``file_name`` are relative to.
        task: ``detection`` | ``instance`` (decoded masks) | ``semantic`` (painted label map).
        categories: the ``(id, name)`` list that defines labels 1..K; default: this file's own
            categories in sorted id order. A file whose categories differ is an error.
        keep_crowd: keep ``iscrowd`` regions (flagged) in detection / instance targets.
        on_unknown_class: ``error`` or ``skip`` (counted) annotations with an unknown ``category_id``.
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path,
        task: Task = "detection",
        augment: Sequence[dict[str, Any]] | None = None,
        categories: Sequence[tuple[int, str]] | None = None,
        keep_crowd: bool = True,
        on_unknown_class: OnUnknown = "error",
        name: str | None = None,
    ) -> None:
        from pycocotools.coco import COCO

        check_choice(on_unknown_class, ("error", "skip"), "on_unknown_class")
        self.annotation_file = Path(annotation_file)
        self.image_root = Path(image_root)
        source = str(self.annotation_file)
        data = load_coco_json(self.annotation_file)
        own = categories_of(data)
        if categories is not None and list(map(tuple, categories)) != own:
            raise DatasetError(f"{source}: categories: differ from the reference categories (ids and names must match)")
        self.categories = own
        self.category_id_to_label = {cid: i for i, (cid, _) in enumerate(own, start=1)}
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        ann_pos = {id(a): i for i, a in enumerate(data["annotations"])}

        stats = new_stats()
        unknown: list[str] = []
        records: list[ImageRecord] = []
        for i, img in enumerate(data["images"]):
            iid, h, w = int(img["id"]), int(img["height"]), int(img["width"])
            path = safe_image_path(self.image_root, img["file_name"], source, f"images[{i}].file_name")
            boxes, labels, crowd, segms = [], [], [], []
            for ann in self.coco.imgToAnns.get(iid, []):
                a_i = ann_pos[id(ann)]
                where = f"annotations[{a_i}] (id {ann.get('id')})"
                cid = ann.get("category_id")
                if not isinstance(cid, int) or isinstance(cid, bool) or cid not in self.category_id_to_label:
                    if on_unknown_class == "skip":
                        unknown.append(str(cid))
                        stats["unknown_class_skipped"] += 1
                        continue
                    raise DatasetError(
                        f"{source}: {where}.category_id: unknown category {cid!r} (object {a_i}, image id {iid}); "
                        "set on_unknown_class: skip to ignore such annotations"
                    )
                bbox = ann.get("bbox")
                if not isinstance(bbox, list) or len(bbox) != 4:
                    raise DatasetError(f"{source}: {where}.bbox: expected [x, y, width, height], got {bbox!r}")
                x, y, bw, bh = (as_number(v, source, f"{where}.bbox[{j}]") for j, v in enumerate(bbox))
                is_crowd = bool(as_number(ann.get("iscrowd", 0), source, f"{where}.iscrowd"))
                if task != "detection":
                    _check_segmentation(ann.get("segmentation"), h, w, source, where)
                boxes.append((x, y, x + bw, y + bh))
                labels.append(self.category_id_to_label[cid])
                crowd.append(is_crowd)
                segms.append(ann.get("segmentation"))
            clipped, changed, valid = clip_boxes(np.asarray(boxes, np.float64).reshape(-1, 4), h, w)
            stats["clipped"] += int((changed & valid).sum())
            stats["degenerate_dropped"] += int((~valid).sum())
            n = len(labels)
            rec = ImageRecord(
                image_id=iid,
                file_name=img["file_name"],
                path=path,
                height=h,
                width=w,
                boxes=clipped,
                labels=np.asarray(labels, np.int64),
                difficult=np.zeros(n, bool),
                iscrowd=np.asarray(crowd, bool),
                truncated=np.zeros(n, bool),
                source_index=np.arange(n, dtype=np.int64),
                segmentations=segms,
            )
            keep = valid.copy()
            if not keep_crowd and task != "semantic":
                stats["crowd_excluded"] += int((valid & rec.iscrowd).sum())
                keep &= ~rec.iscrowd
            rec.select(keep)
            records.append(rec)
        ImageIndex().require((r.path for r in records), source)
        names = [n for _, n in own]
        super().__init__(
            records, names, task, augment, name or f"COCO {self.annotation_file.name} ({task})", stats, unknown
        )

    def _decode(self, rec: ImageRecord, k: int) -> np.ndarray:
        try:
            return decode_segmentation(rec.segmentations[k], rec.height, rec.width)
        except Exception as exc:  # pycocotools raises bare exceptions on bad input
            raise DatasetError(
                f"{self.annotation_file}: image {rec.file_name}: object {k}: segmentation: cannot decode ({exc})"
            ) from None

    def instance_masks(self, rec: ImageRecord) -> np.ndarray:
        masks = np.zeros((len(rec.labels), rec.height, rec.width), np.uint8)
        for j, k in enumerate(rec.source_index):
            masks[j] = self._decode(rec, int(k))
        return masks

    def semantic_map(self, rec: ImageRecord) -> np.ndarray:
        sem = np.zeros((rec.height, rec.width), np.uint8)
        for j, k in enumerate(rec.source_index):
            m = self._decode(rec, int(k)).astype(bool)
            sem[m] = IGNORE_INDEX if rec.iscrowd[j] else int(rec.labels[j])
        return sem


class COCODataModule(BaseDataModule):
    """COCO-format instances JSON + image folder for detection, semantic or instance segmentation.

    Args:
        train_annotations, train_images: instances JSON and the folder its ``file_name`` are relative to.
        val_annotations, val_images: the same for validation.
        test_annotations, test_images: for ``trainer.test``; ``None`` tests on the val files.
        keep_crowd_in_train: keep ``iscrowd`` regions as training targets (default: dropped; they are
            always kept, flagged, in val / test targets, and painted 255 in semantic maps).
        on_unknown_class: ``error`` (default) or ``skip`` annotations with an unknown ``category_id``.
        **loader_kwargs: ``task`` (``detection`` | ``semantic`` | ``instance``), ``batch_size`` and the
            other loader arguments of :class:`~datamodules.base.BaseDataModule`.

    Labels 1..K follow the sorted category ids (COCO's 80 ids 1..90 become 1..80):
    ``category_id_to_label`` / ``label_to_category_id``; ``save_label_map(path)`` writes them (it is
    also written as ``label_map.json`` into the trainer's log dir at setup when a logger is set).
    """

    def __init__(
        self,
        train_annotations: str,
        train_images: str,
        val_annotations: str,
        val_images: str,
        test_annotations: str | None = None,
        test_images: str | None = None,
        *,
        keep_crowd_in_train: bool = False,
        on_unknown_class: OnUnknown = "error",
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        check_choice(on_unknown_class, ("error", "skip"), "on_unknown_class")
        if (test_annotations is None) != (test_images is None):
            raise ValueError("give both test_annotations and test_images, or neither")
        self.files = {
            "train": (train_annotations, train_images),
            "val": (val_annotations, val_images),
            "test": (test_annotations, test_images) if test_annotations else (val_annotations, val_images),
        }
        self.root = str(Path(train_images).parent)
        self.keep_crowd_in_train = keep_crowd_in_train
        self.on_unknown_class = on_unknown_class
        self._categories: list[tuple[int, str]] | None = None

    # -- label map -----------------------------------------------------------------------------------
    @property
    def categories(self) -> list[tuple[int, str]]:
        """``(category id, name)`` in label order, read from the val file (the smaller one usually)."""
        if self._categories is None:
            self._categories = categories_of(load_coco_json(self.files["val"][0]))
        return self._categories

    def _load_class_names(self) -> Sequence[str]:
        return [name for _, name in self.categories]

    @property
    def category_id_to_label(self) -> dict[int, int]:
        return {cid: i for i, (cid, _) in enumerate(self.categories, start=1)}

    @property
    def label_to_category_id(self) -> dict[int, int]:
        return {i: cid for i, (cid, _) in enumerate(self.categories, start=1)}

    def save_label_map(self, path: str | Path) -> Path:
        """Write ``{"labels": [{"label", "category_id", "name"}, ...], ...}`` as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "note": "label = position in sorted category ids + 1; label 0 is background",
            "labels": [
                {"label": i, "category_id": cid, "name": name} for i, (cid, name) in enumerate(self.categories, start=1)
            ],
            "category_id_to_label": {str(k): v for k, v in self.category_id_to_label.items()},
            "label_to_category_id": {str(k): v for k, v in self.label_to_category_id.items()},
        }
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return path

    # -- datasets ------------------------------------------------------------------------------------
    def _same_val_test(self) -> bool:
        return self.files["test"] == self.files["val"]

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.logger is not None and trainer.is_global_zero and trainer.log_dir:
            self.save_label_map(Path(trainer.log_dir) / "label_map.json")

    def _make_dataset(self, split: Literal["train", "val", "test"]) -> COCODataset:
        ann, images = self.files[split]
        return COCODataset(
            ann,
            images,
            task=self.task,
            augment=self.augment_for(split),
            categories=self.categories,
            keep_crowd=self.keep_crowd_in_train if split == "train" else True,
            on_unknown_class=self.on_unknown_class,
            name=f"COCO {Path(ann).name} ({self.task}, {split})",
        )
