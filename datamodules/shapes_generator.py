"""Embedded synthetic "shapes" dataset: Pascal VOC and COCO layouts over the same images.

Each image shows 0..6 filled shapes (circle, rectangle, triangle, star, hexagon, cross) of random
colour, size, aspect ratio and rotation on a textured, noisy background. Later shapes are drawn over
earlier ones; every annotation describes the object's *visible* pixels. See ``docs/shapes.md``.

Box convention (shared with the readers): a box in continuous 0-based pixel coordinates
``(x1, y1, x2, y2)`` is the tight bound of the visible mask (``x1`` = min column, ``x2`` = max column
+ 1). VOC XML stores ``xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2`` (1-based inclusive); COCO
stores ``[x1, y1, x2 - x1, y2 - y1]``.

Generation is deterministic: image ``index`` of split ``split`` is drawn from its own
``numpy.random.Generator`` seeded with ``(seed, split_id, index)``, so images are independent and are
rendered in parallel worker processes.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from datamodules.palette import save_palette_png

__all__ = [
    "SHAPES_CLASSES",
    "GENERATOR_VERSION",
    "generate_shapes_dataset",
    "dataset_is_current",
    "render_image",
]

SHAPES_CLASSES: tuple[str, ...] = ("circle", "rectangle", "triangle", "star", "hexagon", "cross")
GENERATOR_VERSION: int = 1

SPLITS: tuple[str, ...] = ("train", "val")
_SPLIT_IDS = {"train": 0, "val": 1}

# --- content parameters (changing any of them must bump GENERATOR_VERSION) ---------------------------
MAX_OBJECTS = 6
# P(number of shapes attempted = 0..6); 0 keeps some pure negatives.
_NUM_OBJECTS_P = (0.08, 0.16, 0.19, 0.19, 0.16, 0.12, 0.10)
MIN_SIZE_FRAC = 0.09  # long side of the (unrotated) shape, log-uniform in [MIN, MAX] * size
MAX_SIZE_FRAC = 0.60
MIN_VISIBLE_PX = 20  # an object is kept only with >= this many visible pixels ...
MIN_VISIBLE_FRAC = 0.25  # ... and >= this fraction of its full (unclipped, unoccluded) area ...
MIN_INTERIOR_PX = 4  # ... and >= this many visible pixels outside the 255 border band
DIFFICULT_MAX_PX = 36  # difficult = visible area < 36 px (e.g. 6x6) ...
DIFFICULT_MAX_FRAC = 0.40  # ... or less than 40 % of the full shape visible (occluded / cut off)
MIN_CONTRAST = 70.0  # RGB distance between an object's colour and what it is drawn over (best effort)
PLACEMENT_TRIES = 8
INSIDE_PROB = 0.7  # P(a shape is placed entirely inside the image) per try
SUPERSAMPLE = 4  # shapes are rasterised 4x4 per pixel: RGB gets the coverage, masks coverage >= 1/2
JPEG_QUALITY = 90
VOC_FOLDER = "shapes"
VOID = 255

# Short side / long side of the unrotated shape, per class.
_ASPECT_RANGE = {
    "circle": (0.45, 1.0),
    "rectangle": (0.3, 1.0),
    "triangle": (0.5, 1.0),
    "star": (0.65, 1.0),
    "hexagon": (0.6, 1.0),
    "cross": (0.6, 1.0),
}

_GENERATED_ENTRIES = (
    "meta.json",
    "JPEGImages",
    "Annotations",
    "ImageSets",
    "SegmentationClass",
    "SegmentationObject",
    "annotations",
)


# ------------------------------------------------------------------------------------------------------
# Shape outlines: polygons inside the unit box [-1, 1]^2 (x right, y down).
# ------------------------------------------------------------------------------------------------------


def _unit_outline(name: str, rng: np.random.Generator) -> np.ndarray:
    if name == "circle":
        t = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if name == "rectangle":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if name == "triangle":
        apex = rng.uniform(-0.6, 0.6)  # scalene to isosceles, then stretched / rotated
        return np.array([[apex, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if name == "star":
        inner = rng.uniform(0.38, 0.5)
        k = np.arange(10)
        r = np.where(k % 2 == 0, 1.0, inner)
        t = -math.pi / 2 + k * math.pi / 5
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
        return _fit_unit_box(pts)
    if name == "hexagon":
        t = np.arange(6) * math.pi / 3
        return _fit_unit_box(np.stack([np.cos(t), np.sin(t)], axis=1))
    if name == "cross":
        a = rng.uniform(0.26, 0.38)  # half thickness of the arms
        return np.array(
            [
                [-a, -1],
                [a, -1],
                [a, -a],
                [1, -a],
                [1, a],
                [a, a],
                [a, 1],
                [-a, 1],
                [-a, a],
                [-1, a],
                [-1, -a],
                [-a, -a],
            ],
            dtype=np.float64,
        )
    raise KeyError(name)


def _fit_unit_box(pts: np.ndarray) -> np.ndarray:
    lo, hi = pts.min(0), pts.max(0)
    return (pts - (lo + hi) / 2) / ((hi - lo) / 2)


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# ------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------


@dataclass
class RenderedObject:
    """One kept object of a rendered image (masks are H x W bool)."""

    label: int  # 1-based class index (position in SHAPES_CLASSES + 1)
    full_mask: np.ndarray  # in-image pixels of the shape before occlusion
    full_area: float  # area of the whole (unclipped) shape in pixels
    truncated: bool
    visible: np.ndarray = field(default=None)  # type: ignore[assignment]


@dataclass
class RenderedImage:
    image: np.ndarray  # H x W x 3 uint8 RGB (before JPEG encoding)
    objects: list[RenderedObject]
    object_map: np.ndarray  # H x W uint8: 0 background, i = i-th object (1-based), 255 border band
    class_map: np.ndarray  # H x W uint8: 0 background, class index, 255 border band


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.12:  # some greys
        v = rng.uniform(0.1, 0.95)
        return np.array([v, v, v]) * 255.0
    h, s, v = rng.random(), rng.uniform(0.25, 1.0), rng.uniform(0.3, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    # Linear gradient between two random colours in a random direction.
    c0 = _random_colour(rng)
    for _ in range(10):  # two clearly different end colours
        c1 = _random_colour(rng)
        if np.linalg.norm(c1 - c0) >= 50:
            break
    phi = rng.uniform(0, 2 * math.pi)
    proj = (xx * math.cos(phi) + yy * math.sin(phi)) / size
    proj = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    img = c0 + (c1 - c0) * proj[..., None]
    # Low-frequency colour noise (cloudy variation).
    cells = int(rng.integers(3, 7))
    low = rng.normal(0.0, 1.0, (cells, cells, 3)).astype(np.float32)
    img += cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) * rng.uniform(8, 24)
    # Random stripes and / or soft blobs (at least one of them).
    stripes = rng.random() < 0.6
    blobs = not stripes or rng.random() < 0.5
    if stripes:
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(4, 0.35 * size)
        wave = np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period + rng.uniform(0, 6.3))
        if rng.random() < 0.4:
            wave = np.sign(wave)  # hard-edged stripes
        img += wave[..., None] * (rng.uniform(-1, 1, 3) * rng.uniform(10, 40))
    if blobs:  # blurred ellipses, never crisp shapes
        layer = np.zeros((size, size, 3), np.float32)
        alpha = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(2, 9))):
            centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
            axes = (int(rng.integers(3, size // 3)), int(rng.integers(3, size // 3)))
            angle = float(rng.uniform(0, 180))
            col = tuple(float(c) for c in _random_colour(rng))
            cv2.ellipse(layer, centre, axes, angle, 0, 360, col, -1)
            cv2.ellipse(alpha, centre, axes, angle, 0, 360, 1.0, -1)
        sigma = rng.uniform(2.5, 6.0)
        layer = cv2.GaussianBlur(layer, (0, 0), sigma)
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma) * rng.uniform(0.3, 0.7)
        img = img * (1 - alpha[..., None]) + layer * alpha[..., None]
    return img.astype(np.float32)


def _rasterise(poly: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (float32 in [0, 1]) and binary mask (coverage >= 1/2) of a polygon in pixel coords."""
    s = SUPERSAMPLE
    fine = np.zeros((size * s, size * s), np.uint8)
    # continuous coordinate p -> fine pixel centre index p * s - 0.5; 4 fractional bits (shift=4)
    pts = np.round((poly * s - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(fine, [pts], 1, lineType=cv2.LINE_8, shift=4)
    count = fine.reshape(size, s, size, s).sum(axis=(1, 3), dtype=np.int32)
    return count.astype(np.float32) / (s * s), count * 2 >= s * s


def _interior(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` whose 8 neighbours are all in ``mask`` (outside the image counts as inside)."""
    m = mask.astype(np.uint8)
    return cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(bool)


def _keepable(visible: np.ndarray, full_area: float) -> bool:
    area = int(visible.sum())
    if area < MIN_VISIBLE_PX or area < MIN_VISIBLE_FRAC * full_area:
        return False
    return int(_interior(visible).sum()) >= MIN_INTERIOR_PX


def render_image(seed: int, split: str, index: int, size: int = 128) -> RenderedImage:
    """Render image ``index`` of ``split`` (deterministic in ``(seed, split, index, size)``)."""
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = _background(rng, size, yy, xx)

    n_target = int(rng.choice(len(_NUM_OBJECTS_P), p=_NUM_OBJECTS_P))
    objects: list[RenderedObject] = []
    visibles: list[np.ndarray] = []
    lo_len, hi_len = max(6.0, MIN_SIZE_FRAC * size), MAX_SIZE_FRAC * size
    for _ in range(n_target):
        label = int(rng.integers(len(SHAPES_CLASSES)))
        name = SHAPES_CLASSES[label]
        for _try in range(PLACEMENT_TRIES):
            length = math.exp(rng.uniform(math.log(lo_len), math.log(hi_len)))
            ratio = rng.uniform(*_ASPECT_RANGE[name])
            unit = _unit_outline(name, rng)
            scaled = unit * np.array([length / 2, length * ratio / 2])
            rot = rng.uniform(0, 2 * math.pi)
            c, s = math.cos(rot), math.sin(rot)
            rotated = scaled @ np.array([[c, s], [-s, c]])
            half = (rotated.max(axis=0) - rotated.min(axis=0)) / 2
            if rng.random() < INSIDE_PROB and (half < size / 2).all():
                centre = rng.uniform(half, size - half)  # whole shape inside the image
            else:
                centre = rng.uniform(-0.05 * size, 1.05 * size, 2)  # may be cut by the border
            poly = rotated + centre
            full_area = _polygon_area(poly)
            coverage, mask = _rasterise(poly, size)
            if not _keepable(mask, full_area):
                continue
            # the new shape must not hide too much of any earlier one
            new_visibles = [v & ~mask for v in visibles]
            if not all(_keepable(v, o.full_area) for v, o in zip(new_visibles, objects)):
                continue
            break
        else:
            continue  # could not place this object: skip it
        truncated = bool(poly.min() < 0.0 or poly.max() > size)
        objects.append(RenderedObject(label + 1, mask, full_area, truncated))
        visibles = new_visibles + [mask.copy()]
        img = _composite(img, coverage, mask, poly, length, rng, yy, xx)

    for obj, vis in zip(objects, visibles):
        obj.visible = vis

    # sensor noise over everything, then quantise
    img = img + rng.normal(0.0, rng.uniform(3.0, 10.0), img.shape).astype(np.float32)
    rgb = np.clip(np.round(img), 0, 255).astype(np.uint8)

    object_map = np.zeros((size, size), np.uint8)
    class_map = np.zeros((size, size), np.uint8)
    for i, obj in enumerate(objects, start=1):
        object_map[obj.visible] = i
        class_map[obj.visible] = obj.label
    kernel = np.ones((3, 3), np.uint8)
    hi = cv2.dilate(object_map, kernel, borderType=cv2.BORDER_REPLICATE)
    lo = cv2.erode(object_map, kernel, borderType=cv2.BORDER_REPLICATE)
    band = hi != lo  # both sides of every object/background and object/object boundary
    object_map[band] = VOID
    class_map[band] = VOID
    return RenderedImage(rgb, objects, object_map, class_map)


def _composite(
    img: np.ndarray,
    coverage: np.ndarray,
    mask: np.ndarray,
    poly: np.ndarray,
    length: float,
    rng: np.random.Generator,
    yy: np.ndarray,
    xx: np.ndarray,
) -> np.ndarray:
    under = img[mask].mean(axis=0)
    best, best_d = None, -1.0
    for _ in range(10):  # colour independent of class; prefer one that stands out from what is below
        col = _random_colour(rng)
        d = float(np.linalg.norm(col - under))
        if d > best_d:
            best, best_d = col, d
        if d >= MIN_CONTRAST:
            break
    assert best is not None
    # slight shading across the object
    phi = rng.uniform(0, 2 * math.pi)
    cx, cy = poly.mean(axis=0)
    proj = ((xx - cx) * math.cos(phi) + (yy - cy) * math.sin(phi)) / max(length, 1.0)
    shade = 1.0 + rng.uniform(-0.3, 0.3) * proj
    fill = best[None, None, :] * shade[..., None]
    a = coverage[..., None]
    return img * (1.0 - a) + fill.astype(np.float32) * a


# ------------------------------------------------------------------------------------------------------
# Writing one image (runs in worker processes)
# ------------------------------------------------------------------------------------------------------


def _stem(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) in continuous 0-based coordinates: x2 = max column + 1."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _voc_xml(stem: str, size: int, objs: list[dict[str, Any]]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = VOC_FOLDER
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "Synthetic shapes"
    ET.SubElement(source, "annotation").text = f"shapes generator v{GENERATOR_VERSION}"
    sz = ET.SubElement(root, "size")
    ET.SubElement(sz, "width").text = str(size)
    ET.SubElement(sz, "height").text = str(size)
    ET.SubElement(sz, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "1"
    for o in objs:
        x1, y1, x2, y2 = o["box"]
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = SHAPES_CLASSES[o["label"] - 1]
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = str(int(o["truncated"]))
        ET.SubElement(el, "difficult").text = str(int(o["difficult"]))
        bb = ET.SubElement(el, "bndbox")
        ET.SubElement(bb, "xmin").text = str(x1 + 1)
        ET.SubElement(bb, "ymin").text = str(y1 + 1)
        ET.SubElement(bb, "xmax").text = str(x2)
        ET.SubElement(bb, "ymax").text = str(y2)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode").encode("utf-8") + b"\n"


def _write_one(task: tuple[str, int, str, int, int]) -> dict[str, Any]:
    out, seed, split, index, size = task
    from pycocotools import mask as mask_utils  # imported lazily (workers)

    root = Path(out)
    stem = _stem(split, index)
    r = render_image(seed, split, index, size)

    objs: list[dict[str, Any]] = []
    for obj in r.objects:
        area = int(obj.visible.sum())
        rle = mask_utils.encode(np.asfortranarray(obj.visible.astype(np.uint8)))
        objs.append(
            {
                "label": obj.label,
                "box": _tight_box(obj.visible),
                "area": area,
                "truncated": obj.truncated,
                "difficult": area < DIFFICULT_MAX_PX or area < DIFFICULT_MAX_FRAC * obj.full_area,
                "occluded": area < int(obj.full_mask.sum()),
                "rle": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")},
            }
        )

    buf = io.BytesIO()
    Image.fromarray(r.image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    (root / "JPEGImages" / f"{stem}.jpg").write_bytes(buf.getvalue())
    (root / "Annotations" / f"{stem}.xml").write_bytes(_voc_xml(stem, size, objs))
    save_palette_png(root / "SegmentationClass" / f"{stem}.png", r.class_map)
    save_palette_png(root / "SegmentationObject" / f"{stem}.png", r.object_map)
    return {"split": split, "index": index, "stem": stem, "objects": objs}


def _init_worker() -> None:
    cv2.setNumThreads(1)


# ------------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------------


def _meta_params(seed: int, num_train: int, num_val: int, size: int) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "size": int(size),
        "classes": list(SHAPES_CLASSES),
    }


def dataset_is_current(out: str | Path, seed: int, num_train: int, num_val: int, size: int) -> bool:
    """True when ``out/meta.json`` exists and matches these parameters, this version and the classes.

    ``meta.json`` is written last (atomically), so an interrupted generation is never "current".
    """
    meta_path = Path(out) / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    expected = _meta_params(seed, num_train, num_val, size)
    return all(meta.get(k) == v for k, v in expected.items())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _coco_json(split: str, records: list[dict[str, Any]], size: int, seed: int) -> dict[str, Any]:
    images, annotations = [], []
    ann_id = 1
    for rec in records:
        image_id = rec["index"] + 1
        images.append({"id": image_id, "file_name": f"{rec['stem']}.jpg", "width": size, "height": size})
        for o in rec["objects"]:
            x1, y1, x2, y2 = o["box"]
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": o["label"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": o["area"],
                    "iscrowd": 0,
                    "segmentation": o["rle"],
                }
            )
            ann_id += 1
    return {
        "info": {
            "description": f"Synthetic shapes ({split}), seed {seed}",
            "version": str(GENERATOR_VERSION),
            "year": 2024,
            "contributor": "cv-course-detectors shapes generator",
            "url": "",
            "date_created": "",
        },
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES_CLASSES)],
        "images": images,
        "annotations": annotations,
    }


def _num_workers(num_images: int) -> int:
    if num_images < 150:
        return 1  # pool start-up costs more than it saves
    return max(1, min(2, os.cpu_count() or 1))


def generate_shapes_dataset(
    out: str | Path,
    seed: int = 0,
    num_train: int = 1000,
    num_val: int = 200,
    size: int = 128,
    progress: bool = True,
) -> Path:
    """(Re)generate the dataset into ``out`` (a VOC "year" folder plus COCO json); returns ``Path(out)``.

    Previously generated entries of ``out`` (the folders listed in docs/shapes.md and meta.json) are
    removed first; anything else in ``out`` is left alone. ``meta.json`` is written last.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    t0 = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    for name in _GENERATED_ENTRIES:  # meta.json first: from here on the folder is stale
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for sub in (
        "JPEGImages",
        "Annotations",
        "ImageSets/Main",
        "ImageSets/Segmentation",
        "SegmentationClass",
        "SegmentationObject",
        "annotations",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)

    counts = {"train": num_train, "val": num_val}
    tasks = [(str(root), int(seed), split, i, int(size)) for split in SPLITS for i in range(counts[split])]
    records: list[dict[str, Any]] = []
    workers = _num_workers(len(tasks))
    bar = _progress_bar(len(tasks), progress)
    if workers == 1:
        prev_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for t in tasks:
                records.append(_write_one(t))
                bar.update(1)
        finally:
            cv2.setNumThreads(prev_threads)
    else:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers, initializer=_init_worker) as pool:
            for rec in pool.imap(_write_one, tasks, chunksize=16):
                records.append(rec)
                bar.update(1)
    bar.close()

    by_split = {s: [r for r in records if r["split"] == s] for s in SPLITS}
    for split in SPLITS:
        stems = "".join(f"{r['stem']}\n" for r in by_split[split])
        for sets in ("Main", "Segmentation"):
            (root / "ImageSets" / sets / f"{split}.txt").write_text(stems, encoding="utf-8")
        # per-class lists as in the VOC devkit: 1 present, 0 only difficult instances, -1 absent
        for k, name in enumerate(SHAPES_CLASSES, start=1):
            lines = []
            for r in by_split[split]:
                mine = [o for o in r["objects"] if o["label"] == k]
                flag = -1 if not mine else (0 if all(o["difficult"] for o in mine) else 1)
                lines.append(f"{r['stem']} {flag:2d}\n")
            (root / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("".join(lines), encoding="utf-8")
        coco = _coco_json(split, by_split[split], size, seed)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps(coco, separators=(",", ":")), encoding="utf-8"
        )
    trainval = "".join(f"{r['stem']}\n" for s in SPLITS for r in by_split[s])
    for sets in ("Main", "Segmentation"):
        (root / "ImageSets" / sets / "trainval.txt").write_text(trainval, encoding="utf-8")
    for name in SHAPES_CLASSES:
        parts = [(root / "ImageSets" / "Main" / f"{name}_{s}.txt").read_text(encoding="utf-8") for s in SPLITS]
        (root / "ImageSets" / "Main" / f"{name}_trainval.txt").write_text("".join(parts), encoding="utf-8")

    meta = _meta_params(seed, num_train, num_val, size)
    meta["stats"] = _statistics(by_split)
    meta["layouts"] = {
        "voc": {
            "images": "JPEGImages",
            "annotations": "Annotations",
            "imagesets": "ImageSets",
            "segmentation_class": "SegmentationClass",
            "segmentation_object": "SegmentationObject",
        },
        "coco": {split: f"annotations/instances_{split}.json" for split in SPLITS},
    }
    _atomic_write(root / "meta.json", (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    if progress:
        print(f"shapes dataset written to {root} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return root


def _statistics(by_split: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for split, recs in by_split.items():
        objs = [o for r in recs for o in r["objects"]]
        per_image = [len(r["objects"]) for r in recs]
        sides = [max(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]) for o in objs]
        stats[split] = {
            "images": len(recs),
            "objects": len(objs),
            "empty_images": sum(1 for n in per_image if n == 0),
            "objects_per_image_hist": [per_image.count(n) for n in range(MAX_OBJECTS + 1)],
            "objects_per_class": {
                name: sum(1 for o in objs if o["label"] == k) for k, name in enumerate(SHAPES_CLASSES, start=1)
            },
            "truncated": sum(1 for o in objs if o["truncated"]),
            "difficult": sum(1 for o in objs if o["difficult"]),
            "occluded": sum(1 for o in objs if o["occluded"]),
            "box_long_side_px": {
                "min": min(sides, default=0),
                "max": max(sides, default=0),
                "le16": sum(1 for s in sides if s <= 16),
            },
        }
    return stats


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return _NoBar()
    return tqdm(total=total, desc="shapes", unit="img", leave=False)
