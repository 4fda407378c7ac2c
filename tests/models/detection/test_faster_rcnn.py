import pytest
import torch

from models.detection.faster_rcnn import FasterRCNN
from models.parts.pretrain import cache_path

K = 3


def test_course_rpn_example_640_by_480():
    # slides 50-52: a 3 x 640 x 480 image, a stride-32 backbone -> 512 x 20 x 15 features and, for one
    # anchor of fixed size at each point, a 1 x 20 x 15 objectness map (and 4 x 20 x 15 box deltas)
    torch.manual_seed(0)
    model = FasterRCNN(
        num_classes=K,
        backbone="resnet18",
        return_layers=("c5",),
        anchor_sizes=(128,),
        anchor_ratios=(1.0,),
        min_size=480,
        max_size=640,
    ).eval()
    with torch.no_grad():
        images, _ = model.detector.transform([torch.rand(3, 640, 480)])
        assert images.tensors.shape == (1, 3, 640, 480)  # no resize
        features = model.detector.backbone(images.tensors)
        assert features["c5"].shape == (1, 512, 20, 15)
        objectness, deltas = model.detector.rpn.head(list(features.values()))
    assert objectness[0].shape == (1, 1, 20, 15)
    assert deltas[0].shape == (1, 4, 20, 15)


@pytest.mark.parametrize("fpn", [False, True])
def test_forward_train_and_eval(fpn, targets_for):
    torch.manual_seed(0)
    extra = dict(return_layers=("c3", "c4", "c5"), fpn=True, fpn_channels=32, roi_canonical_scale=64) if fpn else {}
    model = FasterRCNN(num_classes=K, **extra)
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    model.train()
    losses = model(images, targets_for(2, empty=(1,)))
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.detector.rpn.head.cls_logits.weight.grad is not None

    model.eval()
    model.stage_timer.enabled = True
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    for p in predictions:
        assert set(p) == {"boxes", "labels", "scores"}
        assert len(p["boxes"]) <= 100
        assert ((p["labels"] >= 1) & (p["labels"] <= K)).all()
        assert (p["boxes"] >= 0).all() and (p["boxes"] <= 128).all()
    assert set(model.stage_times_ms()) == {"backbone", "proposals", "per_region_head", "postprocess"}


def test_rpn_keeps_the_configured_number_of_proposals():
    torch.manual_seed(0)
    model = FasterRCNN(num_classes=K, rpn_post_nms_top_n_test=20, rpn_nms_thresh=1.0).eval()
    with torch.no_grad():
        images, _ = model.detector.transform([torch.rand(3, 128, 128)])
        proposals, _ = model.detector.rpn(images, model.detector.backbone(images.tensors))
    assert proposals[0].shape == (20, 4)


def test_shapes_weights_need_a_datamodule_root_at_fit():
    model = FasterRCNN(num_classes=K, weights="shapes")  # no DataModule to take the data from
    with pytest.raises(ValueError, match="data.init_args.root"):
        model.setup("fit")


def test_shapes_weights_take_the_datamodule_root(tiny_shapes_dataset):
    class Trainer:
        datamodule = type("DM", (), {"root": str(tiny_shapes_dataset)})()

    model = FasterRCNN(num_classes=K, weights="shapes")
    model._trainer = Trainer()
    model.setup("fit")
    saved = torch.load(cache_path(tiny_shapes_dataset, "small_cnn"), weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in model.detector.backbone.body.state_dict().items())


def test_shapes_weights_are_loaded_at_setup_fit(tiny_shapes_dataset):
    class Trainer:
        datamodule = type("DM", (), {"root": str(tiny_shapes_dataset)})()

    model = FasterRCNN(num_classes=K, weights="shapes")
    model._trainer = Trainer()
    model.setup("test")  # testing from a checkpoint never pretrains
    [entry] = model.pretrained_bodies
    assert entry.body is model.detector.backbone.body and not entry.loaded
    model.setup("fit")
    saved = torch.load(cache_path(tiny_shapes_dataset, "small_cnn"), weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in model.detector.backbone.body.state_dict().items())


def test_final_nms_is_the_r_cnn_familys():
    """R-CNN, Fast R-CNN and Faster R-CNN share one per-class NMS IoU (0.3, their released test code)."""
    import inspect

    from models.detection.fast_rcnn import FastRCNN
    from models.detection.rcnn import RCNN

    model = FasterRCNN(num_classes=K)
    family = {inspect.signature(cls.__init__).parameters["nms_thresh"].default for cls in (RCNN, FastRCNN)}
    assert family == {model.detector.roi_heads.nms_thresh} == {0.3}
    model.set_nms_iou(0.6)
    assert model.detector.roi_heads.nms_thresh == 0.6 and model.detector.rpn.nms_thresh == 0.7
