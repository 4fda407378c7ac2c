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


def test_short_fit_lowers_the_loss(train_steps):
    torch.manual_seed(0)
    model = FCOS(num_classes=1, min_size=64, max_size=64)
    images, targets = _toy_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    history = train_steps(lambda: sum(model(images, targets).values()), optimizer, 30)
    assert history[-1] < 0.6 * history[0]
