import torch

from models.detection.fcos import FCOS
from models.registry import get_model


def _toy_batch(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i in range(n):
        image = torch.rand(3, size, size, generator=g) * 0.2
        image[:, 16:40, 20:44] = 0.9  # one bright square per image
        images.append(image)
        targets.append({"boxes": torch.tensor([[20.0, 16.0, 44.0, 40.0]]), "labels": torch.tensor([1]), "image_id": i})
    return images, targets


def test_registered_as_anchor_free():
    entry = get_model("fcos")
    assert entry.cls is FCOS and entry.family == "anchor_free"


def test_forward_train_returns_losses_and_eval_returns_detections():
    torch.manual_seed(0)
    model = FCOS(num_classes=2, min_size=64, max_size=64)
    images, targets = _toy_batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        preds = model(images)
    assert len(preds) == 2 and set(preds[0]) >= {"boxes", "scores", "labels"}


def test_stage_timer_reports_backbone_head_and_decoding():
    model = FCOS(num_classes=2, min_size=64, max_size=64).eval()
    model.stage_timer.enabled = True
    with torch.no_grad():
        model(_toy_batch(1)[0])
    assert set(model.stage_times_ms()) == {"backbone", "head", "decode_nms"}


def test_locations_sit_at_half_stride_plus_x_times_stride():
    """FCOS Sec. 3.1: location (x, y) of a stride-s level maps to (floor(s/2) + x s, floor(s/2) + y s);
    torchvision's AnchorGenerator (the reference) centres its squares at (x s, y s), sides unchanged."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    from models.detection.fcos import FCOSLocations

    strides = (8, 16, 32)
    images = ImageList(torch.zeros(1, 3, 96, 128), [(96, 128)])
    features = [torch.zeros(1, 4, 96 // s, 128 // s) for s in strides]
    (ours,) = FCOSLocations(strides)(images, features)
    (reference,) = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * 3)(images, features)
    start = 0
    for s in strides:
        h, w = 96 // s, 128 // s
        level, expected = ours[start : start + h * w], reference[start : start + h * w]
        start += h * w
        torch.testing.assert_close(level, expected + s // 2)
        centres = ((level[:, :2] + level[:, 2:]) / 2).reshape(h, w, 2)
        torch.testing.assert_close(centres[..., 0], (s // 2 + torch.arange(w) * s).float().expand(h, w))
        torch.testing.assert_close(centres[..., 1], (s // 2 + torch.arange(h) * s).float()[:, None].expand(h, w))
    assert start == len(ours)
    model = FCOS(num_classes=2, min_size=64, max_size=64)
    assert isinstance(model.detector.anchor_generator, FCOSLocations)


def test_k_sigmoid_classifiers_without_background_and_labels_one_to_k():
    torch.manual_seed(0)
    model = FCOS(num_classes=2, min_size=64, max_size=64)
    head = model.detector.head.classification_head
    assert head.num_classes == 2 and head.cls_logits.out_channels == 2  # one sigmoid per class, no background
    images, targets = _toy_batch()
    targets = [{**t, "labels": torch.tensor([2])} for t in targets]  # the last class, K
    model.train()
    assert all(torch.isfinite(v) for v in model(images, targets).values())
    with torch.no_grad():  # the first sigmoid never fires, the second always: every detection is class K
        head.cls_logits.weight.zero_()
        head.cls_logits.bias.copy_(torch.tensor([-20.0, 20.0]))
    model.eval()
    with torch.no_grad():
        preds = model(images)
    assert all(len(p["labels"]) > 0 and (p["labels"] == 2).all() for p in preds)
