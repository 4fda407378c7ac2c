"""The base of the torchvision-composed detectors: one NMS setting, the same stages for our build and torchvision's."""

import pytest
import torch
import torchvision

from models.detection.faster_rcnn import FasterRCNN
from models.detection.fcos import FCOS
from models.detection.retinanet import RetinaNet
from models.detection.ssd import SSD
from models.parts import torchvision_weights as tw
from models.segmentation.mask_rcnn import MaskRCNN

MODELS = [FasterRCNN, RetinaNet, SSD, FCOS, MaskRCNN]


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.registry_name)
def test_nms_iou_is_the_threshold_torchvision_decodes_with(cls):
    model = cls(num_classes=2)
    decoder = model.detector.roi_heads if hasattr(model.detector, "roi_heads") else model.detector
    model.set_nms_iou(0.42)
    assert model.nms_thresh == decoder.nms_thresh == 0.42
    if hasattr(model.detector, "rpn"):
        assert model.detector.rpn.nms_thresh == 0.7  # the proposals' NMS is another setting


def _stages_after_eval(model: torch.nn.Module, size: int) -> set[str]:
    model.eval()
    model.stage_timer.enabled = True
    with torch.no_grad():
        model([torch.rand(3, size, size)])
    return set(model.stage_times_ms())


@pytest.mark.slow
@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.registry_name)
def test_torchvisions_pretrained_network_is_timed_and_run_as_our_own(cls, monkeypatch):
    """``weights: torchvision`` (its network built here with random weights, nothing read): the stages of our build."""

    def build(builder, weights, class_names, trainable_backbone_layers=None, builder_kwargs=None):
        kwargs = {} if builder == "ssd300_vgg16" else {"min_size": 64, "max_size": 64}
        net = torchvision.models.get_model(
            builder, weights=None, weights_backbone=None, num_classes=len(class_names) + 1, **kwargs
        )
        return net, tw.ClassMap(None, len(class_names) + 1)

    monkeypatch.setattr(tw, "build_pretrained", build)
    torch.manual_seed(0)
    ours, adopted = cls(num_classes=2), cls(num_classes=2, weights="torchvision")
    assert not ours.adopted and adopted.adopted
    assert _stages_after_eval(adopted, 64) == _stages_after_eval(ours, 64)
    adopted.set_nms_iou(0.42)
    assert adopted.nms_thresh == 0.42
