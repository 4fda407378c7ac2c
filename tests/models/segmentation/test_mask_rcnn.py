"""Mask R-CNN: losses in train mode, pasted mask probabilities in eval mode, stage timing (its short fit:
tests/models/test_model_contract.py)."""

import numpy as np
import pytest
import torch

from datamodules.shapes_generator import render_image
from models.registry import get_model
from models.segmentation.mask_rcnn import MaskRCNN

SMALL = {"fpn_channels": 16, "representation_size": 32, "mask_head_channels": (16, 16), "num_classes": 6}


def instance_batch(n: int = 4, size: int = 64) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Images and instance targets (boxes of the visible masks, labels 1..6, masks) of the shapes generator."""
    images, targets = [], []
    for i in range(n):
        r = render_image(seed=0, split="train", index=i, size=size)
        visible = [o.visible for o in r.objects]
        masks = torch.from_numpy(np.stack(visible) if visible else np.zeros((0, size, size), bool)).to(torch.uint8)
        boxes = []
        for m in masks:
            ys, xs = torch.nonzero(m, as_tuple=True)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        images.append(torch.from_numpy(r.image).permute(2, 0, 1).float() / 255)
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([o.label for o in r.objects], dtype=torch.int64),
                "masks": masks,
            }
        )
    return images, targets


def test_train_mode_returns_box_and_mask_losses():
    torch.manual_seed(0)
    model = MaskRCNN(**SMALL).train()
    images, targets = instance_batch()
    assert sum(len(t["labels"]) for t in targets) > 0
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_eval_mode_returns_mask_probabilities_pasted_at_image_size_and_stage_times():
    torch.manual_seed(0)
    model = MaskRCNN(box_score_thresh=0.0, **SMALL).eval()
    model.stage_timer.enabled = True
    with torch.no_grad():
        preds = model([torch.rand(3, 64, 80), torch.rand(3, 48, 64)])
    for pred, (h, w) in zip(preds, [(64, 80), (48, 64)]):
        n = len(pred["boxes"])
        assert n > 0
        assert pred["masks"].shape == (n, 1, h, w)
        assert pred["masks"].min() >= 0 and pred["masks"].max() <= 1
        assert pred["labels"].min() >= 1 and pred["labels"].max() <= 6
    assert set(model.stage_times_ms()) == {"transform", "backbone", "rpn", "roi_heads", "postprocess"}


def test_heads_and_anchors_follow_the_arguments():
    model = MaskRCNN(**SMALL)
    assert model.detector.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 7  # one 28 x 28 mask per class
    assert model.detector.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    model.set_nms_iou(0.3)
    assert model.detector.roi_heads.nms_thresh == 0.3
    with pytest.raises(ValueError, match="one anchor size per level"):
        MaskRCNN(anchor_sizes=(8, 16), **SMALL)
    entry = get_model("mask_rcnn")
    assert (entry.cls, entry.family, entry.task) == (MaskRCNN, "instance_segmentation", "instance")


def test_is_faster_rcnn_with_its_argument_names_and_a_mask_head():
    import inspect

    from models.base import InstanceSegmentationModule
    from models.detection.faster_rcnn import FasterRCNN

    assert issubclass(MaskRCNN, FasterRCNN) and issubclass(MaskRCNN, InstanceSegmentationModule)
    own = set(inspect.signature(MaskRCNN.__init__).parameters) - {"self", "kwargs"}
    faster = set(inspect.signature(FasterRCNN.__init__).parameters) - {"self", "kwargs"}
    assert own - faster == {"mask_roi_output_size", "mask_head_channels"}  # everything else is Faster R-CNN's
    model = MaskRCNN(roi_output_size=5, mask_roi_output_size=10, **SMALL)
    heads = model.detector.roi_heads
    assert heads.box_roi_pool.output_size == (5, 5) and heads.mask_roi_pool.output_size == (10, 10)
    assert heads.mask_roi_pool.featmap_names == heads.box_roi_pool.featmap_names == ["c2", "c3", "c4", "c5"]
    assert heads.mask_roi_pool.canonical_scale == heads.box_roi_pool.canonical_scale == 224
    assert model.detector.rpn.fg_bg_sampler.batch_size_per_image == heads.fg_bg_sampler.batch_size_per_image == 128
    torch.manual_seed(0)
    images, targets = instance_batch(2)
    assert torch.isfinite(model.train()(images, targets)["loss_mask"])  # 20 x 20 mask logits for 10 x 10 RoIs


def test_trains_and_validates_through_lightning(tiny_shapes_dataset, tiny_shapes_params):
    import pytorch_lightning as pl

    from datamodules import ShapesDataModule

    params = dict(tiny_shapes_params)
    data = ShapesDataModule(
        root=str(tiny_shapes_dataset),
        task="instance",
        image_size=params.pop("size"),
        batch_size=4,
        progress=False,
        **params,
    )
    model = MaskRCNN(min_size=64, max_size=64, detections_per_img=20, warmup_steps=1, **SMALL)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, data)
    assert 0.0 <= model.last_val_metrics["coco_segm/AP50"] <= 1.0
    assert 0.0 <= model.last_val_metrics["voc07/mAP"] <= 1.0
