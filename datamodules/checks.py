"""Bad-input policy shared by the VOC and COCO readers.

Every problem with the data on disk is reported the same way, whichever reader meets it:

* a missing or unreadable image, malformed XML / JSON, a missing or non-numeric required field, a
  ``file_name`` that escapes the image folder -> :class:`DatasetError` whose message starts with the
  offending file and names the field (``"<file>: <field>: <what is wrong>"``);
* an object of an unknown class -> :class:`DatasetError` naming the file, the object index and the
  class (``on_unknown_class="error"``, the default), or skipped and counted (``"skip"``);
* a box that sticks out of the image -> clipped to it and counted; a box that is empty after clipping
  (width or height <= 0) -> dropped with its label / flags / mask and counted;
* an image (or label PNG) with more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` allows (a possible
  decompression bomb) -> :class:`DatasetError` naming the file;
* grayscale, CMYK, palette or alpha images -> converted to RGB (alpha is dropped, not composited);
* an image without objects -> kept as a negative sample.

The counts of one dataset live in ``dataset.stats`` and are reported in ONE :class:`DatasetWarning`
per dataset (:func:`warn_summary`).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DatasetError",
    "DatasetWarning",
    "new_stats",
    "warn_summary",
    "safe_image_path",
    "load_rgb",
    "clip_boxes",
    "as_number",
    "ImageIndex",
]

#: keys of ``dataset.stats``; the first three are anomalies reported by :func:`warn_summary`.
STAT_KEYS = (
    "clipped",  # boxes clipped to the image
    "degenerate_dropped",  # boxes with width or height <= 0 after clipping, dropped
    "unknown_class_skipped",  # objects of a class not in class_names (on_unknown_class="skip")
    "images",  # images in the dataset
    "objects",  # objects kept as targets
    "empty_images",  # images with no target object (negatives)
    "difficult_excluded",  # VOC difficult objects left out of training targets (by design)
    "crowd_excluded",  # COCO crowd regions left out of training targets (by design)
)


class DatasetError(ValueError):
    """Bad data on disk. The message starts with the file and names the field."""


class DatasetWarning(UserWarning):
    """Summary of what a reader repaired or skipped in one dataset (see ``dataset.stats``)."""


def new_stats() -> dict[str, int]:
    return {k: 0 for k in STAT_KEYS}


def warn_summary(name: str, stats: dict[str, int], unknown_names: Iterable[str] = ()) -> str | None:
    """Emit one :class:`DatasetWarning` for dataset ``name`` if anything was clipped, dropped or
    skipped; returns the message (or ``None`` when there was nothing to report)."""
    parts = []
    if stats.get("clipped"):
        parts.append(f"{stats['clipped']} box(es) clipped to the image")
    if stats.get("degenerate_dropped"):
        parts.append(f"{stats['degenerate_dropped']} degenerate box(es) (width or height <= 0) dropped")
    if stats.get("unknown_class_skipped"):
        names = sorted(set(unknown_names))
        shown = ", ".join(repr(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
        parts.append(f"{stats['unknown_class_skipped']} object(s) of unknown classes skipped ({shown})")
    if not parts:
        return None
    msg = f"{name}: " + "; ".join(parts) + " (counts in dataset.stats)"
    warnings.warn(msg, DatasetWarning, stacklevel=3)
    return msg


def safe_image_path(root: Path, file_name: str, source: str, field: str) -> Path:
    """``root / file_name``, refusing names that are absolute or contain ``..`` (they would escape the
    image folder). ``source`` and ``field`` name the annotation file and the field for the error."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise DatasetError(f"{source}: {field}: expected a non-empty file name, got {file_name!r}")
    for pure in (PurePosixPath(file_name), PureWindowsPath(file_name)):
        if pure.is_absolute() or pure.drive or pure.root:
            raise DatasetError(
                f"{source}: {field}: absolute path {file_name!r} is not allowed (must be relative to {root})"
            )
        if ".." in pure.parts:
            raise DatasetError(f"{source}: {field}: {file_name!r} escapes the image folder {root} ('..' not allowed)")
    return Path(root) / file_name


class ImageIndex:
    """Cheap existence checks: lists each image folder once instead of one ``stat`` per image."""

    def __init__(self) -> None:
        self._listing: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        folder = path.parent
        if folder not in self._listing:
            try:
                self._listing[folder] = {e.name for e in os.scandir(folder) if not e.is_dir()}
            except OSError:
                self._listing[folder] = set()
        return path.name in self._listing[folder]

    def require(self, paths: Iterable[Path], source: str) -> None:
        missing = [p for p in paths if not self.exists(p)]
        if missing:
            shown = ", ".join(str(p) for p in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise DatasetError(
                f"{missing[0]}: image file not found ({len(missing)} missing, listed in {source}: {shown})"
            )


def load_rgb(path: Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to H x W x 3 uint8 RGB.

    Grayscale (L, 1, I, F), palette (P), CMYK, YCbCr, LAB and alpha (RGBA, LA, PA) images are
    converted to RGB; alpha is dropped. EXIF orientation is NOT applied: VOC and COCO annotate the
    stored pixel grid. ``expected_hw`` (the size the annotation gives) must match the decoded size.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(img, dtype=np.float64)
                hi = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
                arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
                rgb = np.repeat(arr[..., None], 3, axis=2)
            else:
                if img.mode in ("P", "PA"):
                    img = img.convert("RGBA")
                if img.mode != "RGB":
                    img = img.convert("RGB")
                rgb = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning when escalated
        raise DatasetError(f"{path}: image too large, refused as a possible decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: corrupt or unreadable image ({type(exc).__name__}: {exc})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DatasetError(f"{path}: could not convert image of shape {rgb.shape} to RGB")
    if expected_hw is not None and tuple(rgb.shape[:2]) != tuple(expected_hw):
        raise DatasetError(
            f"{path}: size: image is {rgb.shape[0]}x{rgb.shape[1]} (HxW) but the annotation says "
            f"{expected_hw[0]}x{expected_hw[1]}"
        )
    return np.ascontiguousarray(rgb)


def as_number(value: Any, source: str, field: str) -> float:
    """A finite float from an XML text / JSON value, or a :class:`DatasetError` naming the field."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DatasetError(f"{source}: {field}: missing")
    if isinstance(value, bool):
        raise DatasetError(f"{source}: {field}: expected a number, got {value!r}")
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: {field}: expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise DatasetError(f"{source}: {field}: expected a finite number, got {value!r}")
    return x


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip N x 4 xyxy boxes to ``[0, width] x [0, height]``.

    Returns ``(clipped boxes, changed mask, valid mask)``: ``changed`` marks boxes that were moved by
    clipping, ``valid`` those with positive width and height afterwards (the others are degenerate
    and must be dropped).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = boxes.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0.0, float(width))
    out[:, 1::2] = np.clip(out[:, 1::2], 0.0, float(height))
    changed = np.any(out != boxes, axis=1)
    valid = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out.astype(np.float32), changed, valid
