"""Tests of the synthetic shapes dataset generator, its VOC palette helpers and its CLI."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from datamodules import shapes_generator as sg
from datamodules.palette import read_label_png, save_palette_png, voc_palette
from datamodules.shapes_generator import (
    GENERATOR_VERSION,
    SHAPES_CLASSES,
    dataset_is_current,
    generate_shapes_dataset,
)

SIZE = 128
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = {"num_train": 40, "num_val": 10, "size": SIZE}


# ---------------------------------------------------------------------------------------------- helpers


def _annotation_files(root: Path) -> dict[str, bytes]:
    """All generated files but the JPEGs, by relative path."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in {".xml", ".json", ".png", ".txt"}:
            files[p.relative_to(root).as_posix()] = p.read_bytes()
    return files


def _voc_objects(root: Path, stem: str) -> list[dict]:
    ann = ET.parse(root / "Annotations" / f"{stem}.xml").getroot()
    objs = []
    for o in ann.findall("object"):
        bb = o.find("bndbox")
        objs.append(
            {
                "name": o.findtext("name"),
                "pose": o.findtext("pose"),
                "truncated": int(o.findtext("truncated")),
                "difficult": int(o.findtext("difficult")),
                "box": tuple(int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")),
            }
        )
    return objs


def _stems(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()


def _tight(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("small"), seed=0, progress=False, **SMALL)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred images for the content statistics."""
    return generate_shapes_dataset(
        tmp_path_factory.mktemp("large"), seed=3, num_train=300, num_val=0, size=SIZE, progress=False
    )


# ---------------------------------------------------------------------------------------------- palette


def test_voc_palette_known_values() -> None:
    pal = voc_palette()
    assert len(pal) == 768
    colours = [tuple(pal[3 * i : 3 * i + 3]) for i in range(256)]
    assert colours[:8] == [
        (0, 0, 0),
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (0, 0, 128),
        (128, 0, 128),
        (0, 128, 128),
        (128, 128, 128),
    ]
    assert colours[8] == (64, 0, 0)
    assert colours[15] == (192, 128, 128)  # VOC "person"
    assert colours[20] == (0, 64, 128)  # VOC "tvmonitor"
    assert colours[255] == (224, 224, 192)
    assert len(set(colours)) == 256
    assert voc_palette(21) == pal[:63]


def test_palette_png_roundtrip(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 256, (17, 23)).astype(np.uint8)
    save_palette_png(tmp_path / "p.png", labels)
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P"
        assert img.getpalette()[:768] == voc_palette()
    np.testing.assert_array_equal(read_label_png(tmp_path / "p.png"), labels)
    Image.fromarray(labels).save(tmp_path / "l.png")  # plain greyscale PNG
    np.testing.assert_array_equal(read_label_png(tmp_path / "l.png"), labels)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError):
        read_label_png(tmp_path / "rgb.png")


# ---------------------------------------------------------------------------------------------- determinism / meta


def test_deterministic_and_seed_dependent(small: Path, tmp_path: Path) -> None:
    again = generate_shapes_dataset(tmp_path / "again", seed=0, progress=False, **SMALL)
    a, b = _annotation_files(small), _annotation_files(again)
    assert a.keys() == b.keys() and len(a) > 3 * 50
    assert [k for k in a if a[k] != b[k]] == []
    jpgs = sorted((small / "JPEGImages").glob("*.jpg"))
    assert all(p.read_bytes() == (again / "JPEGImages" / p.name).read_bytes() for p in jpgs)

    other = generate_shapes_dataset(tmp_path / "other", seed=1, progress=False, **SMALL)
    c = _annotation_files(other)
    assert c.keys() == a.keys()
    differing = [k for k in a if k.startswith("Annotations/") and a[k] != c[k]]
    assert len(differing) > 40
    assert a["annotations/instances_train.json"] != c["annotations/instances_train.json"]


def test_images_independent_of_dataset_size_and_workers(small: Path, tmp_path: Path, monkeypatch) -> None:
    # image i of a split depends only on (seed, split, i): a bigger dataset, rendered by a 2-process
    # pool, starts with the same files
    monkeypatch.setattr(sg, "_num_workers", lambda n: 2)
    bigger = generate_shapes_dataset(tmp_path / "big", seed=0, num_train=48, num_val=12, size=SIZE, progress=False)
    for stem in _stems(small, "trainval"):
        for sub, ext in (("Annotations", "xml"), ("SegmentationObject", "png"), ("JPEGImages", "jpg")):
            assert (small / sub / f"{stem}.{ext}").read_bytes() == (bigger / sub / f"{stem}.{ext}").read_bytes()


def test_meta_and_dataset_is_current(small: Path, tmp_path: Path) -> None:
    meta = json.loads((small / "meta.json").read_text())
    assert meta["generator_version"] == GENERATOR_VERSION
    assert meta["classes"] == list(SHAPES_CLASSES)
    assert (meta["seed"], meta["num_train"], meta["num_val"], meta["size"]) == (0, 40, 10, SIZE)
    assert dataset_is_current(small, 0, 40, 10, SIZE)
    assert dataset_is_current(str(small), 0, 40, 10, SIZE)
    assert not dataset_is_current(small, 1, 40, 10, SIZE)
    assert not dataset_is_current(small, 0, 41, 10, SIZE)
    assert not dataset_is_current(small, 0, 40, 11, SIZE)
    assert not dataset_is_current(small, 0, 40, 10, 96)
    assert not dataset_is_current(tmp_path / "missing", 0, 40, 10, SIZE)

    # stale version / classes, corrupt meta, and regeneration into a used folder
    root = generate_shapes_dataset(tmp_path / "d", seed=0, num_train=6, num_val=2, size=64, progress=False)
    assert dataset_is_current(root, 0, 6, 2, 64)
    m = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**m, "generator_version": GENERATOR_VERSION - 1}))
    assert not dataset_is_current(root, 0, 6, 2, 64)
    (root / "meta.json").write_text(json.dumps({**m, "classes": ["circle"]}))
    assert not dataset_is_current(root, 0, 6, 2, 64)
    (root / "meta.json").write_text("{not json")
    assert not dataset_is_current(root, 0, 6, 2, 64)
    (root / "keep.txt").write_text("user file")
    generate_shapes_dataset(root, seed=0, num_train=3, num_val=1, size=64, progress=False)
    assert dataset_is_current(root, 0, 3, 1, 64)
    assert len(list((root / "Annotations").glob("*.xml"))) == 4  # stale files removed
    assert (root / "keep.txt").read_text() == "user file"  # anything else kept


def test_cli(tmp_path: Path, capsys) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        import make_dataset
    finally:
        sys.path.pop(0)
    out = tmp_path / "cli"
    args = ["--out", str(out), "--seed", "2", "--num-train", "5", "--num-val", "2", "--size", "64", "--quiet"]
    assert make_dataset.main(args) == 0
    text = capsys.readouterr().out
    assert "train: 5 images" in text and "val: 2 images" in text and "generated in" in text
    assert all(name in text for name in SHAPES_CLASSES)
    assert dataset_is_current(out, 2, 5, 2, 64)
    before = (out / "meta.json").stat().st_mtime_ns
    assert make_dataset.main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert (out / "meta.json").stat().st_mtime_ns == before
    assert make_dataset.main(args + ["--force"]) == 0
    assert "generated in" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- layout / consistency


def test_layout(small: Path) -> None:
    train, val = _stems(small, "train"), _stems(small, "val")
    assert train == [f"train_{i:06d}" for i in range(40)]
    assert val == [f"val_{i:06d}" for i in range(10)]
    assert _stems(small, "trainval") == train + val
    for split in ("train", "val", "trainval"):
        seg = (small / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert seg == _stems(small, split)
    for stem in train + val:
        with Image.open(small / "JPEGImages" / f"{stem}.jpg") as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (SIZE, SIZE)
        for sub in ("SegmentationClass", "SegmentationObject"):
            with Image.open(small / sub / f"{stem}.png") as img:
                assert img.mode == "P" and img.size == (SIZE, SIZE)
    # per-class VOC lists agree with the XML
    for name in SHAPES_CLASSES:
        lines = (small / "ImageSets" / "Main" / f"{name}_train.txt").read_text().splitlines()
        assert len(lines) == 40
        for line in lines:
            stem, flag = line.split()
            mine = [o for o in _voc_objects(small, stem) if o["name"] == name]
            expected = -1 if not mine else (0 if all(o["difficult"] for o in mine) else 1)
            assert int(flag) == expected


def test_voc_xml_and_coco_agree_with_masks(small: Path) -> None:
    for split in ("train", "val"):
        coco = COCO(str(small / "annotations" / f"instances_{split}.json"))
        assert [(c["id"], c["name"], c["supercategory"]) for c in coco.loadCats(coco.getCatIds())] == [
            (i + 1, n, "shape") for i, n in enumerate(SHAPES_CLASSES)
        ]
        by_file = {img["file_name"]: img for img in coco.dataset["images"]}
        assert len(by_file) == len(_stems(small, split))
        for stem in _stems(small, split):
            ann_xml = ET.parse(small / "Annotations" / f"{stem}.xml").getroot()
            assert ann_xml.findtext("filename") == f"{stem}.jpg"
            assert ann_xml.findtext("segmented") == "1"
            assert [int(ann_xml.findtext(f"size/{k}")) for k in ("width", "height", "depth")] == [SIZE, SIZE, 3]
            img = by_file[f"{stem}.jpg"]
            assert (img["width"], img["height"]) == (SIZE, SIZE)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            voc = _voc_objects(small, stem)
            obj_map = read_label_png(small / "SegmentationObject" / f"{stem}.png")
            cls_map = read_label_png(small / "SegmentationClass" / f"{stem}.png")
            assert len(anns) == len(voc)
            assert set(np.unique(obj_map)) <= set(range(len(voc) + 1)) | {255}
            # class map = object map relabelled, same 255 band
            np.testing.assert_array_equal(cls_map == 255, obj_map == 255)
            covered = np.zeros((SIZE, SIZE), bool)
            for i, (v, a) in enumerate(zip(voc, anns), start=1):
                assert v["pose"] == "Unspecified" and v["truncated"] in (0, 1) and v["difficult"] in (0, 1)
                assert a["category_id"] == SHAPES_CLASSES.index(v["name"]) + 1 and a["iscrowd"] == 0
                np.testing.assert_array_equal(cls_map[obj_map == i], a["category_id"])
                xmin, ymin, xmax, ymax = v["box"]
                assert 1 <= xmin <= xmax <= SIZE and 1 <= ymin <= ymax <= SIZE
                x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax  # reader convention
                assert a["bbox"] == [x1, y1, x2 - x1, y2 - y1]
                m = coco.annToMask(a).astype(bool)
                assert a["area"] == int(m.sum()) >= sg.MIN_VISIBLE_PX
                assert _tight(m) == (x1, y1, x2, y2)
                assert not (m & covered).any()  # visible masks are disjoint
                covered |= m
                # outside the 255 band the mask is exactly SegmentationObject == i
                off_band = obj_map != 255
                np.testing.assert_array_equal(m[off_band], (obj_map == i)[off_band])
                core = obj_map == i
                assert core.sum() >= sg.MIN_INTERIOR_PX
                cx1, cy1, cx2, cy2 = _tight(core)
                assert x1 <= cx1 and y1 <= cy1 and cx2 <= x2 and cy2 <= y2
                if a["area"] < sg.DIFFICULT_MAX_PX:
                    assert v["difficult"] == 1
                # RLE as a utf-8 string
                assert isinstance(a["segmentation"]["counts"], str)
                assert a["segmentation"]["size"] == [SIZE, SIZE]
                rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
                np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), m)
            # everything not covered by a visible mask is background (no invisible / unlabelled objects)
            assert np.isin(obj_map[~covered], (0, 255)).all()


def _neighbourhood(a: np.ndarray, r: int, reduce) -> np.ndarray:
    """Elementwise ``reduce`` over the (2r+1)^2 neighbourhood, image edges replicated."""
    h, w = a.shape
    p = np.pad(a, r, mode="edge")
    out = a.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out = reduce(out, p[r + dy : r + dy + h, r + dx : r + dx + w])
    return out


def test_border_band(small: Path) -> None:
    """SegmentationObject = visible masks with a 255 band on both sides of every boundary (3x3)."""
    touching = 0
    for split in ("train", "val"):
        coco = COCO(str(small / "annotations" / f"instances_{split}.json"))
        for img in coco.dataset["images"]:
            stem = img["file_name"][: -len(".jpg")]
            labels = np.zeros((SIZE, SIZE), np.uint8)
            for i, a in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])), start=1):
                labels[coco.annToMask(a).astype(bool)] = i
            hi = _neighbourhood(labels, 1, np.maximum)
            lo = _neighbourhood(labels, 1, np.minimum)
            band = hi != lo
            expected = np.where(band, 255, labels)
            obj_map = read_label_png(small / "SegmentationObject" / f"{stem}.png")
            np.testing.assert_array_equal(obj_map, expected)
            # object/object boundaries (not only object/background) are in the band
            touching += int((band & (lo > 0) & (hi != lo)).sum() > 0)
            if not labels.any():
                assert (obj_map == 0).all()
    assert touching >= 3


# ---------------------------------------------------------------------------------------------- content


def test_content_statistics(large: Path) -> None:
    coco = json.loads((large / "annotations" / "instances_train.json").read_text())
    anns = coco["annotations"]
    per_image = np.bincount([a["image_id"] for a in anns], minlength=len(coco["images"]) + 1)[1:]
    assert len(per_image) == 300
    assert (per_image == 0).sum() >= 5  # negatives
    assert per_image.max() >= 5 and 2.0 <= per_image.mean() <= 4.5
    long_side = np.array([max(a["bbox"][2], a["bbox"][3]) for a in anns])
    assert (long_side <= 16).sum() >= 20
    assert (long_side >= SIZE // 2).sum() >= 10
    counts = np.bincount([a["category_id"] for a in anns], minlength=len(SHAPES_CLASSES) + 1)[1:]
    assert (counts >= 0.1 * len(anns)).all()
    # aspect ratios vary
    ar = np.array([a["bbox"][2] / a["bbox"][3] for a in anns])
    assert (ar < 0.6).sum() >= 10 and (ar > 1 / 0.6).sum() >= 10

    stems = _stems(large, "train")
    voc = {s: _voc_objects(large, s) for s in stems}
    assert sum(o["truncated"] for objs in voc.values() for o in objs) >= 20
    assert 5 <= sum(o["difficult"] for objs in voc.values() for o in objs) <= 0.2 * len(anns)
    assert sum(o["difficult"] == 0 for objs in voc.values() for o in objs) >= 0.8 * len(anns)


def test_occlusion_and_visible_masks() -> None:
    occluded = 0
    for index in range(120):
        r = sg.render_image(5, "train", index, SIZE)
        union_later = np.zeros((SIZE, SIZE), bool)
        for obj in reversed(r.objects):  # later objects are drawn on top
            np.testing.assert_array_equal(obj.visible, obj.full_mask & ~union_later)
            union_later |= obj.full_mask
            area = int(obj.visible.sum())
            assert area >= max(sg.MIN_VISIBLE_PX, sg.MIN_VISIBLE_FRAC * obj.full_area)
            occluded += area < obj.full_mask.sum()
    assert occluded >= 20


def test_colour_does_not_give_class_away(large: Path) -> None:
    colours: dict[int, list[np.ndarray]] = {}
    for stem in _stems(large, "train")[:150]:
        rgb = np.asarray(Image.open(large / "JPEGImages" / f"{stem}.jpg").convert("RGB"), dtype=np.float64)
        cls_map = read_label_png(large / "SegmentationClass" / f"{stem}.png")
        obj_map = read_label_png(large / "SegmentationObject" / f"{stem}.png")
        for i in set(np.unique(obj_map)) - {0, 255}:
            core = obj_map == i
            colours.setdefault(int(cls_map[core][0]), []).append(rgb[core].mean(axis=0))
    assert sorted(colours) == list(range(1, len(SHAPES_CLASSES) + 1))
    means = []
    for label, cols in colours.items():
        cols = np.array(cols)
        assert cols.std(axis=0).min() > 35, label  # each class comes in many colours
        means.append(cols.mean(axis=0))
    # and the average colour of the classes is about the same
    means = np.array(means)
    assert np.ptp(means, axis=0).max() < 40


def test_background_is_textured(small: Path) -> None:
    for stem in _stems(small, "train")[:20]:
        rgb = np.asarray(Image.open(small / "JPEGImages" / f"{stem}.jpg").convert("RGB"), dtype=np.float64)
        bg = read_label_png(small / "SegmentationObject" / f"{stem}.png") == 0
        grey = rgb.mean(axis=2)
        assert grey[bg].std() > 5  # not a flat colour
        # pixel noise: neighbouring background pixels differ
        diff = np.abs(np.diff(grey, axis=1))[bg[:, 1:] & bg[:, :-1]]
        assert np.median(diff) > 0.8
