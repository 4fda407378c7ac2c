"""scripts/predict.py, models/prediction_writer.py and the results written by `train.py test / predict`."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from datamodules.shapes_generator import SHAPES_CLASSES
from models.prediction_writer import RESULTS_FILE, PredictionWriter, coco_results, rescale_prediction
from scripts.predict import main as predict_main

REPO = Path(__file__).resolve().parents[2]


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _coco(gt: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _load_res(gt: dict, results: list[dict]):
    with contextlib.redirect_stdout(io.StringIO()):
        return _coco(gt).loadRes(results)


@pytest.fixture
def coco_shapes(tiny_shapes_dataset: Path, tmp_path: Path) -> dict[str, Path]:
    """The shapes COCO files with category ids 10, 20, ... 60 (not the labels 1..6), and two val images."""
    out = {}
    for split in ("train", "val"):
        data = json.loads((tiny_shapes_dataset / "annotations" / f"instances_{split}.json").read_text())
        for c in data["categories"]:
            c["id"] *= 10
        for a in data["annotations"]:
            a["category_id"] *= 10
        out[split] = tmp_path / f"instances_{split}.json"
        out[split].write_text(json.dumps(data))
    folder = tmp_path / "my_images"
    folder.mkdir()
    for im in json.loads(out["val"].read_text())["images"][:2]:
        shutil.copy(tiny_shapes_dataset / "JPEGImages" / im["file_name"], folder / im["file_name"])
    out["images"] = folder
    return out


def test_detector_checkpoint_predicts_drawn_images_and_coco_results(coco_shapes, tiny_shapes_dataset, tmp_path):
    from datamodules.coco import COCODataModule
    from models.detection.fcos import FCOS

    dm = COCODataModule(
        str(coco_shapes["train"]),
        str(tiny_shapes_dataset / "JPEGImages"),
        str(coco_shapes["val"]),
        str(tiny_shapes_dataset / "JPEGImages"),
        batch_size=4,
    )
    torch.manual_seed(0)
    model = FCOS(
        num_classes=dm.num_classes,
        class_names=list(dm.class_names),
        min_size=64,
        max_size=64,
        score_thresh=0.0,
        detections_per_img=10,
    )
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, dm)  # a tiny fit: the checkpoint carries the DataModule's label -> category id map
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)

    out = tmp_path / "out"
    assert (
        predict_main(
            [
                str(coco_shapes["images"]),
                "--ckpt",
                str(ckpt),
                "--out",
                str(out),
                "--image-ids",
                str(coco_shapes["val"]),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    inputs = sorted(coco_shapes["images"].iterdir())
    for f in inputs:
        with Image.open(out / f"{f.stem}.jpg") as drawn, Image.open(f) as original:
            assert drawn.size == original.size
    gt = json.loads(coco_shapes["val"].read_text())
    results = json.loads((out / RESULTS_FILE).read_text())
    assert len(results) == 20  # 10 per image
    dt = _load_res(gt, results)  # the official reader accepts the file
    assert len(dt.getAnnIds()) == 20
    ids = {im["file_name"]: im["id"] for im in gt["images"]}
    assert {r["image_id"] for r in results} == {ids[f.name] for f in inputs}
    assert {r["category_id"] for r in results} <= {10, 20, 30, 40, 50, 60}

    # the file holds exactly the model's predictions for the image, labels mapped to category ids
    model.eval()
    x = torch.from_numpy(np.array(Image.open(inputs[0]).convert("RGB"))).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        pred = model([x])[0]
    mine = [r for r in results if r["image_id"] == ids[inputs[0].name]]
    x1, y1, x2, y2 = pred["boxes"][0].tolist()
    assert mine[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-2)
    assert [r["category_id"] for r in mine] == [10 * int(v) for v in pred["labels"]]
    assert [r["score"] for r in mine] == pytest.approx(pred["scores"].tolist(), abs=1e-4)


def test_semantic_checkpoint_writes_palette_label_maps(coco_shapes, tmp_path):
    from models.segmentation.fcn import FCN

    torch.manual_seed(0)
    model = FCN(channels=(4, 8, 8, 16, 16), num_classes=len(SHAPES_CLASSES), class_names=list(SHAPES_CLASSES))
    trainer = _trainer()
    trainer.strategy.connect(model)
    ckpt = tmp_path / "fcn.ckpt"
    trainer.save_checkpoint(ckpt)

    out = tmp_path / "out"
    files = sorted(coco_shapes["images"].iterdir())
    assert predict_main([*map(str, files), "--ckpt", str(ckpt), "--out", str(out), "--no-progress"]) == 0
    model.eval()
    for f in files:
        with Image.open(out / "label_maps" / f"{f.stem}.png") as png:
            assert png.mode == "P"  # VOC palette, pixel value = class, as evaluate.py semantic reads
            labels = np.asarray(png)
        x = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            expected = model(x[None]).argmax(1)[0].numpy()
        assert labels.shape == expected.shape and (labels == expected).all()
        with Image.open(out / f"{f.stem}.jpg") as drawn, Image.open(f) as original:
            assert drawn.size == original.size
    assert not (out / RESULTS_FILE).exists()
    assert json.loads((out / "image_ids.json").read_text()) == {f.name: i for i, f in enumerate(files, 1)}


def test_instance_results_carry_rle_masks_readable_by_loadres():
    from pycocotools import mask as mask_utils

    masks = torch.zeros(2, 1, 6, 8)
    masks[0, 0, 1:4, 2:5] = 0.9
    masks[1, 0, 3:6, 0:8] = 0.7
    pred = {
        "boxes": torch.tensor([[2.0, 1.0, 5.0, 4.0], [0.0, 3.0, 8.0, 6.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.4]),
        "masks": masks,
    }
    results = coco_results(pred, image_id=7, label_to_category_id={1: 18, 2: 44})
    assert [r["category_id"] for r in results] == [18, 44] and results[1]["bbox"] == [0.0, 3.0, 8.0, 3.0]
    decoded = mask_utils.decode(
        {"size": results[0]["segmentation"]["size"], "counts": results[0]["segmentation"]["counts"].encode()}
    )
    assert (decoded == (masks[0, 0] > 0.5).numpy()).all()
    gt = {
        "images": [{"id": 7, "height": 6, "width": 8, "file_name": "a.jpg"}],
        "annotations": [],
        "categories": [{"id": 18, "name": "dog"}, {"id": 44, "name": "bottle"}],
    }
    dt = _load_res(gt, results)
    assert dt.anns[1]["area"] == 9  # loadRes took the mask, not the box


def test_rescale_prediction_maps_boxes_and_masks_to_the_original_size():
    pred = {
        "boxes": torch.tensor([[8.0, 4.0, 16.0, 12.0]]),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([1.0]),
        "masks": torch.ones(1, 1, 16, 32),
    }
    out = rescale_prediction(pred, (16, 32), (32, 128))
    assert out["boxes"].tolist() == [[32.0, 8.0, 64.0, 24.0]]
    assert out["masks"].shape == (1, 1, 32, 128)


def test_prediction_writer_writes_semantic_label_maps_of_the_test_split(
    tiny_shapes_dataset, tiny_shapes_params, tmp_path
):
    from datamodules.shapes import ShapesDataModule
    from models.segmentation.fcn import FCN

    p = tiny_shapes_params
    dm = ShapesDataModule(
        root=str(tiny_shapes_dataset),
        task="semantic",
        seed=p["seed"],
        num_train=p["num_train"],
        num_val=p["num_val"],
        image_size=p["size"],
        batch_size=3,
        progress=False,
    )
    torch.manual_seed(0)
    model = FCN(channels=(4, 8, 8, 16, 16), num_classes=len(SHAPES_CLASSES), class_names=list(SHAPES_CLASSES))
    _trainer(callbacks=[PredictionWriter(out_dir=str(tmp_path / "run"))]).test(model, dm, verbose=False)
    written = sorted((tmp_path / "run" / "label_maps").glob("*.png"))
    assert [f.stem for f in written] == sorted(Path(r.file_name).stem for r in dm.test_dataset.records)
    image, _ = dm.test_dataset[0]
    model.eval()
    with torch.no_grad():
        expected = model(image[None]).argmax(1)[0].numpy()
    first = Path(dm.test_dataset.records[0].file_name).stem
    assert (np.asarray(Image.open(tmp_path / "run" / "label_maps" / f"{first}.png")) == expected).all()


def test_train_cli_test_and_predict_write_results(tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    from scripts.train import main

    p = tiny_shapes_params
    args = [
        "--config",
        str(REPO / "experiments/fcos/shapes.yaml"),
        f"--data.init_args.root={tiny_shapes_dataset}",
        "--data.init_args.reader=coco",
        f"--data.init_args.seed={p['seed']}",
        f"--data.init_args.num_train={p['num_train']}",
        f"--data.init_args.num_val={p['num_val']}",
        f"--data.init_args.image_size={p['size']}",
        "--data.init_args.num_workers=0",
        "--data.init_args.persistent_workers=false",
        "--data.init_args.batch_size=4",
        "--model.init_args.min_size=64",
        "--model.init_args.max_size=64",
        "--model.init_args.weights=null",
        "--model.init_args.score_thresh=0.0",
        "--model.init_args.detections_per_img=5",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.callbacks.init_args.dirpath={tmp_path / 'ckpt'}",
    ]
    cli = main(["test", *args])
    log_dir = Path(cli.trainer.log_dir)
    gt = json.loads((tiny_shapes_dataset / "annotations" / "instances_val.json").read_text())
    results = json.loads((log_dir / RESULTS_FILE).read_text())
    assert {r["image_id"] for r in results} == {im["id"] for im in gt["images"]}
    assert len(results) == 5 * len(gt["images"])
    assert len(_load_res(gt, results).getAnnIds()) == len(results)

    cli = main(["predict", *args])
    out = Path(cli.trainer.log_dir) / "predictions"
    assert len(json.loads((out / RESULTS_FILE).read_text())) == len(results)
    assert sorted(f.name for f in out.glob("*.jpg")) == sorted(im["file_name"] for im in gt["images"])
