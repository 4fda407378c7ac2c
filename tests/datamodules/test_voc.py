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
    assert dict(zip(values.tolist(), counts.tolist())) == {
        0: 72224,
        LABEL["chair"]: 78930,
        LABEL["dog"]: 27632,
        255: 8714,
    }


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
    dm2 = VOCDataModule(
        root=str(tmp_path), year="2007", train_split="train", val_split="val", keep_difficult_in_train=True
    )
    dm2.setup("fit")
    assert dm2.train_dataset[0][1]["difficult"].tolist() == [False, True, False]


# -- several training sets (VOC07+12) and SBD's train_aug ------------------------------------------------------
def _devkit_copy(tmp_path: Path) -> Path:
    """The real devkit copied to ``tmp_path`` with VOC2007 ``Main/trainval`` and VOC2012 ``Main/trainval`` added."""
    import shutil

    devkit = Path(shutil.copytree(DEVKIT, tmp_path / "VOCdevkit"))
    (devkit / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n000002\n")
    (devkit / "VOC2012" / "ImageSets" / "Main").mkdir()
    (devkit / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").write_text("2007_000063\n2011_003353\n")
    return devkit


def test_detection_trains_on_voc07_plus_12_and_validates_on_one_set(tmp_path: Path) -> None:
    devkit = _devkit_copy(tmp_path)
    dm = VOCDataModule(
        root=str(devkit), year="2007", val_split="test", train_sets=[(2007, "trainval"), ("2012", "trainval")]
    )
    dm.setup("fit")
    train = dm.train_dataset
    assert [r.file_name for r in train.records] == ["000001.jpg", "000002.jpg", "2007_000063.jpg", "2011_003353.jpg"]
    assert [r.path.parent.parent.name for r in train.records] == ["VOC2007", "VOC2007", "VOC2012", "VOC2012"]
    assert [train[i][1]["image_id"] for i in range(4)] == [1, 2, 3, 4]  # unique over the concatenation
    assert "VOC2007 trainval + VOC2012 trainval" in train.name
    _, t = train[2]  # 2007_000063: dog, chair as in the XML
    assert t["labels"].tolist() == [LABEL["dog"], LABEL["chair"]]
    assert t["boxes"].tolist() == [[122.0, 114.0, 379.0, 275.0], [74.0, 0.0, 428.0, 375.0]]
    assert train.stats["images"] == 4 and train.stats["objects"] == 3 + 2 + 1
    assert [r.file_name for r in dm.val_dataset.records] == ["000001.jpg", "000002.jpg"]  # VOC2007 test only
    images, targets = next(iter(dm.train_dataloader()))
    assert len(images) == 4 and sorted(t["image_id"] for t in targets) == [1, 2, 3, 4]


def test_train_sets_default_is_year_and_train_split(tmp_path: Path) -> None:
    devkit = _devkit_copy(tmp_path)
    dm = VOCDataModule(root=str(devkit), year="2012", train_split="trainval", val_split="trainval")
    assert dm.train_sets == [("2012", "trainval")]
    dm.setup("fit")
    assert [r.file_name for r in dm.train_dataset.records] == ["2007_000063.jpg", "2011_003353.jpg"]


def test_semantic_concatenates_sets_and_refuses_an_image_in_two_sets(tmp_path: Path) -> None:
    from PIL import Image

    from datamodules.palette import save_palette_png

    devkit = _devkit_copy(tmp_path)
    year = devkit / "VOC2012"
    Image.new("RGB", (30, 20), (9, 9, 9)).save(year / "JPEGImages" / "extra_1.jpg")
    label = np.zeros((20, 30), np.uint8)
    label[5:10, 5:20] = LABEL["cat"]
    save_palette_png(year / "SegmentationClass" / "extra_1.png", label)
    (year / "ImageSets" / "Segmentation" / "extra.txt").write_text("extra_1\n")
    dm = VOCDataModule(
        root=str(devkit), year="2012", val_split="train", task="semantic", train_sets=[(2012, "train"), (2012, "extra")]
    )
    dm.setup("fit")
    assert len(dm.train_dataset) == 2
    _, sem = dm.train_dataset[1]
    assert sem.shape == (20, 30) and torch.equal(sem, torch.from_numpy(label).long())
    dup = VOCDataModule(
        root=str(devkit),
        year="2012",
        val_split="train",
        task="semantic",
        train_sets=[(2012, "train"), (2012, "trainval")],
    )
    msg = r"trainval\.txt: line 1: image 2007_000063\.jpg is also in an earlier set \(.*/train\.txt: line 1\)"
    with pytest.raises(DatasetError, match=msg):
        dup.setup("fit")


def _sbd(tmp_path: Path, train: list[str], val: list[str], maps: dict[str, np.ndarray]) -> Path:
    """A tiny SBD ``benchmark_RELEASE`` (``dataset/{img,cls,inst}``, ``train.txt``, ``val.txt``)."""
    from PIL import Image
    from scipy.io import savemat

    ds = tmp_path / "benchmark_RELEASE" / "dataset"
    for sub in ("img", "cls", "inst"):
        (ds / sub).mkdir(parents=True)
    (ds / "train.txt").write_text("".join(f"{s}\n" for s in train))
    (ds / "val.txt").write_text("".join(f"{s}\n" for s in val))
    for stem, cls in maps.items():
        Image.new("RGB", (cls.shape[1], cls.shape[0]), (40, 80, 120)).save(ds / "img" / f"{stem}.jpg")
        present = np.unique(cls[cls > 0]).astype(np.uint8)
        savemat(
            ds / "cls" / f"{stem}.mat",
            {"GTcls": {"Segmentation": cls, "Boundaries": np.zeros((20, 1)), "CategoriesPresent": present}},
        )
    return tmp_path / "benchmark_RELEASE"


def test_train_aug_is_voc_train_plus_sbd_minus_voc_val(tmp_path: Path) -> None:
    from datamodules.palette import save_palette_png

    devkit = _devkit_copy(tmp_path)
    seg = devkit / "VOC2012" / "ImageSets" / "Segmentation"
    (seg / "val.txt").write_text("2011_003353\n")
    save_palette_png(devkit / "VOC2012" / "SegmentationClass" / "2011_003353.png", np.zeros((500, 375), np.uint8))
    a = np.zeros((20, 30), np.uint8)
    a[2:8, 3:9] = LABEL["cat"]
    b = np.full((16, 24), LABEL["bus"], np.uint8)
    maps = {
        "2008_000001": a,
        "2008_000002": b,
        "2007_000063": np.ones((375, 500), np.uint8),
        "2011_003353": np.ones((500, 375), np.uint8),
    }
    # SBD lists a VOC train image (VOC's own PNG wins), a VOC val image (held out) and one image twice
    sbd = _sbd(tmp_path, ["2008_000001", "2007_000063"], ["2011_003353", "2008_000002", "2008_000001"], maps)
    dm = VOCDataModule(
        root=str(devkit), year="2012", train_split="train_aug", val_split="val", task="semantic", sbd_root=str(sbd)
    )
    dm.setup("fit")
    train = dm.train_dataset
    assert [r.file_name for r in train.records] == ["2007_000063.jpg", "2008_000001.jpg", "2008_000002.jpg"]
    assert train.records[0].mask_path == devkit / "VOC2012" / "SegmentationClass" / "2007_000063.png"
    assert train.records[1].path == sbd / "dataset" / "img" / "2008_000001.jpg"
    _, sem0 = train[0]
    values, counts = torch.unique(sem0, return_counts=True)  # the VOC PNG, not SBD's all-ones map
    voc_png_counts = {0: 72224, LABEL["chair"]: 78930, LABEL["dog"]: 27632, 255: 8714}
    assert dict(zip(values.tolist(), counts.tolist())) == voc_png_counts
    assert torch.equal(train[1][1], torch.from_numpy(a).long())
    assert torch.equal(train[2][1], torch.from_numpy(b).long())
    assert [r.file_name for r in dm.val_dataset.records] == ["2011_003353.jpg"]


def test_sbd_misconfiguration_and_bad_mat_are_named_errors(tmp_path: Path) -> None:
    devkit = _devkit_copy(tmp_path)
    with pytest.raises(ValueError, match="sbd_root is only used by the training split 'train_aug'"):
        VOCDataModule(root=str(devkit), year="2012", train_split="train", task="semantic", sbd_root=str(tmp_path))
    with pytest.raises(DatasetError, match=r"train_aug\.txt: split 'train_aug': needs the SBD folder"):
        VOCDataset(devkit / "VOC2012", "train_aug", task="semantic")
    with pytest.raises(DatasetError, match="sbd_root: no SBD dataset folder found"):
        VOCDataset(devkit / "VOC2012", "train_aug", task="semantic", sbd_dir=tmp_path / "nowhere")
    (devkit / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").write_text("2011_003353\n")
    sbd = _sbd(tmp_path, ["2008_000001"], [], {"2008_000001": np.zeros((4, 5), np.uint8)})
    from scipy.io import savemat

    savemat(sbd / "dataset" / "cls" / "2008_000001.mat", {"other": np.zeros((4, 5), np.uint8)})
    ds = VOCDataset(devkit / "VOC2012", "train_aug", task="semantic", sbd_dir=sbd)
    with pytest.raises(DatasetError, match=r"cls/2008_000001\.mat: GTcls\.Segmentation: missing"):
        ds[1]
    savemat(sbd / "dataset" / "cls" / "2008_000001.mat", {"GTcls": {"Segmentation": np.full((4, 5), 30, np.uint8)}})
    with pytest.raises(DatasetError, match=r"2008_000001\.mat: label values \[30\]"):
        ds[1]


def test_cli_parses_train_sets_and_sbd_root() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(VOCDataModule, "data")
    cfg = parser.parse_string(
        "data:\n  root: /data/VOCdevkit\n  train_sets: [[2007, trainval], [2012, trainval]]\n  val_split: test\n"
    )
    dm = VOCDataModule(**cfg.data.as_dict())
    assert dm.train_sets == [("2007", "trainval"), ("2012", "trainval")] and dm.splits["val"] == "test"
    cfg = parser.parse_string(
        "data:\n  year: '2012'\n  train_split: train_aug\n  val_split: val\n  task: semantic\n"
        "  sbd_root: /data/benchmark_RELEASE\n"
    )
    assert cfg.data.sbd_root == "/data/benchmark_RELEASE" and cfg.data.train_sets is None


def test_an_image_repeated_inside_one_set_file_is_kept_as_listed(tmp_path: Path) -> None:
    devkit = _devkit_copy(tmp_path)
    (devkit / "VOC2012" / "ImageSets" / "Segmentation" / "twice.txt").write_text("2007_000063\n2007_000063\n")
    ds = VOCDataset(devkit / "VOC2012", "twice", task="semantic")
    assert [r.file_name for r in ds.records] == ["2007_000063.jpg"] * 2 and [r.image_id for r in ds.records] == [1, 2]


def test_several_years_need_a_root_above_the_year_folders(tmp_path: Path) -> None:
    devkit = _devkit_copy(tmp_path)
    dm = VOCDataModule(
        root=str(devkit / "VOC2007"), year="2007", val_split="test", train_sets=[(2007, "trainval"), (2012, "trainval")]
    )
    with pytest.raises(DatasetError, match=r"VOC2007: root: train_sets name the years \['2007', '2012'\]"):
        dm.setup("fit")
