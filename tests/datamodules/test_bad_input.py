"""One test per bad input of the policy in datamodules/checks.py (both readers where it applies)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import COCODataset, DatasetError, DatasetWarning, VOCDataset, collate_semantic

CLASSES = ("cat", "dog")


def obj(name: str = "cat", box=(3, 4, 10, 12), difficult: int | None = None) -> str:
    diff = f"<difficult>{difficult}</difficult>" if difficult is not None else ""
    x1, y1, x2, y2 = box
    return (
        f"<object><name>{name}</name>{diff}<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
    )


def make_voc(
    root: Path, objects: str = "", xml: str | None = None, size=(32, 24), image: Image.Image | None = None
) -> Path:
    """A one-image VOC year folder ``root`` (image ``a``, W x H = ``size``)."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    w, h = size
    (image or Image.new("RGB", (w, h), (50, 100, 150))).save(root / "JPEGImages" / "a.jpg", format="JPEG")
    if xml is None:
        xml = f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"
    (root / "Annotations" / "a.xml").write_text(xml)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    return root


def make_coco(root: Path, images=None, annotations=None, file_name: str = "a.png", size=(32, 24)) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    w, h = size
    Image.new("RGB", (w, h), (1, 2, 3)).save(root / "img" / "a.png")
    doc = {
        "images": images if images is not None else [{"id": 1, "file_name": file_name, "width": w, "height": h}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": annotations
        if annotations is not None
        else [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 2,
                "bbox": [2, 3, 5, 6],
                "iscrowd": 0,
                "segmentation": [[2, 3, 7, 3, 7, 9, 2, 9]],
            }
        ],
    }
    (root / "ann.json").write_text(json.dumps(doc))
    return root / "ann.json"


def voc(root: Path, **kw) -> VOCDataset:
    return VOCDataset(root, "train", class_names=CLASSES, **kw)


# -- missing / corrupt images ----------------------------------------------------------------------------
def test_missing_image_file(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v", obj())
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match=r"a\.jpg: image file not found"):
        voc(root)
    ann = make_coco(tmp_path / "c")
    (tmp_path / "c" / "img" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"a\.png: image file not found"):
        COCODataset(ann, tmp_path / "c" / "img")


def test_image_deleted_after_setup_fails_at_getitem_naming_the_file(tmp_path: Path) -> None:
    ds = voc(make_voc(tmp_path, obj()))
    (tmp_path / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match=r"a\.jpg: image file not found"):
        ds[0]


def test_corrupt_image(tmp_path: Path) -> None:
    ds = voc(make_voc(tmp_path / "v", obj()))
    (tmp_path / "v" / "JPEGImages" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match=r"a\.jpg: corrupt or unreadable image"):
        ds[0]
    ann = make_coco(tmp_path / "c")
    ds = COCODataset(ann, tmp_path / "c" / "img")
    (tmp_path / "c" / "img" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DatasetError, match=r"a\.png: corrupt or unreadable image"):
        ds[0]


def test_image_size_differs_from_annotation(tmp_path: Path) -> None:
    root = make_voc(tmp_path, obj())
    Image.new("RGB", (40, 24)).save(root / "JPEGImages" / "a.jpg")
    with pytest.raises(DatasetError, match=r"a\.jpg: size: image is 24x40 .* annotation says 24x32"):
        voc(root)[0]


# -- malformed annotation files / missing fields -----------------------------------------------------------
def test_malformed_xml(tmp_path: Path) -> None:
    root = make_voc(tmp_path, xml="<annotation><size><width>3</width></size")
    with pytest.raises(DatasetError, match=r"a\.xml: malformed XML"):
        voc(root)


def test_xml_entity_expansion_is_refused(tmp_path: Path) -> None:
    evil = (
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
        "<annotation><size><width>32</width><height>24</height></size><object><name>&y;</name></object></annotation>"
    )
    with pytest.raises(DatasetError, match=r"a\.xml: XML refused by defusedxml"):
        voc(make_voc(tmp_path, xml=evil))


@pytest.mark.parametrize(
    ("xml", "field"),
    [
        ("<annotation><object/></annotation>", "size: missing"),
        ("<annotation><size><width>32</width></size></annotation>", r"size\.height: missing"),
        (
            "<annotation><size><width>32</width><height>x</height></size></annotation>",
            r"size\.height: expected a number",
        ),
        (
            "<annotation><size><width>32</width><height>24</height></size><object><bndbox/></object></annotation>",
            r"object\[1\]\.name: missing",
        ),
        (
            "<annotation><size><width>32</width><height>24</height></size><object><name>cat</name></object></annotation>",
            r"object\[1\]\.bndbox: missing",
        ),
        (
            f"<annotation><size><width>32</width><height>24</height></size>{obj()}"
            "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object></annotation>",
            r"object\[2\]\.bndbox\.ymax: missing",
        ),
    ],
)
def test_xml_missing_required_field(tmp_path: Path, xml: str, field: str) -> None:
    with pytest.raises(DatasetError, match=rf"a\.xml: {field}"):
        voc(make_voc(tmp_path, xml=xml))


def test_malformed_json(tmp_path: Path) -> None:
    ann = make_coco(tmp_path)
    ann.write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"ann\.json: malformed JSON \(line 1"):
        COCODataset(ann, tmp_path / "img")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("categories"), r"categories: missing"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\]\.file_name: missing"),
        (lambda d: d["images"][0].update(width=0), r"images\[0\]\.width: expected a positive integer"),
        (
            lambda d: d["annotations"][0].pop("bbox"),
            r"annotations\[0\] \(id 1\)\.bbox: expected \[x, y, width, height\]",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[1, "a", 2, 2]),
            r"annotations\[0\] \(id 1\)\.bbox\[1\]: expected a number",
        ),
        (lambda d: d["annotations"][0].update(image_id=9), r"annotations\[0\]\.image_id: no image with id 9"),
        (lambda d: d["annotations"][0].pop("segmentation"), r"annotations\[0\] \(id 1\)\.segmentation: missing"),
        (
            lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]),
            r"annotations\[0\] \(id 1\)\.segmentation\[0\]: a polygon needs",
        ),
    ],
)
def test_json_missing_or_bad_field(tmp_path: Path, edit, field: str) -> None:
    ann = make_coco(tmp_path)
    doc = json.loads(ann.read_text())
    edit(doc)
    ann.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=rf"ann\.json: {field}"):
        COCODataset(ann, tmp_path / "img", task="instance")


# -- unknown classes ---------------------------------------------------------------------------------------
def test_unknown_class_errors_naming_file_object_and_name(tmp_path: Path) -> None:
    root = make_voc(tmp_path, obj("cat") + obj("unicorn"))
    with pytest.raises(DatasetError, match=r"a\.xml: object\[2\]\.name: unknown class 'unicorn'"):
        voc(root)


def test_unknown_class_skip_is_counted_and_warned(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v", obj("cat") + obj("unicorn") + obj("dog"))
    with pytest.warns(DatasetWarning, match=r"1 object\(s\) of unknown classes skipped \('unicorn'\)"):
        ds = voc(root, on_unknown_class="skip")
    assert ds.stats["unknown_class_skipped"] == 1
    _, t = ds[0]
    assert t["labels"].tolist() == [1, 2]
    ann = make_coco(
        tmp_path / "c",
        annotations=[
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 3, 3]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3]},
        ],
    )
    with pytest.raises(DatasetError, match=r"ann\.json: annotations\[0\] \(id 1\)\.category_id: unknown category 7"):
        COCODataset(ann, tmp_path / "c" / "img")
    with pytest.warns(DatasetWarning, match="unknown classes skipped"):
        ds = COCODataset(ann, tmp_path / "c" / "img", on_unknown_class="skip")
    assert ds.stats["unknown_class_skipped"] == 1 and ds[0][1]["labels"].tolist() == [1]


# -- boxes ---------------------------------------------------------------------------------------------------
def test_boxes_outside_are_clipped_and_degenerate_dropped_with_one_warning(tmp_path: Path) -> None:
    # image 32 x 24; VOC 1-based: xmin 0 -> x1 -1 (outside), xmax 40 > 32; (30..29) is empty; (33..40) lies outside
    objs = (
        obj("cat", (0, 2, 40, 30))
        + obj("dog", (5, 5, 9, 9))
        + obj("dog", (31, 5, 29, 9), difficult=1)
        + obj("cat", (34, 1, 40, 5))
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = voc(make_voc(tmp_path, objs), keep_difficult=True)
    ours = [w for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "1 box(es) clipped" in str(ours[0].message) and "2 degenerate box(es)" in str(ours[0].message)
    assert "VOC" in str(ours[0].message)  # the dataset's name
    assert ds.stats["clipped"] == 1 and ds.stats["degenerate_dropped"] == 2
    _, t = ds[0]
    assert t["boxes"].tolist() == [[0.0, 1.0, 32.0, 24.0], [4.0, 4.0, 9.0, 9.0]]
    assert t["labels"].tolist() == [1, 2] and t["difficult"].tolist() == [False, False]


def test_coco_box_outside_clipped_and_zero_size_dropped(tmp_path: Path) -> None:
    ann = make_coco(
        tmp_path,
        annotations=[
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [-2.5, 20, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [4, 4, 0, 3]},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [4, 4, 2, 3], "iscrowd": 1},
        ],
    )
    with pytest.warns(DatasetWarning, match=r"ann\.json.*1 box\(es\) clipped.*1 degenerate"):
        ds = COCODataset(ann, tmp_path / "img")
    _, t = ds[0]
    assert t["boxes"].tolist() == [[0.0, 20.0, 7.5, 24.0], [4.0, 4.0, 6.0, 7.0]]
    assert t["iscrowd"].tolist() == [False, True] and t["labels"].tolist() == [1, 2]


# -- paths ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../a.png", "sub/../../a.png", "/etc/passwd", "C:\\images\\a.png"])
def test_file_name_escaping_the_image_root_is_rejected(tmp_path: Path, name: str) -> None:
    ann = make_coco(tmp_path, file_name=name)
    with pytest.raises(DatasetError, match=r"ann\.json: images\[0\]\.file_name: .*(escapes|absolute)"):
        COCODataset(ann, tmp_path / "img")


def test_voc_image_set_line_with_a_path_is_rejected(tmp_path: Path) -> None:
    root = make_voc(tmp_path, obj())
    (root / "ImageSets" / "Main" / "train.txt").write_text("../../etc/a\n")
    with pytest.raises(DatasetError, match=r"train\.txt: line 1"):
        voc(root)


# -- image modes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_non_rgb_images_are_converted_to_rgb(tmp_path: Path, mode: str) -> None:
    ann = make_coco(tmp_path)
    path = tmp_path / "img" / "a.png"
    rgb = Image.new("RGB", (32, 24), (200, 100, 50))
    if mode == "L":
        img = rgb.convert("L")
    elif mode == "CMYK":
        img, path = rgb.convert("CMYK"), tmp_path / "img" / "a.jpg"
    elif mode == "RGBA":
        img = rgb.convert("RGBA")
        img.putalpha(80)
    elif mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    else:
        img = Image.fromarray(np.full((24, 32), 40000, np.uint16))
    img.save(path)
    if path.suffix == ".jpg":
        ann = make_coco(tmp_path, file_name="a.jpg")
        img.save(path)
    x, _ = COCODataset(ann, tmp_path / "img")[0]
    assert x.shape == (3, 24, 32) and x.dtype == torch.float32
    pixel = (x[:, 5, 5] * 255).round().tolist()
    if mode == "L":
        assert (
            pixel[0] == pixel[1] == pixel[2] == Image.new("RGB", (1, 1), (200, 100, 50)).convert("L").getpixel((0, 0))
        )
    elif mode == "I;16":
        assert pixel[0] == pixel[1] == pixel[2] == round(40000 / 65535 * 255)
    else:  # colour kept (alpha dropped, palette expanded, CMYK converted) up to JPEG rounding
        assert np.allclose(pixel, [200, 100, 50], atol=4 if mode == "CMYK" else 0)


# -- negatives ---------------------------------------------------------------------------------------------
def test_image_without_objects_is_a_negative_sample(tmp_path: Path) -> None:
    ds = voc(make_voc(tmp_path / "v", ""), task="detection")
    img, t = ds[0]
    assert img.shape == (3, 24, 32) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    assert ds.stats["empty_images"] == 1
    ann = make_coco(tmp_path / "c", annotations=[])
    img, t = COCODataset(ann, tmp_path / "c" / "img", task="instance")[0]
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 24, 32)


def test_semantic_batch_of_unequal_sizes_explains_the_fix() -> None:
    batch = [
        (torch.zeros(3, 4, 5), torch.zeros(4, 5, dtype=torch.long)),
        (torch.zeros(3, 6, 5), torch.zeros(6, 5, dtype=torch.long)),
    ]
    with pytest.raises(DatasetError, match="different sizes.*Resize"):
        collate_semantic(batch)


def test_semantic_png_with_values_outside_the_classes(tmp_path: Path) -> None:
    from datamodules.palette import save_palette_png

    root = make_voc(tmp_path, obj())
    (root / "ImageSets" / "Segmentation").mkdir()
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    (root / "SegmentationClass").mkdir()
    label = np.zeros((24, 32), np.uint8)
    label[0, 0] = 7
    save_palette_png(root / "SegmentationClass" / "a.png", label)
    with pytest.raises(DatasetError, match=r"a\.png: label values \[7\]"):
        voc(root, task="semantic")[0]


# -- polygon and RLE values (checked before pycocotools' C code sees them) -----------------------------------
def _coco_with_segmentation(root: Path, segmentation) -> Path:
    return make_coco(
        root,
        annotations=[
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [2, 3, 5, 6], "iscrowd": 0, "segmentation": segmentation}
        ],
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_polygon_coordinate_is_a_named_error(tmp_path: Path, value: float) -> None:
    # before the check, NaN made pycocotools crash the process (SIGSEGV) or allocate without bound
    ann = _coco_with_segmentation(tmp_path, [[2, 3, value, 3, 7, 9, 2, 9]])
    field = r"ann\.json: annotations\[0\] \(id 1\)\.segmentation\[0\]\[2\]"
    with pytest.raises(DatasetError, match=rf"{field}: .* not finite"):
        COCODataset(ann, tmp_path / "img", task="instance")


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_polygon_far_outside_the_image_is_a_named_error(tmp_path: Path, task: str) -> None:
    ann = _coco_with_segmentation(tmp_path, [[2, 3, 7, 3, 1e6, 9, 2, 9]])
    with pytest.raises(DatasetError, match=r"segmentation\[0\]: vertex 2 \(1000000\.0, 9\) lies far outside the 32x24"):
        COCODataset(ann, tmp_path / "img", task=task)


def test_polygon_slightly_outside_the_image_is_accepted_and_clipped_by_rasterisation(tmp_path: Path) -> None:
    ann = _coco_with_segmentation(tmp_path, [[-3, -2, 35, -2, 35, 26, -3, 26]])  # a few px beyond 32 x 24
    _, t = COCODataset(ann, tmp_path / "img", task="instance")[0]
    assert t["masks"].shape == (1, 24, 32) and bool(t["masks"].all())


def test_empty_polygon_list_is_a_named_error(tmp_path: Path) -> None:
    # before: an all-zero mask with its box kept as a target
    ann = _coco_with_segmentation(tmp_path, [])
    with pytest.raises(DatasetError, match=r"annotations\[0\] \(id 1\)\.segmentation: empty polygon list"):
        COCODataset(ann, tmp_path / "img", task="instance")


@pytest.mark.parametrize(
    ("rle", "field"),
    [
        # a valid string for a shorter mask: decoded by pycocotools into garbage (uninitialised pixels)
        (
            {"size": [24, 32], "counts": "0"},
            r"segmentation\.counts: compressed RLE runs sum to 0, not height \* width = 768",
        ),
        # the RLE of a 32 x 32 mask under a 24 x 32 size: pycocotools would write past the mask
        ({"size": [24, 32], "counts": "PP1"}, r"segmentation\.counts: compressed RLE runs sum to 1024, not"),
        ({"size": [24, 32], "counts": "0`"}, r"segmentation\.counts: compressed RLE string is truncated"),
        ({"size": [24, 32], "counts": "0 1"}, r"segmentation\.counts: character ' ' is not part of a compressed RLE"),
        ({"size": [24, 32], "counts": [800, -32]}, r"segmentation\.counts: uncompressed RLE has a negative run length"),
        ({"size": [24, 32], "counts": [700]}, r"segmentation\.counts: uncompressed RLE runs sum to 700"),
        ({"size": [24, 32], "counts": [700, "x"]}, r"segmentation\.counts\[1\]: expected a number, got 'x'"),
        ({"size": ["a", 32], "counts": "0"}, r"segmentation\.size\[0\]: expected a number, got 'a'"),
    ],
)
def test_bad_rle_is_a_named_error(tmp_path: Path, rle: dict, field: str) -> None:
    ann = _coco_with_segmentation(tmp_path, rle)
    with pytest.raises(DatasetError, match=rf"ann\.json: annotations\[0\] \(id 1\)\.{field}"):
        COCODataset(ann, tmp_path / "img", task="instance")


# -- ids given as strings --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image_id", "ann_image_id", "category_id"),
    [("1", "1", 2), ("1", 1, 2), (1, "1", "2"), ("01", "1", 2)],
)
def test_string_ids_match_annotations_to_their_image(tmp_path: Path, image_id, ann_image_id, category_id) -> None:
    # before: every annotation silently missed its image (pycocotools' index compares "1" != 1): no targets
    ann = make_coco(
        tmp_path,
        images=[{"id": image_id, "file_name": "a.png", "width": 32, "height": 24}],
        annotations=[
            {
                "id": "7",
                "image_id": ann_image_id,
                "category_id": category_id,
                "bbox": [2, 3, 5, 6],
                "segmentation": [[2, 3, 7, 3, 7, 9, 2, 9]],
            }
        ],
    )
    ds = COCODataset(ann, tmp_path / "img", task="instance")
    assert ds.stats["objects"] == 1
    _, t = ds[0]
    assert t["image_id"] == 1 and t["labels"].tolist() == [2] and t["boxes"].tolist() == [[2.0, 3.0, 7.0, 9.0]]
    assert int(t["masks"].sum()) > 0


def test_string_id_that_is_not_an_integer_is_a_named_error(tmp_path: Path) -> None:
    ann = make_coco(tmp_path, images=[{"id": "img-1", "file_name": "a.png", "width": 32, "height": 24}], annotations=[])
    with pytest.raises(DatasetError, match=r"ann\.json: images\[0\]\.id: expected a number, got 'img-1'"):
        COCODataset(ann, tmp_path / "img")


def test_shapes_coco_reader_with_string_ids_keeps_every_object(
    tiny_shapes_dataset: Path, tiny_shapes_params: dict, tmp_path: Path
) -> None:
    import shutil

    from datamodules import ShapesDataModule

    root = Path(shutil.copytree(tiny_shapes_dataset, tmp_path / "shapes"))
    path = root / "annotations" / "instances_val.json"
    doc = json.loads(path.read_text())
    for img in doc["images"]:
        img["id"] = str(img["id"])
    for a in doc["annotations"]:
        a["id"], a["image_id"] = str(a["id"]), str(a["image_id"])
    path.write_text(json.dumps(doc))
    p = tiny_shapes_params
    dm = ShapesDataModule(
        root=str(root),
        reader="coco",
        seed=p["seed"],
        num_train=p["num_train"],
        num_val=p["num_val"],
        image_size=p["size"],
        progress=False,
    )
    dm.setup("validate")
    assert dm.val_dataset.stats["objects"] == len(doc["annotations"]) > 0
    ref = COCODataset(tiny_shapes_dataset / "annotations" / "instances_val.json", tiny_shapes_dataset / "JPEGImages")
    for i in range(len(ref)):
        got, want = dm.val_dataset[i][1], ref[i][1]
        assert torch.equal(got["boxes"], want["boxes"]) and torch.equal(got["labels"], want["labels"])
        assert got["image_id"] == want["image_id"]


# -- VOC SegmentationObject index without an XML object ----------------------------------------------------
def test_segmentation_object_index_without_xml_object_is_a_named_error(tmp_path: Path) -> None:
    from datamodules.palette import save_palette_png

    root = make_voc(tmp_path, obj("cat", (2, 2, 10, 10)) + obj("dog", (12, 2, 20, 10)))
    (root / "ImageSets" / "Segmentation").mkdir()
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    (root / "SegmentationObject").mkdir()
    objects = np.zeros((24, 32), np.uint8)
    objects[1:10, 1:10], objects[1:10, 11:20], objects[15:20, 5:9] = 1, 2, 3  # 3: no third <object>
    objects[0, :] = 255
    save_palette_png(root / "SegmentationObject" / "a.png", objects)
    ds = voc(root, task="instance")
    msg = r"SegmentationObject/a\.png: object indices \[3\] have no object in .*a\.xml \(2 object"
    with pytest.raises(DatasetError, match=msg):
        ds[0]
    objects[15:20, 5:9] = 2  # every index has its object: masks as before
    save_palette_png(root / "SegmentationObject" / "a.png", objects)
    _, t = ds[0]
    assert t["masks"].shape == (2, 24, 32) and t["masks"].sum(dim=(1, 2)).tolist() == [81, 81 + 20]


# -- decompression bombs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("escalated", [False, True])
def test_decompression_bomb_image_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, escalated: bool
) -> None:
    ds = voc(make_voc(tmp_path, obj()))  # a 32 x 24 image = 768 pixels
    # PIL raises DecompressionBombError above 2 * MAX_IMAGE_PIXELS and warns above MAX_IMAGE_PIXELS
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500 if escalated else 300)
    with warnings.catch_warnings():
        if escalated:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        msg = r"JPEGImages/a\.jpg: image too large, refused as a possible decompression bomb"
        with pytest.raises(DatasetError, match=msg):
            ds[0]


def test_decompression_bomb_label_png_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datamodules.palette import save_palette_png

    root = make_voc(tmp_path, obj())
    (root / "ImageSets" / "Segmentation").mkdir()
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    (root / "SegmentationClass").mkdir()
    save_palette_png(root / "SegmentationClass" / "a.png", np.zeros((48, 64), np.uint8))  # 3072 pixels
    ds = voc(root, task="semantic")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 768-pixel image passes, the PNG is over 2 * 1000
    with pytest.raises(DatasetError, match=r"SegmentationClass/a\.png: label PNG too large"):
        ds[0]
