"""The COCO reader on the real val2017 subset (values checked against the JSON itself)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import COCODataModule, COCODataset
from datamodules.coco import decode_segmentation, rle_counts

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
COCO_DIR = SHARED / "data" / "real" / "coco"
ANN = COCO_DIR / "annotations" / "instances_val2017.json"
IMAGES = COCO_DIR / "val2017"

needs_real = pytest.mark.skipif(
    not ANN.is_file(), reason=f"real COCO fixture files not found at {COCO_DIR} (expected shared/ beside the repo root)"
)


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(ANN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def inst() -> COCODataset:
    return COCODataset(ANN, IMAGES, task="instance")


@needs_real
def test_counts_and_category_mapping(raw: dict, inst: COCODataset) -> None:
    assert len(inst) == 7 and len(raw["images"]) == 7
    assert inst.stats["objects"] == 84 == len(raw["annotations"])
    ids = sorted(c["id"] for c in raw["categories"])
    assert len(ids) == 80 and len(inst.class_names) == 80
    names = {c["id"]: c["name"] for c in raw["categories"]}
    assert inst.class_names == tuple(names[i] for i in ids)
    assert inst.category_id_to_label == {cid: i + 1 for i, cid in enumerate(ids)}
    # a few by hand: ids 1..90 with 10 gaps
    assert inst.category_id_to_label[1] == 1 and inst.class_names[0] == "person"
    assert inst.category_id_to_label[60] == 55 and inst.class_names[54] == "donut"
    assert inst.category_id_to_label[84] == 74 and inst.class_names[73] == "book"
    assert inst.category_id_to_label[90] == 80 and inst.class_names[79] == "toothbrush"


@needs_real
def test_boxes_labels_crowd_and_masks_equal_the_json(raw: dict, inst: COCODataset) -> None:
    id_to_label = inst.category_id_to_label
    by_image: dict[int, list[dict]] = {}
    for a in raw["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    crowd_seen = []
    for i, img_info in enumerate(raw["images"]):
        img, t = inst[i]
        anns = by_image[img_info["id"]]
        assert t["image_id"] == img_info["id"] and t["file_name"] == img_info["file_name"]
        assert img.shape == (3, img_info["height"], img_info["width"])
        assert t["orig_size"] == (img_info["height"], img_info["width"])
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32)
        assert torch.equal(t["boxes"], expected)
        assert t["labels"].tolist() == [id_to_label[a["category_id"]] for a in anns]
        assert t["iscrowd"].tolist() == [bool(a["iscrowd"]) for a in anns]
        assert not t["difficult"].any() and not t["truncated"].any()
        masks = t["masks"]
        assert masks.dtype == torch.uint8 and masks.shape == (len(anns), img_info["height"], img_info["width"])
        for a, m in zip(anns, masks):
            area = int(m.sum())
            if a["iscrowd"]:
                assert isinstance(a["segmentation"], dict)  # uncompressed RLE
                crowd_seen.append((a["id"], area))
            else:
                assert isinstance(a["segmentation"], list)  # polygons
                assert abs(area - a["area"]) <= 0.1 * a["area"] + 10, (a["id"], area, a["area"])
    # the two crowd RLEs decode (their `area` is not asserted: PROVENANCE caveat 5)
    assert sorted(i for i, _ in crowd_seen) == [906000034417, 908400553664]
    assert all(area > 1000 for _, area in crowd_seen)


@needs_real
def test_semantic_paints_in_order_with_crowd_as_ignore(raw: dict) -> None:
    ds = COCODataset(ANN, IMAGES, task="semantic")
    k = next(i for i, im in enumerate(raw["images"]) if im["id"] == 34417)
    info = raw["images"][k]
    _, sem = ds[k]
    assert sem.dtype == torch.int64 and sem.shape == (info["height"], info["width"])
    expected = np.zeros((info["height"], info["width"]), np.int64)
    for a in (a for a in raw["annotations"] if a["image_id"] == 34417):
        m = decode_segmentation(a["segmentation"], info["height"], info["width"]).astype(bool)
        expected[m] = 255 if a["iscrowd"] else ds.category_id_to_label[a["category_id"]]
    assert np.array_equal(sem.numpy(), expected)
    assert (sem == 255).any() and (sem == ds.category_id_to_label[60]).any()  # crowd + donuts


@needs_real
def test_datamodule_crowd_not_trained_on_but_kept_in_val(tmp_path: Path) -> None:
    dm = COCODataModule(str(ANN), str(IMAGES), str(ANN), str(IMAGES), batch_size=3)
    assert dm.num_classes == 80 and dm.class_names[0] == "person"
    assert dm.label_to_category_id[80] == 90 and dm.category_id_to_label[90] == 80
    dm.setup("fit")
    assert dm.train_dataset.stats["crowd_excluded"] == 2 and dm.train_dataset.stats["objects"] == 82
    assert not any(dm.train_dataset[i][1]["iscrowd"].any() for i in range(len(dm.train_dataset)))
    assert dm.val_dataset.stats["objects"] == 84
    images, targets = next(iter(dm.val_dataloader()))
    assert len(images) == 3 and len(targets) == 3 and all(im.shape[0] == 3 for im in images)
    path = dm.save_label_map(tmp_path / "run" / "label_map.json")
    saved = json.loads(path.read_text())
    assert saved["category_id_to_label"]["90"] == 80 and saved["labels"][0] == {
        "label": 1,
        "category_id": 1,
        "name": "person",
    }


def _write_coco(root: Path, segm: dict | list, size=(20, 30)) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    h, w = size
    Image.new("RGB", (w, h)).save(root / "img" / "a.png")
    doc = {
        "images": [{"id": 5, "file_name": "a.png", "width": w, "height": h}],
        "categories": [{"id": 7, "name": "thing"}, {"id": 3, "name": "other"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0, "segmentation": segm}
        ],
    }
    path = root / "ann.json"
    path.write_text(json.dumps(doc))
    return path


def test_compressed_and_uncompressed_rle_and_polygon_decode(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    mask = np.zeros((20, 30), np.uint8)
    mask[3:8, 2:12] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    compressed = {"size": [20, 30], "counts": rle["counts"].decode("utf-8")}
    flat = mask.flatten(order="F")  # uncompressed RLE: run lengths in column-major order, starting with 0s
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    uncompressed = {"size": [20, 30], "counts": runs}
    polygon = [[2, 3, 12, 3, 12, 8, 2, 8]]
    for k, segm in enumerate((compressed, uncompressed, polygon)):
        ds = COCODataset(_write_coco(tmp_path / str(k), segm), tmp_path / str(k) / "img", task="instance")
        _, t = ds[0]
        assert t["labels"].tolist() == [2]  # id 7 is the 2nd of the sorted ids (3, 7)
        assert t["boxes"].tolist() == [[2.0, 3.0, 12.0, 8.0]]
        got = t["masks"][0].numpy()
        if k < 2:
            assert np.array_equal(got, mask)
        else:  # polygon rasterisation covers the rectangle's edges up to 1 px
            assert np.array_equal(got[3:8, 2:12], mask[3:8, 2:12]) and abs(int(got.sum()) - 50) <= 16


def _run_lengths(mask: np.ndarray) -> list[int]:
    """COCO run lengths of ``mask`` (column-major, starting with a run of zeros), computed directly."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]
    runs = np.diff(edges).tolist()
    return [0] + runs if flat.size and flat[0] == 1 else runs


@pytest.mark.parametrize("seed", range(6))
def test_rle_counts_reads_pycocotools_strings(seed: int) -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 300, 2))
    masks = [rng.random((h, w)) < rng.random(), np.ones((h, w), bool), np.zeros((h, w), bool)]
    block = np.zeros((h, w), bool)
    block[h // 3 :, : w // 2] = True
    masks.append(block)
    for m in masks:
        encoded = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"]
        runs = rle_counts(encoded)
        assert runs.tolist() == _run_lengths(m)
        assert int(runs.sum()) == h * w
