"""Pascal VOC colour map and helpers to write / read indexed ("palette") label PNGs.

The VOC devkit colours label ``i`` by spreading the bits of ``i`` over the three channels: bit 0 of
``i`` goes to red, bit 1 to green, bit 2 to blue, bit 3 to red again one position lower, and so on,
starting from the most significant bit of each channel. Label 0 is black, 1 dark red, 2 dark green,
and the "void" label 255 (object borders / ignore) is the light beige (224, 224, 192).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["voc_palette", "save_palette_png", "read_label_png"]


def _voc_colour(label: int) -> tuple[int, int, int]:
    r = g = b = 0
    bits = label
    for shift in range(7, -1, -1):  # most significant channel bit first
        r |= (bits & 1) << shift
        g |= ((bits >> 1) & 1) << shift
        b |= ((bits >> 2) & 1) << shift
        bits >>= 3
        if not bits:
            break
    return r, g, b


def voc_palette(num_colors: int = 256) -> list[int]:
    """Flat ``[r0, g0, b0, r1, g1, b1, ...]`` list of the VOC colour map (length ``3 * num_colors``).

    With the default ``num_colors=256`` it is the full 768-entry palette PIL's ``putpalette`` expects.
    """
    if not 0 <= num_colors <= 256:
        raise ValueError(f"num_colors must be in [0, 256], got {num_colors}")
    flat: list[int] = []
    for label in range(num_colors):
        flat.extend(_voc_colour(label))
    return flat


_PALETTE_256 = voc_palette(256)


def save_palette_png(path: str | Path, label_map: np.ndarray) -> None:
    """Write a 2-D uint8 label map as an indexed PNG carrying the VOC palette (like VOC's PNGs)."""
    arr = np.asarray(label_map)
    if arr.ndim != 2:
        raise ValueError(f"label_map must be 2-D, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError("label_map values must fit in uint8")
        arr = arr.astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape
    img = Image.frombuffer("P", (w, h), arr.tobytes(), "raw", "P", 0, 1)
    img.putpalette(_PALETTE_256)
    img.save(Path(path), format="PNG", optimize=False)


def read_label_png(path: str | Path) -> np.ndarray:
    """Label indices (H x W uint8) of a palette PNG, or of a plain greyscale (L) PNG.

    Palette PNGs are NOT converted to RGB: the stored indices are the labels (VOC convention).
    """
    with Image.open(Path(path)) as img:
        if img.mode in ("P", "L"):
            return np.array(img, dtype=np.uint8)
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):
            arr = np.array(img)
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise ValueError(f"{path}: label values outside [0, 255]")
            return arr.astype(np.uint8)
        raise ValueError(f"{path}: expected a palette (P) or greyscale (L) PNG, got mode {img.mode!r}")
