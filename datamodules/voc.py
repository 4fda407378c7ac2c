"""Pascal VOC reader (XML + ImageSets + SegmentationClass / SegmentationObject) and its DataModule.

Box convention: VOC XML stores 1-based inclusive pixel indices; boxes here are 0-based continuous
coordinates, ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (Detectron2's convention), so a
box covering pixel columns 0..9 is ``[0, 10)``. Fractional values (VOC2012 action XMLs) are kept.
XML is parsed with ``defusedxml`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from defusedxml import DefusedXmlException
from PIL import Image
from defusedxml import ElementTree as SafeET

from datamodules.base import (
    IGNORE_INDEX,
    AnnotatedDataset,
    BaseDataModule,
    ImageRecord,
    Task,
    check_choice,
)
from datamodules.checks import DatasetError, ImageIndex, as_number, clip_boxes, new_stats, safe_image_path
from datamodules.palette import read_label_png

__all__ = [
    "VOC_CLASSES",
    "VOCDataset",
    "VOCDataModule",
    "parse_voc_xml",
    "resolve_voc_root",
    "read_image_set",
    "resolve_sbd_root",
    "read_sbd_split",
    "read_sbd_cls",
]

#: the 20 Pascal VOC classes in the devkit's order (label = position + 1)
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

OnUnknown = Literal["error", "skip"]


def resolve_voc_root(root: str | Path, year: str) -> Path:
    """The VOC "year" folder: ``root`` itself, ``root/VOC<year>`` or ``root/VOCdevkit/VOC<year>``."""
    root = Path(root)
    candidates = [root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"]
    for c in candidates:
        if (c / "ImageSets").is_dir() and ((c / "JPEGImages").is_dir() or (c / "Annotations").is_dir()):
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetError(
        f"{root}: root: no VOC{year} folder found (looked for ImageSets/ and JPEGImages/ in {tried}); "
        "point root at a VOCdevkit folder or at the year folder, or set download: true"
    )


def read_image_set(year_dir: Path, sets: str, split: str) -> list[str]:
    """Stems listed in ``ImageSets/<sets>/<split>.txt`` (first token of each non-empty line)."""
    path = year_dir / "ImageSets" / sets / f"{split}.txt"
    if not path.is_file():
        folder = path.parent
        have = sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem) if folder.is_dir() else []
        raise DatasetError(f"{path}: split {split!r}: image set file not found (available: {have or 'none'})")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable image set ({exc})") from None
    stems = [ln.split()[0] for ln in lines if ln.strip()]
    for i, s in enumerate(stems, 1):
        if "/" in s or "\\" in s or s in (".", ".."):
            raise DatasetError(f"{path}: line {i}: {s!r} is not a plain image id")
    return stems


def _flag(obj: Any, tag: str, source: str, field: str) -> bool:
    text = obj.findtext(tag)
    if text is None or not text.strip():
        return False  # optional: absent in e.g. VOC2012 action XMLs
    return as_number(text, source, field) != 0


def parse_voc_xml(
    path: Path,
    class_to_label: dict[str, int],
    on_unknown_class: OnUnknown = "error",
) -> dict[str, Any]:
    """Parse one VOC XML into raw (unclipped) 0-based boxes and per-object fields.

    Returns a dict with ``height``, ``width``, ``boxes`` (N x 4 float64), ``labels``, ``difficult``,
    ``truncated``, ``index`` (1-based position of the object in the XML), ``unknown`` (names of
    skipped objects) and ``num_objects`` (all ``<object>`` s of the XML, skipped ones included).
    Raises :class:`DatasetError` naming the file and the field on bad input.
    """
    source = str(path)
    try:
        tree = SafeET.parse(path)
    except FileNotFoundError:
        raise DatasetError(f"{source}: annotation file not found") from None
    except SafeET.ParseError as exc:
        raise DatasetError(f"{source}: malformed XML ({exc})") from None
    except DefusedXmlException as exc:
        raise DatasetError(f"{source}: XML refused by defusedxml ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise DatasetError(f"{source}: unreadable annotation file ({exc})") from None
    root = tree.getroot()
    if root.tag != "annotation":
        raise DatasetError(f"{source}: root element: expected <annotation>, got <{root.tag}>")
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{source}: size: missing")
    width = as_number(size.findtext("width"), source, "size.width")
    height = as_number(size.findtext("height"), source, "size.height")
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise DatasetError(f"{source}: size: expected positive integer width/height, got {width} x {height}")

    boxes, labels, difficult, truncated, index, unknown = [], [], [], [], [], []
    for k, obj in enumerate(root.findall("object"), start=1):
        where = f"object[{k}]"
        name = obj.findtext("name")
        if name is None or not name.strip():
            raise DatasetError(f"{source}: {where}.name: missing")
        name = name.strip()
        if name not in class_to_label:
            if on_unknown_class == "skip":
                unknown.append(name)
                continue
            raise DatasetError(
                f"{source}: {where}.name: unknown class {name!r} (object {k}; known: {', '.join(class_to_label)}); "
                "set on_unknown_class: skip to ignore such objects"
            )
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{source}: {where}.bndbox: missing")
        xmin, ymin, xmax, ymax = (
            as_number(bb.findtext(t), source, f"{where}.bndbox.{t}") for t in ("xmin", "ymin", "xmax", "ymax")
        )
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
        labels.append(class_to_label[name])
        difficult.append(_flag(obj, "difficult", source, f"{where}.difficult"))
        truncated.append(_flag(obj, "truncated", source, f"{where}.truncated"))
        index.append(k)
    return {
        "height": int(height),
        "width": int(width),
        "boxes": np.asarray(boxes, np.float64).reshape(-1, 4),
        "labels": np.asarray(labels, np.int64),
        "difficult": np.asarray(difficult, bool),
        "truncated": np.asarray(truncated, bool),
        "index": np.asarray(index, np.int64),
        "unknown": unknown,
        "num_objects": len(root.findall("object")),
    }


def resolve_sbd_root(root: str | Path) -> Path:
    """The SBD ``dataset`` folder (``img/``, ``cls/``, ``train.txt``, ``val.txt``): ``root`` itself,
    ``root/dataset`` or ``root/benchmark_RELEASE/dataset``."""
    root = Path(root)
    candidates = [root, root / "dataset", root / "benchmark_RELEASE" / "dataset"]
    for c in candidates:
        if (c / "cls").is_dir() and (c / "train.txt").is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetError(
        f"{root}: sbd_root: no SBD dataset folder found (looked for cls/ and train.txt in {tried}); point sbd_root "
        "at the extracted benchmark_RELEASE folder"
    )


def read_sbd_split(sbd_dir: Path, split: str) -> list[str]:
    """Stems listed in the SBD ``<split>.txt`` (``train`` or ``val``)."""
    path = Path(sbd_dir) / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"{path}: SBD split {split!r}: file not found")
    try:
        stems = [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable SBD split file ({exc})") from None
    for i, s in enumerate(stems, 1):
        if "/" in s or "\\" in s or s in (".", ".."):
            raise DatasetError(f"{path}: line {i}: {s!r} is not a plain image id")
    return stems


def read_sbd_cls(path: str | Path) -> np.ndarray:
    """H x W uint8 class map of an SBD ``cls/<stem>.mat`` (``GTcls.Segmentation``: 0 background, 1..20)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False, variable_names=["GTcls"])
    except FileNotFoundError:
        raise DatasetError(f"{path}: SBD label file not found") from None
    except (MatReadError, OSError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: corrupt or unreadable .mat file ({type(exc).__name__}: {exc})") from None
    gt = mat.get("GTcls")
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise DatasetError(f"{path}: GTcls.Segmentation: missing")
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.dtype.kind not in "iuf":
        raise DatasetError(f"{path}: GTcls.Segmentation: expected a 2-D integer array, got {seg.dtype} {seg.shape}")
    if seg.size and (seg.min() < 0 or seg.max() > 255 or (seg.dtype.kind == "f" and not np.all(seg == np.round(seg)))):
        raise DatasetError(f"{path}: GTcls.Segmentation: values must be integers in 0..255")
    return np.ascontiguousarray(seg.astype(np.uint8))


#: image-set name of the usual augmented segmentation training set (needs ``sbd_dir`` / ``sbd_root``)
TRAIN_AUG = "train_aug"


class VOCDataset(AnnotatedDataset):
    """One split of a VOC-format "year" folder, or several concatenated (e.g. VOC07+12 trainval).

    Args:
        year_dir: the folder holding ``JPEGImages``, ``Annotations``, ``ImageSets``, ...
        split: image-set name (``ImageSets/Main/<split>.txt`` for detection,
            ``ImageSets/Segmentation/<split>.txt`` for semantic / instance). ``train_aug`` with ``sbd_dir``
            (task ``semantic``): the augmented set of the FCN / DeepLab papers, see ``sbd_dir``.
        task: ``detection`` (XML boxes), ``instance`` (XML boxes + SegmentationObject masks, object k of
            the PNG = k-th XML object) or ``semantic`` (SegmentationClass label maps).
        class_names: K names; label = position + 1 (and the SegmentationClass value).
        keep_difficult: keep ``difficult`` objects (flagged) in the targets; False drops them.
        on_unknown_class: ``error`` or ``skip`` (counted in ``stats``).
        more_sets: further ``(year folder, image set)`` pairs appended after ``(year_dir, split)``; an image
            in two of the sets is an error. ``image_id`` is then the 1-based position in the concatenation.
        sbd_dir: the SBD ``dataset`` folder (or ``benchmark_RELEASE``). Split ``train_aug`` of a VOC2012
            folder is then VOC2012 ``Segmentation/train`` (its PNGs) followed by the images of SBD
            ``train`` + ``val`` not in VOC2012 ``Segmentation/train`` or ``val`` (SBD ``cls/*.mat`` labels,
            SBD ``img/`` images): 10582 images with the full data sets.
    """

    def __init__(
        self,
        year_dir: str | Path,
        split: str,
        task: Task = "detection",
        class_names: Sequence[str] = VOC_CLASSES,
        augment: Sequence[dict[str, Any]] | None = None,
        keep_difficult: bool = True,
        on_unknown_class: OnUnknown = "error",
        name: str | None = None,
        more_sets: Sequence[tuple[str | Path, str]] = (),
        sbd_dir: str | Path | None = None,
    ) -> None:
        check_choice(on_unknown_class, ("error", "skip"), "on_unknown_class")
        check_choice(task, ("detection", "semantic", "instance"), "task")
        self.year_dir = Path(year_dir)
        self.split = split
        self.sets = [(self.year_dir, split)] + [(Path(d), str(s)) for d, s in more_sets]
        self.sbd_dir = resolve_sbd_root(sbd_dir) if sbd_dir is not None else None
        self._class_to_label = {n: i for i, n in enumerate(class_names, start=1)}
        self._task = task
        self._keep_difficult = keep_difficult
        self._on_unknown_class = on_unknown_class
        stats = new_stats()
        unknown: list[str] = []
        records: list[ImageRecord] = []
        listed: dict[Path, tuple[int, str]] = {}  # image path -> (set, where it was listed first)
        files: dict[str, None] = {}  # the list files read, in order
        index = ImageIndex()
        for k, (set_dir, set_name) in enumerate(self.sets):
            for rec, where in self._set_records(set_dir, set_name, stats, unknown):
                first = listed.setdefault(rec.path, (k, where))
                if first[0] != k:  # a repeat inside one image-set file is that file's choice, as before
                    raise DatasetError(f"{where}: image {rec.file_name} is also in an earlier set ({first[1]})")
                files[where.rsplit(": line ", 1)[0]] = None
                records.append(rec)
        for i, rec in enumerate(records, start=1):
            rec.image_id = i
        source = ", ".join(files) or str(self.year_dir / "ImageSets")
        index.require((r.path for r in records), source)
        if task != "detection":
            index.require((r.mask_path for r in records if r.mask_path is not None), source)
        default_name = " + ".join(f"VOC {d.name} {s}" for d, s in self.sets) + f" ({task})"
        super().__init__(records, class_names, task, augment, name or default_name, stats, unknown)

    def _set_records(
        self, year_dir: Path, split: str, stats: dict[str, int], unknown: list[str]
    ) -> list[tuple[ImageRecord, str]]:
        """The records of one image set, each with ``"<set file>: line <i>"`` (where it is listed)."""
        task = self._task
        sets = "Main" if task == "detection" else "Segmentation"
        if split == TRAIN_AUG and self.sbd_dir is not None:
            if task != "semantic":
                raise DatasetError(f"{year_dir}: split {TRAIN_AUG!r}: SBD labels are used for task semantic only")
            return self._train_aug_records(year_dir, stats, unknown)
        set_file = year_dir / "ImageSets" / sets / f"{split}.txt"
        if split == TRAIN_AUG and not set_file.is_file():
            raise DatasetError(f"{set_file}: split {TRAIN_AUG!r}: needs the SBD folder (sbd_dir / sbd_root)")
        stems = read_image_set(year_dir, sets, split)
        image_dir = year_dir / "JPEGImages"
        source = str(set_file)
        out = []
        for i, stem in enumerate(stems, start=1):
            file_name = f"{stem}.jpg"
            path = safe_image_path(image_dir, file_name, source, f"line {i}")
            rec = ImageRecord(
                image_id=i, file_name=file_name, path=path, height=-1, width=-1, **ImageRecord.empty_arrays()
            )
            if task == "semantic":
                rec.mask_path = year_dir / "SegmentationClass" / f"{stem}.png"
            else:
                xml = year_dir / "Annotations" / f"{stem}.xml"
                ann = parse_voc_xml(xml, self._class_to_label, self._on_unknown_class)
                unknown += ann["unknown"]
                stats["unknown_class_skipped"] += len(ann["unknown"])
                rec.height, rec.width = ann["height"], ann["width"]
                rec.num_annotated = ann["num_objects"]
                boxes, changed, valid = clip_boxes(ann["boxes"], rec.height, rec.width)
                stats["clipped"] += int((changed & valid).sum())
                stats["degenerate_dropped"] += int((~valid).sum())
                rec.boxes, rec.labels = boxes, ann["labels"]
                rec.difficult, rec.truncated = ann["difficult"], ann["truncated"]
                rec.iscrowd = np.zeros(len(boxes), bool)
                rec.source_index = ann["index"]
                keep = valid.copy()
                if not self._keep_difficult:
                    stats["difficult_excluded"] += int((valid & rec.difficult).sum())
                    keep &= ~rec.difficult
                rec.select(keep)
                if task == "instance":
                    rec.mask_path = year_dir / "SegmentationObject" / f"{stem}.png"
            out.append((rec, f"{source}: line {i}"))
        return out

    def _train_aug_records(
        self, year_dir: Path, stats: dict[str, int], unknown: list[str]
    ) -> list[tuple[ImageRecord, str]]:
        assert self.sbd_dir is not None
        out = self._set_records(year_dir, "train", stats, unknown)
        held_out = set(read_image_set(year_dir, "Segmentation", "val"))
        taken = {Path(r.file_name).stem for r, _ in out}
        for sbd_split in ("train", "val"):
            source = str(self.sbd_dir / f"{sbd_split}.txt")
            for i, stem in enumerate(read_sbd_split(self.sbd_dir, sbd_split), start=1):
                if stem in held_out or stem in taken:
                    continue
                taken.add(stem)
                file_name = f"{stem}.jpg"
                path = safe_image_path(self.sbd_dir / "img", file_name, source, f"line {i}")
                rec = ImageRecord(
                    image_id=0,
                    file_name=file_name,
                    path=path,
                    height=-1,
                    width=-1,
                    mask_path=self.sbd_dir / "cls" / f"{stem}.mat",
                    **ImageRecord.empty_arrays(),
                )
                out.append((rec, f"{source}: line {i}"))
        return out

    def _read_png(self, path: Path) -> np.ndarray:
        try:
            return read_label_png(path)
        except FileNotFoundError:
            raise DatasetError(f"{path}: label PNG not found") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning when escalated
            raise DatasetError(
                f"{path}: label PNG too large, refused as a possible decompression bomb ({exc})"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise DatasetError(f"{path}: corrupt or unsupported label PNG ({exc})") from None

    def instance_masks(self, rec: ImageRecord) -> np.ndarray:
        assert rec.mask_path is not None
        objects = self._read_png(rec.mask_path)
        present = np.unique(objects)
        orphan = present[(present != 0) & (present != IGNORE_INDEX) & (present > rec.num_annotated)]
        if rec.num_annotated >= 0 and orphan.size:
            xml = rec.mask_path.parent.parent / "Annotations" / f"{rec.mask_path.stem}.xml"
            raise DatasetError(
                f"{rec.mask_path}: object indices {orphan.tolist()} have no object in {xml} "
                f"({rec.num_annotated} object(s); PNG value k is the k-th XML object)"
            )
        return (objects[None, :, :] == rec.source_index[:, None, None]).astype(np.uint8)

    def semantic_map(self, rec: ImageRecord) -> np.ndarray:
        assert rec.mask_path is not None
        sem = read_sbd_cls(rec.mask_path) if rec.mask_path.suffix == ".mat" else self._read_png(rec.mask_path)
        bad = np.setdiff1d(np.unique(sem), np.r_[np.arange(len(self.class_names) + 1), IGNORE_INDEX])
        if bad.size:
            raise DatasetError(
                f"{rec.mask_path}: label values {bad.tolist()} are neither 0, "
                f"a class index 1..{len(self.class_names)} nor 255"
            )
        return sem


class VOCDataModule(BaseDataModule):
    """Pascal VOC (or any VOC-format folder) for detection, semantic or instance segmentation.

    Args:
        root: a ``VOCdevkit`` folder (``VOC<year>`` inside), its parent, or the year folder itself.
        year: ``"2007"`` ... ``"2012"``; picks ``VOC<year>`` under ``root`` (and the download).
        train_split, val_split: image-set names (``ImageSets/Main`` for detection,
            ``ImageSets/Segmentation`` otherwise). VOC2007 has ``test``; VOC2012 use ``val_split: val``.
        test_split: image set for ``trainer.test``; ``None`` tests on ``val_split``.
        keep_difficult_in_train: keep ``difficult`` objects in training targets (default: dropped).
            Validation / test targets always keep them, flagged, for VOC-style evaluation.
        on_unknown_class: ``error`` (default) or ``skip`` objects whose class is not in ``class_names``.
        class_names: for VOC-format datasets with other classes; default the 20 VOC classes.
        download: fetch the tarballs with torchvision's VOC downloader in ``prepare_data`` when a split
            is missing (off by default).
        train_sets: ``[[year, split], ...]`` to train on several image sets concatenated, e.g.
            ``[[2007, trainval], [2012, trainval]]`` (the papers' "07+12"); replaces ``year`` /
            ``train_split`` for training only (validation and test stay ``year`` / ``val_split``).
        sbd_root: the extracted SBD ``benchmark_RELEASE`` folder; needed by (and only by) the training
            split ``train_aug`` of VOC2012 (task ``semantic``): VOC2012 seg train + SBD train + val minus
            VOC2012 seg val (see :class:`VOCDataset`).
        **loader_kwargs: ``task`` (``detection`` | ``semantic`` | ``instance``), ``batch_size`` and the
            other loader arguments of :class:`~datamodules.base.BaseDataModule`.
    """

    # the model holds the class names (linked from this module by the CLI) in its own hparams; kept here too,
    # the two would differ (None / list vs the resolved tuple) and Lightning refuses to merge them for the logger
    hparams_ignore = ("class_names",)

    def __init__(
        self,
        root: str = "data/VOCdevkit",
        *,
        year: str = "2007",
        train_split: str = "trainval",
        val_split: str = "test",
        test_split: str | None = None,
        keep_difficult_in_train: bool = False,
        on_unknown_class: OnUnknown = "error",
        class_names: list[str] | None = None,
        download: bool = False,
        train_sets: list[tuple[int | str, str]] | None = None,
        sbd_root: str | None = None,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        check_choice(on_unknown_class, ("error", "skip"), "on_unknown_class")
        self.root = root
        self.year = str(year)
        self.splits = {"train": train_split, "val": val_split, "test": test_split or val_split}
        if train_sets is not None:
            if not train_sets:
                raise ValueError("train_sets is empty: give [[year, split], ...] or leave it null")
            pairs = []
            for pair in train_sets:
                if len(pair) != 2 or not str(pair[1]).strip():
                    raise ValueError(f"train_sets: expected [year, split] pairs, got {pair!r}")
                pairs.append((str(pair[0]), str(pair[1])))
            self.train_sets = pairs
        else:
            self.train_sets = [(self.year, train_split)]
        if sbd_root is not None and not any(s == TRAIN_AUG for _, s in self.train_sets):
            raise ValueError(f"sbd_root is only used by the training split {TRAIN_AUG!r}; set train_split: {TRAIN_AUG}")
        if sbd_root is not None and self.task != "semantic":
            raise ValueError(f"sbd_root (SBD class labels) needs task: semantic, got {self.task!r}")
        self.sbd_root = sbd_root
        self.keep_difficult_in_train = keep_difficult_in_train
        self.on_unknown_class = on_unknown_class
        self.download = download
        if class_names is not None and len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names has duplicates: {class_names}")
        self._class_names = tuple(class_names) if class_names else VOC_CLASSES

    def _load_class_names(self) -> Sequence[str]:
        return VOC_CLASSES

    def _same_val_test(self) -> bool:
        return self.splits["test"] == self.splits["val"]

    @property
    def year_dir(self) -> Path:
        return resolve_voc_root(self.root, self.year)

    def prepare_data(self) -> None:
        if not self.download:
            return
        import torchvision.datasets as tvd

        root = Path(self.root)
        sets = "Main" if self.task == "detection" else "Segmentation"
        cls = tvd.VOCDetection if self.task == "detection" else tvd.VOCSegmentation
        wanted = [(y, "train" if s == TRAIN_AUG else s) for y, s in self.train_sets]  # SBD itself is not fetched
        wanted += [(y, "val") for y, s in self.train_sets if s == TRAIN_AUG]  # held out of train_aug
        wanted += [(self.year, self.splits["val"]), (self.year, self.splits["test"])]
        for year, split in dict.fromkeys(wanted):
            # torchvision extracts into <dir>/VOCdevkit/VOC<year>: find <dir> from what root points at
            if root.name == f"VOC{year}" and root.parent.name == "VOCdevkit":
                base = root.parent.parent
            elif root.name == "VOCdevkit":
                base = root.parent
            else:
                base = root
            try:
                if (resolve_voc_root(self.root, year) / "ImageSets" / sets / f"{split}.txt").is_file():
                    continue
            except DatasetError:
                pass
            cls(root=str(base), year=year, image_set=split, download=True)

    def _make_dataset(self, split: Literal["train", "val", "test"]) -> VOCDataset:
        if split == "train":
            sets = [(resolve_voc_root(self.root, y), s) for y, s in self.train_sets]
            dirs = {d for d, _ in sets}
            years = {y for y, _ in self.train_sets}
            if len(dirs) < len(years):
                raise DatasetError(
                    f"{self.root}: root: train_sets name the years {sorted(years)} but they all resolve to the year "
                    f"folder {next(iter(dirs))}; point root at the VOCdevkit folder that holds VOC<year> for each"
                )
            label = " + ".join(f"VOC{y} {s}" for y, s in self.train_sets)
        else:
            sets = [(self.year_dir, self.splits[split])]
            label = f"VOC{self.year} {self.splits[split]}"
        return VOCDataset(
            sets[0][0],
            sets[0][1],
            task=self.task,
            class_names=self.class_names,
            augment=self.augment_for(split),
            keep_difficult=self.keep_difficult_in_train if split == "train" else True,
            on_unknown_class=self.on_unknown_class,
            name=f"{label} ({self.task}, {split})",
            more_sets=sets[1:],
            sbd_dir=self.sbd_root if split == "train" else None,
        )
