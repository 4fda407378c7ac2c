import pytest
import torch
import torch.nn.functional as F

from models.detection.sliding_window import SlidingWindow, count_windows, sliding_windows, window_shapes
from models.parts.image_ops import crop_windows
from models.parts.proposals import label_proposals

K = 3


def small_model(**kwargs) -> SlidingWindow:
    torch.manual_seed(0)
    defaults = dict(
        num_classes=K, window_sizes=(16, 32), aspect_ratios=(0.5, 1.0, 2.0), stride_fraction=0.5, image_size=64
    )
    return SlidingWindow(**{**defaults, **kwargs})


def test_window_grid_hand_computed():
    # 32 px squares stepping 16 px in a 64 x 70 (H x W) image: x in {3, 19, 35} (3 px margin each side),
    # y in {0, 16, 32}
    windows = sliding_windows((64, 70), (32,), (1.0,), 0.5)
    assert windows.shape == (9, 4)
    assert sorted({int(x) for x in windows[:, 0]}) == [3, 19, 35]
    assert sorted({int(y) for y in windows[:, 1]}) == [0, 16, 32]
    assert torch.equal(windows[:, 2:] - windows[:, :2], torch.full((9, 2), 32.0))


def test_window_shapes_keep_area_and_ratio():
    for w, h, sx, sy in window_shapes((32,), (0.5, 2.0), 0.25):
        assert w * h == pytest.approx(32 * 32, rel=0.02)  # sides are rounded to whole pixels
        assert (sx, sy) == (round(w / 4), round(h / 4))
    assert [(w, h) for w, h, _, _ in window_shapes((32,), (0.5, 2.0), 0.25)] == [(45, 23), (23, 45)]


@pytest.mark.parametrize(
    "image_size, sizes, ratios, stride",
    [
        ((128, 128), (16, 24, 32, 48, 64, 96), (0.5, 1.0, 2.0), 0.25),
        ((100, 60), (20, 50, 90), (1.0, 3.0), 0.3),
        ((64, 64), (80,), (1.0,), 0.5),
    ],
)
def test_count_formula_matches_the_windows(image_size, sizes, ratios, stride):
    windows = sliding_windows(image_size, sizes, ratios, stride)
    assert count_windows(image_size, sizes, ratios, stride) == len(windows)
    height, width = image_size
    if len(windows):
        assert windows[:, :2].min() >= 0 and windows[:, 2].max() <= width and windows[:, 3].max() <= height


def test_num_windows_grows_with_finer_stride_and_more_ratios():
    coarse = small_model()
    assert coarse.num_windows == count_windows((64, 64), (16, 32), (0.5, 1.0, 2.0), 0.5)
    assert small_model(stride_fraction=0.25).num_windows > coarse.num_windows
    assert small_model(aspect_ratios=(1.0,)).num_windows < coarse.num_windows


def test_crops_equal_manual_crops():
    image = torch.rand(3, 64, 96)
    windows = torch.tensor([[8.0, 16.0, 40.0, 48.0], [10.0, 0.0, 74.0, 64.0], [60.0, 0.0, 92.0, 64.0]])
    crops = crop_windows(image, windows, 32)
    assert crops.shape == (3, 3, 32, 32)
    assert torch.allclose(crops[0], image[:, 16:48, 8:40], atol=1e-6)  # same size: the pixels themselves
    assert torch.allclose(crops[1], F.avg_pool2d(image[:, 0:64, 10:74], 2), atol=1e-6)  # twice: 2 x 2 means
    assert torch.allclose(crops[2], F.avg_pool2d(image[:, 0:64, 60:92], (2, 1)), atol=1e-6)  # tall: warped


def test_windows_are_labelled_with_the_iou_thresholds():
    sampler = small_model().sampler
    gt_boxes, gt_labels = torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([2])
    windows = torch.tensor(
        [[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 20.0, 30.0], [0.0, 0.0, 20.0, 50.0], [30.0, 30.0, 50.0, 50.0]]
    )
    thresholds = (sampler.fg_iou, sampler.bg_iou)
    # IoU: 1, 2/3 -> class 2; 0.4 -> ignored; 0 -> background
    assert label_proposals(windows, gt_boxes, gt_labels, *thresholds).labels.tolist() == [2, 2, -1, 0]
    empty = label_proposals(windows, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), *thresholds)
    assert empty.labels.tolist() == [0, 0, 0, 0]


def test_training_samples_balanced_windows_and_the_ground_truth():
    model = small_model(windows_per_image=8, positive_fraction=0.5).train()
    image = torch.rand(3, 64, 64)
    target = {"boxes": torch.tensor([[0.0, 0.0, 16.0, 16.0]]), "labels": torch.tensor([3])}
    crops = []
    model.classifier.register_forward_hook(lambda m, i, o: crops.append(len(i[0])))
    torch.manual_seed(0)
    samples = model.sampler([model.windows_for(image)], [target])
    torch.manual_seed(0)
    model([image], [target])
    assert crops == [8] and len(samples.boxes[0]) == 8
    assert (samples.labels > 0).sum() <= 4 and (samples.labels == 3).any()  # at most half positive; the object is one
    assert ((samples.labels == 0) | (samples.labels == 3)).all()  # never an ignored window


def test_forward_train_and_eval():
    model = small_model()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 30.0, 20.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier"} and torch.isfinite(losses["loss_classifier"])
    losses["loss_classifier"].backward()
    assert model.classifier.classifier.weight.grad is not None

    model.eval()
    model.stage_timer.enabled = True
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    windows = sliding_windows((64, 64), (16, 32), (0.5, 1.0, 2.0), 0.5)
    for p in predictions:
        assert set(p) == {"boxes", "labels", "scores"}
        assert len(p["boxes"]) <= model.detections_per_img
        assert ((p["labels"] >= 1) & (p["labels"] <= K)).all()
        assert (p["scores"] > model.score_thresh).all()
        # every detection is one of the windows
        assert all((windows == box).all(1).any() for box in p["boxes"])
    assert set(model.stage_times_ms()) == {"crops", "cnn", "nms"}


def test_detect_keeps_one_window_of_a_cluster_per_class():
    model = small_model(score_thresh=0.0, nms_thresh=0.3)
    model.eval()
    with torch.no_grad():
        p = model([torch.rand(3, 64, 64)])[0]
    from torchvision.ops import box_iou

    for k in p["labels"].unique():
        boxes = p["boxes"][p["labels"] == k]
        iou = box_iou(boxes, boxes).fill_diagonal_(0)
        assert (iou <= 0.3 + 1e-6).all()


def test_detection_crops_at_most_crop_batch_windows_at_once(monkeypatch):
    """Memory is bounded by ``crop_batch``, not by the number of windows (thousands on a COCO image), and the
    detections do not depend on the batch."""
    import models.detection.sliding_window as sw

    image = torch.rand(3, 64, 64)
    model = small_model(score_thresh=0.0, crop_batch=7).eval()
    sizes = []
    real = sw.crop_windows

    def spy(img, windows, size):
        sizes.append(len(windows))
        return real(img, windows, size)

    monkeypatch.setattr(sw, "crop_windows", spy)
    with torch.no_grad():
        chunked = model([image])[0]
    assert max(sizes) <= 7 and len(sizes) > 1 and sum(sizes) == len(model.windows_for(image))
    model.crop_batch = 10_000
    with torch.no_grad():
        whole = model([image])[0]
    for key in ("boxes", "labels"):
        assert torch.equal(chunked[key], whole[key])
    torch.testing.assert_close(chunked["scores"], whole["scores"])
