import pytest
import torch

from models.detection.yolo_v1 import YOLOv1, YOLOv1Head, decode_yolo_output, encode_yolo_targets, yolo_v1_loss

K = 3


def test_encoding_puts_each_box_in_the_cell_of_its_centre():
    boxes = torch.tensor([[0.0, 0.0, 32.0, 64.0]])  # centre (16, 32) of a 128 px image, S = 4: cell (row 1, col 0)
    target = encode_yolo_targets(boxes, torch.tensor([2]), K, 4, (128, 128))
    assert target.shape == (4, 4, 5 + K)
    assert target[..., 4].nonzero().tolist() == [[1, 0]]
    # x, y = offset of the centre in the cell (16 / 32, 0 / 32), sqrt of w and h as fractions of the image
    assert torch.allclose(target[1, 0], torch.tensor([0.5, 0.0, 0.5, 0.5**0.5, 1.0, 0.0, 1.0, 0.0]))
    assert target.sum() == target[1, 0].sum()


def test_round_trip_recovers_boxes_and_labels():
    g = torch.Generator().manual_seed(0)
    # one box per cell of a 7 x 7 grid over a 224 x 160 (h x w) image, random sizes
    cells = torch.randperm(49, generator=g)[:10]
    cx = (cells % 7 + torch.rand(10, generator=g)) * 160 / 7
    cy = (cells // 7 + torch.rand(10, generator=g)) * 224 / 7
    w, h = torch.rand(10, generator=g) * 20 + 4, torch.rand(10, generator=g) * 20 + 4
    boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1).clamp(min=0)
    boxes[:, 2] = boxes[:, 2].clamp(max=160)
    boxes[:, 3] = boxes[:, 3].clamp(max=224)
    labels = torch.randint(1, K + 1, (10,), generator=g)
    decoded = decode_yolo_output(encode_yolo_targets(boxes, labels, K, 7, (224, 160)), K, (224, 160), nms_thresh=1.0)
    order = decoded["boxes"][:, 0].argsort()
    expected = boxes[:, 0].argsort()
    assert torch.allclose(decoded["boxes"][order], boxes[expected], atol=1e-4)
    assert torch.equal(decoded["labels"][order], labels[expected])
    assert torch.allclose(decoded["scores"], torch.ones(10))


def test_a_cell_keeps_its_largest_box():
    boxes = torch.tensor([[10.0, 10.0, 14.0, 14.0], [2.0, 2.0, 22.0, 22.0], [11.0, 11.0, 13.0, 13.0]])  # same centre
    target = encode_yolo_targets(boxes, torch.tensor([1, 2, 3]), K, 4, (128, 128))
    decoded = decode_yolo_output(target, K, (128, 128))
    assert torch.allclose(decoded["boxes"], boxes[1:2])
    assert decoded["labels"].tolist() == [2]


def prediction_from(target: torch.Tensor, boxes_slots: list[torch.Tensor]) -> torch.Tensor:
    """Prediction grid whose B slots hold the given (S x S x 5) tensors, classes from the target."""
    return torch.cat([*boxes_slots, target[..., 5:]], dim=-1)[None]


def test_loss_is_zero_for_a_perfect_prediction_and_uses_the_best_predictor():
    target = encode_yolo_targets(torch.tensor([[20.0, 30.0, 60.0, 90.0]]), torch.tensor([1]), K, 4, (128, 128))
    perfect = target[..., :5]
    wrong = perfect.clone()
    wrong[..., :4] = torch.tensor([0.9, 0.9, 0.1, 0.1]) * target[..., 4:5]  # a tiny box, far from the truth
    wrong[..., 4] = 0.0
    # the perfect box in slot 1: it is responsible (highest IoU), slot 0 only has to keep confidence 0
    losses = yolo_v1_loss(prediction_from(target, [wrong, perfect]), target[None], K)
    assert all(v.abs() < 1e-6 for v in losses.values())
    # swap the confidences: the responsible predictor is pulled to IoU 1, the other pushed to 0
    perfect_low, wrong_high = perfect.clone(), wrong.clone()
    perfect_low[..., 4], wrong_high[..., 4] = 0.0, target[..., 4]
    losses = yolo_v1_loss(prediction_from(target, [wrong_high, perfect_low]), target[None], K)
    assert losses["loss_coord"].abs() < 1e-6 and losses["loss_class"].abs() < 1e-6
    assert torch.allclose(losses["loss_obj"], torch.tensor(1.0))
    assert torch.allclose(losses["loss_noobj"], torch.tensor(0.5))  # lambda_noobj x 1^2


def test_coordinate_loss_uses_square_roots_and_lambda_coord():
    target = encode_yolo_targets(torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([1]), K, 2, (128, 128))
    prediction = prediction_from(target, [target[..., :5].clone()])
    prediction[0, 0, 0, 2] += 0.1  # sqrt(w) off by 0.1
    losses = yolo_v1_loss(prediction, target[None], K)
    assert torch.allclose(losses["loss_coord"], torch.tensor(5.0 * 0.1**2))


@pytest.mark.parametrize("head", ["fc", "conv"])
def test_forward_train_and_eval(head, targets_for):
    torch.manual_seed(0)
    model = YOLOv1(num_classes=K, grid_size=5, head=head)
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 112)]  # resized to 128 x 128, boxes mapped back
    model.train()
    losses = model(images, targets_for(2, empty=(1,)))
    assert set(losses) == {"loss_coord", "loss_obj", "loss_noobj", "loss_class"}
    sum(losses.values()).backward()
    assert model.head.predictor[-1].weight.grad is not None

    model.eval()
    model.stage_timer.enabled = True
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    assert 0 < len(predictions[0]["boxes"]) <= 100
    assert ((predictions[0]["labels"] >= 1) & (predictions[0]["labels"] <= K)).all()
    assert (predictions[1]["boxes"][:, 2] <= 112).all() and (predictions[1]["boxes"][:, 3] <= 96).all()
    assert set(model.stage_times_ms()) == {"backbone", "head", "decode_nms"}


def test_heads_predict_the_grid_from_any_map():
    torch.manual_seed(0)
    features = torch.randn(2, 16, 8, 8)
    for kind in ("fc", "conv"):
        head = YOLOv1Head(16, 16, grid_size=7, num_boxes=2, num_classes=K, channels=8, stride=2, kind=kind)
        out = head(features)
        assert out.shape == (2, 7, 7, 5 * 2 + K)
        assert ((out[..., :10] > 0) & (out[..., :10] < 1)).all()  # sigmoid boxes and confidences
        assert torch.allclose(out[..., 10:].sum(-1), torch.ones(2, 7, 7))  # class probabilities
    with pytest.raises(ValueError, match="kind"):
        YOLOv1Head(16, 16, 7, 2, K, kind="mlp")
