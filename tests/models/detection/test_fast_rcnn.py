import numpy as np
import pytest
import torch

from datamodules.shapes_generator import render_image
from models.detection.fast_rcnn import FastRCNN
from models.registry import get_model

K = 6  # the embedded dataset's classes


def shapes_sample(index: int, size: int = 128) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Image ``index`` of the embedded dataset rendered in memory, with its boxes (tight visible extents)."""
    rendered = render_image(0, "train", index, size)
    boxes = []
    for obj in rendered.objects:
        ys, xs = np.nonzero(obj.visible)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([obj.label for obj in rendered.objects], dtype=torch.int64),
    }
    return torch.from_numpy(rendered.image).permute(2, 0, 1).float() / 255, target


def batch(indices=(1, 2, 3)) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images, targets = zip(*(shapes_sample(i) for i in indices))
    return list(images), list(targets)


def small_model(tmp_path, **kwargs) -> FastRCNN:
    torch.manual_seed(0)
    return FastRCNN(num_classes=K, proposal_cache_dir=str(tmp_path / "ss"), representation_size=64, **kwargs)


def test_registered_as_two_stage():
    assert get_model("fast_rcnn").cls is FastRCNN and get_model("fast_rcnn").family == "two_stage"


def test_train_forward_returns_the_multi_task_loss(tmp_path):
    model = small_model(tmp_path).train()
    images, targets = batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.stages[0][0][0].weight.grad is not None  # end to end, into the backbone


def test_train_needs_targets(tmp_path):
    with pytest.raises(ValueError, match="targets"):
        small_model(tmp_path).train()(batch()[0])


def test_eval_forward_returns_detections_in_the_image(tmp_path):
    model = small_model(tmp_path).eval()
    images = [batch()[0][0], torch.rand(3, 96, 112)]  # a second size: resized inside, boxes mapped back
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for image, d in zip(images, detections):
        assert set(d) == {"boxes", "labels", "scores"}
        assert d["boxes"].shape == (len(d["scores"]), 4) and d["labels"].dtype == torch.int64
        assert len(d["scores"]) > 0 and ((d["labels"] >= 1) & (d["labels"] <= K)).all()
        assert ((d["scores"] > model.score_thresh) & (d["scores"] <= 1)).all()
        height, width = image.shape[-2:]
        assert (d["boxes"][:, :2] >= 0).all()
        assert (d["boxes"][:, 2] <= width).all() and (d["boxes"][:, 3] <= height).all()


def test_backbone_runs_once_for_all_regions(tmp_path):
    model = small_model(tmp_path).eval()
    calls, pooled = [], []
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    model.head.roi_pooler.register_forward_hook(lambda m, i, o: pooled.append(o.shape))
    images = batch()[0]
    proposals = [model.selective_search(im) for im in images]
    with torch.no_grad():
        model(images, proposals=proposals)
    assert calls == [(3, 3, 128, 128)]  # one pass for the whole batch, whatever the number of regions
    assert pooled == [(sum(len(p) for p in proposals), 64, 7, 7)]  # c3: 64 channels, 7 x 7 per region


def test_given_proposals_skip_selective_search(tmp_path):
    model = small_model(tmp_path).eval()
    with torch.no_grad():
        model(batch()[0][:1], proposals=[torch.tensor([[10.0, 10.0, 60.0, 70.0]])])
    assert model.selective_search.num_computed == 0 and model.selective_search.num_cache_hits == 0
    assert model.num_proposals == 1.0


@pytest.mark.parametrize("layer, stride", [("c3", 8), ("c4", 16)])
def test_roi_op_and_spatial_scale_follow_the_options(tmp_path, layer, stride):
    model = small_model(tmp_path, return_layer=layer, roi_op="align")
    assert model.head.roi_pooler.kind == "align" and model.head.roi_pooler.spatial_scale == 1 / stride


def test_stage_times_and_timed_passes_segment(tmp_path):
    model = small_model(tmp_path).eval()
    images = batch()[0][:1]
    with torch.no_grad():
        model(images)  # fills the cache
        model.stage_timer.enabled = True
        model(images)
    assert set(model.stage_times_ms()) == {"proposals", "backbone", "per_region_head", "nms"}
    assert model.selective_search.num_computed == 2  # the timed pass did not read the cache


def test_nms_threshold_is_settable(tmp_path):
    model = small_model(tmp_path)
    model.set_nms_iou(0.6)
    assert model.nms_thresh == 0.6


def test_shapes_weights_need_the_data(tmp_path):
    model = small_model(tmp_path, weights="shapes")  # no DataModule to take the data from
    with pytest.raises(ValueError, match="data.init_args.root"):
        model.setup("fit")
