"""The VOC reader on the real VOC2007 / VOC2012 files (values taken from the files themselves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import VOC_CLASSES, DatasetError, VOCDataModule, VOCDataset
from datamodules.palette import read_label_png
from datamodules.voc import parse_voc_xml, resolve_voc_root

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REAL = SHARED / "data" / "real"
DEVKIT = REAL / "VOCdevkit"

pytestmark = pytest.mark.skipif(
    not DEVKIT.is_dir(), reason=f"real VOC fixture files not found at {DEVKIT} (expected shared/ beside the repo root)"
)

LABEL = {name: i for i, name in enumerate(VOC_CLASSES, start=1)}


def test_class_order_is_the_devkit_order() -> None:
    assert len(VOC_CLASSES) == 20
    assert LABEL["chair"] == 9 and LABEL["dog"] == 12 and LABEL["person"] == 15 and LABEL["train"] == 19


def test_voc2007_detection_values() -> None:
    ds = VOCDataset(DEVKIT / "VOC2007", "test")
    assert len(ds) == 2
    img, t = ds[0]
    assert t["file_name"] == "000001.jpg" and t["image_id"] == 1
    assert img.dtype == torch.float32 and img.shape == (3, 500, 353) and 0 <= img.min() and img.max() <= 1
    assert t["orig_size"] == (500, 353)
    # XML: dog 48,240,195,371 truncated=1; person 8,12,352,498 truncated=1 (1-based inclusive)
    assert t["boxes"].dtype == torch.float32
    assert t["boxes"].tolist() == [[47.0, 239.0, 195.0, 371.0], [7.0, 11.0, 352.0, 498.0]]
    assert t["labels"].dtype == torch.int64 and t["labels"].tolist() == [LABEL["dog"], LABEL["person"]]
    assert t["truncated"].tolist() == [True, True]
    assert t["difficult"].tolist() == [False, False] and t["iscrowd"].tolist() == [False, False]
    assert "masks" not in t

    img, t = ds[1]
    assert t["file_name"] == "000002.jpg" and img.shape == (3, 500, 335)
    assert t["boxes"].tolist() == [[138.0, 199.0, 207.0, 301.0]]
    assert t["labels"].tolist() == [LABEL["train"]] and t["truncated"].tolist() == [False]
    assert ds.stats["clipped"] == 0 and ds.stats["degenerate_dropped"] == 0 and ds.stats["objects"] == 3


def test_root_may_be_devkit_parent_or_year_folder() -> None:
    assert resolve_voc_root(DEVKIT, "2007") == DEVKIT / "VOC2007"
    assert resolve_voc_root(REAL, "2012") == DEVKIT / "VOC2012"
    assert resolve_voc_root(DEVKIT / "VOC2007", "2007") == DEVKIT / "VOC2007"
    with pytest.raises(DatasetError, match="VOC2009"):
        resolve_voc_root(DEVKIT, "2009")


def test_voc2012_instance_masks_follow_segmentation_object() -> None:
    ds = VOCDataset(DEVKIT / "VOC2012", "train", task="instance")
    assert len(ds) == 1
    img, t = ds[0]
    assert img.shape == (3, 375, 500)
    assert t["labels"].tolist() == [LABEL["dog"], LABEL["chair"]]
    assert t["boxes"].tolist() == [[122.0, 114.0, 379.0, 275.0], [74.0, 0.0, 428.0, 375.0]]
    assert t["truncated"].tolist() == [False, True]
    masks = t["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (2, 375, 500)
    png = read_label_png(DEVKIT / "VOC2012" / "SegmentationObject" / "2007_000063.png")
    assert np.array_equal(masks[0].numpy(), (png == 1).astype(np.uint8))  # object 1 = dog
    assert np.array_equal(masks[1].numpy(), (png == 2).astype(np.uint8))  # object 2 = chair
    assert masks.sum(dim=(1, 2)).tolist() == [27632, 78930]  # PROVENANCE.md pixel counts
    void = torch.from_numpy(png == 255)
    assert int(void.sum()) == 8714 and not bool((masks.bool() & void).any())  # 255 pixels in no mask
    # the dog mask spans 1-based pixels (126,120)-(373,271) (PROVENANCE caveat 6): in 0-based continuous
    # coordinates its tight box is (125, 119, 373, 271), inside the XML box (122, 114, 379, 275)
    ys, xs = torch.nonzero(masks[0], as_tuple=True)
    assert (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) == (125, 119, 373, 271)


def test_voc2012_semantic_map_values_and_counts() -> None:
    ds = VOCDataset(DEVKIT / "VOC2012", "trainval", task="semantic")
    img, sem = ds[0]
    assert img.shape == (3, 375, 500) and sem.dtype == torch.int64 and sem.shape == (375, 500)
    values, counts = torch.unique(sem, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == {0: 72224, LABEL["chair"]: 78930, LABEL["dog"]: 27632, 255: 8714}


def test_action_xml_with_float_ymin_parses() -> None:
    ann = parse_voc_xml(DEVKIT / "VOC2012" / "Annotations" / "2011_003353.xml", LABEL)
    assert (ann["height"], ann["width"]) == (500, 375)
    assert ann["labels"].tolist() == [LABEL["person"]]
    assert ann["boxes"].tolist() == [[129.0, 45.70000076293945 - 1.0, 375.0, 470.0]]
    assert ann["truncated"].tolist() == [False] and ann["difficult"].tolist() == [False]  # tags absent


def test_datamodule_on_real_voc2007() -> None:
    dm = VOCDataModule(root=str(DEVKIT), year="2007", train_split="test", val_split="test", batch_size=2)
    assert dm.num_classes == 20 and dm.class_names == VOC_CLASSES and dm.task == "detection"
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert isinstance(images, list) and len(images) == 2 and isinstance(targets, list)
    assert sorted(t["file_name"] for t in targets) == ["000001.jpg", "000002.jpg"]
    dm.setup("test")
    assert dm.test_dataset is dm.val_dataset  # test_split=None tests on val_split


def test_difficult_dropped_in_train_kept_flagged_in_val(tmp_path: Path) -> None:
    year = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (40, 30), (10, 20, 30)).save(year / "JPEGImages" / "a.jpg")
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x}</xmin><ymin>2</ymin>"
        f"<xmax>{x + 5}</xmax><ymax>9</ymax></bndbox></object>"
        for n, d, x in (("cat", 0, 2), ("dog", 1, 10), ("bird", 0, 20))
    )
    (year / "Annotations" / "a.xml").write_text(
        f"<annotation><size><width>40</width><height>30</height><depth>3</depth></size>{objs}</annotation>"
    )
    for split in ("train", "val"):
        (year / "ImageSets" / "Main" / f"{split}.txt").write_text("a\n")
    dm = VOCDataModule(root=str(tmp_path), year="2007", train_split="train", val_split="val")
    dm.setup("fit")
    _, tr = dm.train_dataset[0]
    _, va = dm.val_dataset[0]
    assert tr["labels"].tolist() == [LABEL["cat"], LABEL["bird"]] and not tr["difficult"].any()
    assert dm.train_dataset.stats["difficult_excluded"] == 1
    assert va["labels"].tolist() == [LABEL["cat"], LABEL["dog"], LABEL["bird"]]
    assert va["difficult"].tolist() == [False, True, False]
    dm2 = VOCDataModule(root=str(tmp_path), year="2007", train_split="train", val_split="val", keep_difficult_in_train=True)
    dm2.setup("fit")
    assert dm2.train_dataset[0][1]["difficult"].tolist() == [False, True, False]
