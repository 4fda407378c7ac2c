"""ShapesDataModule: the VOC and COCO views agree, and every task yields batches (smoke test)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from datamodules import DatasetWarning, ShapesDataModule
from datamodules.shapes_generator import SHAPES_CLASSES


def _dm(root: Path, params: dict, **kw) -> ShapesDataModule:
    return ShapesDataModule(
        root=str(root),
        seed=params["seed"],
        num_train=params["num_train"],
        num_val=params["num_val"],
        image_size=params["size"],
        progress=False,
        batch_size=4,
        **kw,
    )


@pytest.mark.parametrize("task", ["detection", "instance", "semantic"])
def test_voc_and_coco_views_agree(tiny_shapes_dataset: Path, tiny_shapes_params: dict, task: str) -> None:
    voc = _dm(tiny_shapes_dataset, tiny_shapes_params, reader="voc", task=task)
    coco = _dm(tiny_shapes_dataset, tiny_shapes_params, reader="coco", task=task)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # generated data needs no repair
        voc.setup("validate")
        coco.setup("validate")
    assert len(voc.val_dataset) == len(coco.val_dataset) == tiny_shapes_params["num_val"]
    objects = 0
    for i in range(len(voc.val_dataset)):
        img_v, t_v = voc.val_dataset[i]
        img_c, t_c = coco.val_dataset[i]
        assert torch.equal(img_v, img_c)
        if task == "semantic":
            outside_band = t_v != 255
            assert torch.equal(t_v[outside_band], t_c[outside_band])
            assert set(t_v.unique().tolist()) <= set(range(len(SHAPES_CLASSES) + 1)) | {255}
            continue
        assert t_v["file_name"] == t_c["file_name"] and t_v["image_id"] == t_c["image_id"]
        assert torch.equal(t_v["boxes"], t_c["boxes"])  # box for box
        assert torch.equal(t_v["labels"], t_c["labels"])
        objects += len(t_v["labels"])
        if task == "instance":
            # mask for mask, outside the 255 band of SegmentationObject (the RLE masks include it)
            assert t_v["masks"].shape == t_c["masks"].shape
            band = t_v["masks"].sum(0) == 0  # pixels in no VOC mask: background or band
            assert torch.equal(t_v["masks"][:, ~band], t_c["masks"][:, ~band])
            assert not bool((t_v["masks"].bool() & ~t_c["masks"].bool()).any())
    if task != "semantic":
        assert objects > 0


@pytest.mark.parametrize("reader", ["voc", "coco"])
@pytest.mark.parametrize("task", ["detection", "instance", "semantic"])
def test_smoke_setup_and_one_batch_per_loader(
    tiny_shapes_dataset: Path, tiny_shapes_params: dict, task: str, reader: str
) -> None:
    dm = _dm(
        tiny_shapes_dataset,
        tiny_shapes_params,
        reader=reader,
        task=task,
        train_augment=[
            {"name": "HorizontalFlip", "p": 0.5},
            {"name": "RandomScale", "scale_limit": 0.2, "p": 1.0},
            {"name": "PadIfNeeded", "min_height": 80, "min_width": 80, "fill_mask": 255 if task == "semantic" else 0},
            {"name": "RandomCrop", "height": 64, "width": 64},
        ],
    )
    assert dm.num_classes == len(SHAPES_CLASSES) and dm.class_names == SHAPES_CLASSES and dm.task == task
    dm.prepare_data()  # current already: must not regenerate
    dm.setup("fit")
    dm.setup("test")
    assert dm.test_dataset is dm.val_dataset and len(dm.train_dataset) == tiny_shapes_params["num_train"]
    size = tiny_shapes_params["size"]
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        images, targets = next(iter(loader))
        if task == "semantic":
            assert images.shape == (4, 3, size, size) and images.dtype == torch.float32
            assert targets.shape == (4, size, size) and targets.dtype == torch.int64
            assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
            continue
        assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 4
        for img, t in zip(images, targets):
            assert img.dtype == torch.float32 and img.shape[0] == 3
            n = len(t["labels"])
            assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
            assert t["labels"].dtype == torch.int64 and ((t["labels"] >= 1) & (t["labels"] <= dm.num_classes)).all()
            for key in ("difficult", "iscrowd", "truncated"):
                assert t[key].dtype == torch.bool and t[key].shape == (n,)
            assert t["orig_size"] == (size, size) and isinstance(t["image_id"], int) and t["file_name"].endswith(".jpg")
            if task == "instance":
                assert t["masks"].shape == (n, *img.shape[1:]) and t["masks"].dtype == torch.uint8
            else:
                assert "masks" not in t


def test_generates_on_first_use_only(tmp_path: Path) -> None:
    dm = ShapesDataModule(root=str(tmp_path / "s"), num_train=4, num_val=2, image_size=48, progress=False, seed=1)
    assert not dm.is_current()
    dm.prepare_data()
    assert dm.is_current() and (tmp_path / "s" / "meta.json").is_file()
    mtime = (tmp_path / "s" / "meta.json").stat().st_mtime_ns
    dm.setup()
    assert (tmp_path / "s" / "meta.json").stat().st_mtime_ns == mtime  # not regenerated
    assert len(dm.train_dataset) == 4 and len(dm.val_dataset) == 2 and dm.test_dataset is dm.val_dataset
