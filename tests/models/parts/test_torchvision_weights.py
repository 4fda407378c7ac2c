"""``weights: torchvision``: our modules against torchvision's own builders loading the same weights file.

No download anywhere: each builder's network is made with random weights, its state dict saved in a
temporary torch.hub cache under the exact file name of its weight enum's URL, and then both torchvision's
builder (``weights=COCO_V1``, reading that cache) and our module load it. Outputs (eval) and losses (train,
same seed) must agree; our labels are the DataModule's 1..K, torchvision's the weights' category indices.
"""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from models.parts import torchvision_weights as tw

# random heads score every class about equally: no score threshold, fewer proposals and detections (speed)
_RPN = {"rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 50, "box_detections_per_img": 30}
DETECTORS = {
    "faster_rcnn": ("models.detection.faster_rcnn", "FasterRCNN", {"box_score_thresh": 0.0, **_RPN}),
    "retinanet": ("models.detection.retinanet", "RetinaNet", {"score_thresh": 0.0, "detections_per_img": 30}),
    "ssd": ("models.detection.ssd", "SSD", {"score_thresh": 0.0, "detections_per_img": 30}),
    "fcos": ("models.detection.fcos", "FCOS", {"score_thresh": 0.0, "detections_per_img": 30}),
    "mask_rcnn": ("models.segmentation.mask_rcnn", "MaskRCNN", {"box_score_thresh": 0.0, **_RPN}),
}
SEGMENTERS = {"fcn": ("models.segmentation.fcn", "FCN"), "deeplabv3": ("models.segmentation.deeplabv3", "DeepLabV3")}
# COCO spelling of VOC classes, listed here independently of the module under test
COCO_SPELLING = {
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "tvmonitor": "tv",
}


def _module(registry_name: str) -> type:
    import importlib

    path, cls = (DETECTORS.get(registry_name) or SEGMENTERS[registry_name])[:2]
    return getattr(importlib.import_module(path), cls)


def _random_state_dict(builder: str, seed: int) -> dict[str, torch.Tensor]:
    """The builder's network with random weights and random batch-norm statistics."""
    torch.manual_seed(seed)
    weights = tw.resolve(builder, "DEFAULT")
    kwargs = {"aux_loss": True} if builder in ("fcn_resnet50", "deeplabv3_resnet50") else {}
    net = torchvision.models.get_model(
        builder, weights=None, weights_backbone=None, num_classes=len(weights.meta["categories"]), **kwargs
    )
    state = net.state_dict()
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.uniform_(-0.1, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    return state


@pytest.fixture
def offline(monkeypatch):
    """No network: a download attempt fails as it does offline."""

    def fail(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


@pytest.fixture
def torch_home(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _place(builder: str, seed: int = 0) -> torchvision.models.WeightsEnum:
    weights = tw.resolve(builder, "DEFAULT")
    path = tw.weights_path(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_random_state_dict(builder, seed), path)
    return weights


def _coco_names(weights) -> list[str]:
    """The 80 COCO class names in category-id order, as datamodules.coco labels them 1..80."""
    return [c for c in weights.meta["categories"] if c not in ("__background__", "N/A")]


def _targets(labels: list[list[int]], size: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    out = []
    for lab in labels:
        xy = torch.rand(len(lab), 2, generator=g) * size * 0.5
        wh = 16 + torch.rand(len(lab), 2, generator=g) * size * 0.4
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1)
        masks = torch.zeros(len(lab), size, size, dtype=torch.uint8)
        for i, b in enumerate(boxes.long()):
            masks[i, b[1] : b[3], b[0] : b[2]] = 1
        out.append({"boxes": boxes, "labels": torch.tensor(lab), "masks": masks})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_matches_torchvision_builder_with_the_same_weights(name, torch_home):
    builder = tw.PRETRAINED_BUILDERS[name]
    weights = _place(builder)
    size_kwargs = {} if name == "ssd" else {"min_size": 160, "max_size": 160}
    kwargs = {**size_kwargs, **DETECTORS[name][2]}
    reference = torchvision.models.get_model(builder, weights=weights, **kwargs)  # reads the cached file
    names = _coco_names(weights)
    ours = _module(name)(num_classes=len(names), class_names=names, weights="torchvision", builder_kwargs=kwargs)
    frozen = [m for m in ours.detector.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.detector.modules())
    assert (len(frozen) > 0) == (name != "ssd")  # ResNet-50 detectors freeze batch norm, SSD's VGG16 has none
    assert [p.requires_grad for p in ours.detector.parameters()] == [p.requires_grad for p in reference.parameters()]
    assert any(not p.requires_grad for p in ours.detector.parameters())

    torch.manual_seed(1)
    images = [torch.rand(3, 160, 144), torch.rand(3, 128, 160)]
    category_ids = [[1, 18, 90], [44]]  # COCO category ids = torchvision's label indices
    ours_labels = [[names.index(weights.meta["categories"][c]) + 1 for c in ids] for ids in category_ids]

    ours.eval(), reference.eval()
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    for e, g in zip(expected, got):
        keep = torch.tensor([weights.meta["categories"][int(c)] != "N/A" for c in e["labels"]], dtype=torch.bool)
        assert len(g["boxes"]) == int(keep.sum()) > 0
        torch.testing.assert_close(g["boxes"], e["boxes"][keep], rtol=0, atol=1e-5)
        torch.testing.assert_close(g["scores"], e["scores"][keep], rtol=0, atol=1e-5)
        mapped = torch.tensor([names.index(weights.meta["categories"][int(c)]) + 1 for c in e["labels"][keep]])
        assert torch.equal(g["labels"], mapped)
        if name == "mask_rcnn":
            torch.testing.assert_close(g["masks"], e["masks"][keep], rtol=0, atol=1e-5)

    ours.train(), reference.train()
    torch.manual_seed(7)
    expected_losses = reference(images, _targets(category_ids, 128))
    torch.manual_seed(7)
    got_losses = ours(images, _targets(ours_labels, 128))
    assert set(got_losses) == set(expected_losses)
    for key in expected_losses:
        torch.testing.assert_close(got_losses[key], expected_losses[key], rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEGMENTERS))
def test_segmenter_matches_torchvision_builder_with_the_same_weights(name, torch_home):
    builder = tw.PRETRAINED_BUILDERS[name]
    weights = _place(builder, seed=1)
    reference = torchvision.models.get_model(builder, weights=weights)
    voc = weights.meta["categories"][1:]
    # COCO's VOC subset as datamodules.coco labels it: COCO names, sorted by category id (not VOC's order)
    coco_order = [
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "airplane",
        "bus",
        "train",
        "boat",
        "bird",
        "cat",
        "dog",
        "horse",
        "sheep",
        "cow",
        "bottle",
        "chair",
        "couch",
        "potted plant",
        "dining table",
        "tv",
    ]
    channel = [0] + [next(i for i, v in enumerate(voc, 1) if COCO_SPELLING.get(v, v) == n) for n in coco_order]
    ours = _module(name)(num_classes=20, class_names=coco_order, weights="COCO_WITH_VOC_LABELS_V1")
    torch.manual_seed(2)
    images = torch.rand(2, 3, 96, 112)
    normalized = torchvision.transforms.functional.normalize(images, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    ours.eval(), reference.eval()
    with torch.no_grad():
        expected, got = reference(normalized), ours(images)
    torch.testing.assert_close(got, expected["out"][:, channel], rtol=0, atol=1e-5)

    ours.train(), reference.train()
    masks = torch.randint(0, 21, (2, 96, 112))
    masks[:, :4] = 255
    torch.manual_seed(5)  # the heads' dropout
    expected = reference(normalized)
    ce = torch.nn.functional.cross_entropy
    voc_masks = torch.tensor(channel)[masks.clamp(max=20)].masked_fill(masks == 255, 255)  # our label -> VOC index
    torch.manual_seed(5)
    losses = ours.compute_losses((images, masks))
    torch.testing.assert_close(losses["loss_ce"], ce(expected["out"], voc_masks, ignore_index=255), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        losses["loss_aux"], 0.5 * ce(expected["aux"], voc_masks, ignore_index=255), rtol=0, atol=1e-5
    )


def test_fine_tuning_on_other_classes_replaces_only_the_classifier(torch_home):
    from models.detection.faster_rcnn import FasterRCNN

    weights = _place("fasterrcnn_resnet50_fpn")
    saved = torch.load(tw.weights_path(weights), weights_only=True)
    model = FasterRCNN(
        num_classes=3,
        class_names=["cat", "zebra_crossing", "kite"],
        weights="COCO_V1",
        builder_kwargs={"min_size": 128, "max_size": 128, "box_score_thresh": 0.0},
    )
    state = model.detector.state_dict()
    predictor = model.detector.roi_heads.box_predictor
    assert predictor.cls_score.out_features == 4 and predictor.bbox_pred.out_features == 16
    for key, value in saved.items():
        if key.startswith("roi_heads.box_predictor") or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(state[key], value), key
    model.eval()
    with torch.no_grad():
        [pred] = model([torch.rand(3, 128, 128)])
    assert len(pred["labels"]) > 0 and set(pred["labels"].tolist()) <= {1, 2, 3}


def test_voc_class_names_keep_the_voc_classifier_in_order(torch_home):
    from models.segmentation.deeplabv3 import DeepLabV3

    weights = _place("deeplabv3_resnet50")
    voc = list(weights.meta["categories"][1:])
    model = DeepLabV3(num_classes=20, class_names=voc, weights="torchvision")
    assert model.class_map.index == list(range(1, 21))
    assert model.network.classifier[-1].out_channels == 21


def test_other_weights_names_stay_backbone_weights():
    assert tw.pretrained_weights("fasterrcnn_resnet50_fpn", "IMAGENET1K_V1") is None
    assert tw.pretrained_weights("fasterrcnn_resnet50_fpn", "DEFAULT") is None
    assert tw.pretrained_weights("fasterrcnn_resnet50_fpn", "shapes") is None
    assert tw.pretrained_weights("fasterrcnn_resnet50_fpn", "COCO_V1").name == "COCO_V1"
    assert tw.pretrained_weights("fcn_resnet50", "torchvision").name == "COCO_WITH_VOC_LABELS_V1"
