import pytest
import torch
from torchvision.ops import box_iou

from models.detection.cornernet import CornerNet, decode_corners, draw_gaussian, encode_corner_targets, gaussian_radius

K = 3


def iou(a: list[float], b: list[float]) -> float:
    return box_iou(torch.tensor([a]), torch.tensor([b])).item()


@pytest.mark.parametrize("height,width", [(10.0, 10.0), (8.0, 30.0), (40.0, 12.0), (3.0, 3.0)])
def test_gaussian_radius_keeps_every_worst_case_at_the_minimum_iou(height, width):
    r = gaussian_radius(torch.tensor(height), torch.tensor(width), 0.3).item()
    box = [0.0, 0.0, width, height]
    cases = {
        "shifted": iou(box, [r, r, width + r, height + r]),
        "shrunk": iou(box, [r, r, width - r, height - r]),
        "grown": iou(box, [-r, -r, width + r, height + r]),
    }
    assert min(cases.values()) == pytest.approx(0.3, abs=1e-4)  # the binding case sits exactly at 0.3
    assert all(v >= 0.3 - 1e-4 for v in cases.values())


def test_gaussian_radius_grows_with_the_box():
    sizes = torch.tensor([4.0, 8.0, 16.0, 32.0])
    radii = gaussian_radius(sizes, sizes)
    assert (radii[1:] > radii[:-1]).all()
    assert torch.allclose(gaussian_radius(sizes * 2, sizes * 2), radii * 2)  # scale-equivariant


def test_draw_gaussian_peaks_at_the_centre_and_keeps_the_maximum():
    heatmap = torch.zeros(2, 9, 11)
    draw_gaussian(heatmap, torch.tensor([[3, 4], [5, 4]]), torch.tensor([2, 0]), torch.tensor([0, 0]))
    assert heatmap[0, 4, 3] == 1 and heatmap[0, 4, 5] == 1
    assert heatmap[1].sum() == 0  # nothing in the other channel
    # radius 2: sigma = 5 / 6; values inside the 5 x 5 window, zero outside it
    sigma = 5 / 6
    assert heatmap[0, 4, 1] == pytest.approx(torch.exp(torch.tensor(-4 / (2 * sigma**2))).item())
    assert heatmap[0, 4, 0] == 0 and heatmap[0, 1, 3] == 0
    assert torch.equal(heatmap[0, :, :5], heatmap[0, :, :5].flip(0))  # symmetric about row 4
    # the radius-0 object adds only its peak; overlapping Gaussians keep the maximum, not the sum
    assert heatmap.max() == 1
    assert heatmap[0, 4, 4] == pytest.approx(torch.exp(torch.tensor(-1 / (2 * sigma**2))).item())


def two_objects() -> list[dict[str, torch.Tensor]]:
    boxes = torch.tensor([[10.0, 12.0, 50.0, 40.0], [60.0, 62.0, 121.0, 110.0], [12.0, 64.0, 30.0, 90.0]])
    return [
        {"boxes": boxes, "labels": torch.tensor([1, 3, 1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


def test_encoded_targets_place_corners_with_offsets():
    encoded = encode_corner_targets(two_objects(), K, (32, 32), stride=4)
    assert encoded["mask"].tolist() == [[True, True, True], [False, False, False]]
    assert encoded["heatmap_tl"][0].eq(1).sum() == 3 and encoded["heatmap_tl"][1].sum() == 0
    # top-left of box 1: (60 / 4, 62 / 4) = (15, 15.5): cell (15, 15), offset (0, 0.5), class channel 2
    assert encoded["heatmap_tl"][0, 2, 15, 15] == 1
    assert encoded["index_tl"][0, 1] == 15 * 32 + 15
    assert torch.allclose(encoded["offset_tl"][0, 1], torch.tensor([0.0, 0.5]))
    # bottom-right of box 1: (121 / 4, 110 / 4) = (30.25, 27.5)
    assert encoded["heatmap_br"][0, 2, 27, 30] == 1
    assert torch.allclose(encoded["offset_br"][0, 1], torch.tensor([0.25, 0.5]))


def perfect_outputs(targets: list[dict[str, torch.Tensor]], size: int = 32, stride: int = 4):
    """Heatmaps, embeddings and offsets that a perfect network would predict."""
    encoded = encode_corner_targets(targets, K, (size, size), stride)
    n = len(targets)
    maps = {}
    for c in ("tl", "br"):
        embedding, offset = torch.zeros(n, 1, size * size), torch.zeros(n, 2, size * size)
        for i in range(n):
            objects = encoded["mask"][i].nonzero().flatten()
            embedding[i, 0, encoded[f"index_{c}"][i, objects]] = 2.0 * objects.float()  # 2 apart per object
            offset[i, :, encoded[f"index_{c}"][i, objects]] = encoded[f"offset_{c}"][i, objects].T
        maps[c] = (encoded[f"heatmap_{c}"], embedding.view(n, 1, size, size), offset.view(n, 2, size, size))
    return maps


def test_decoding_recovers_boxes_from_perfect_maps():
    targets = two_objects()
    maps = perfect_outputs(targets)
    (h_tl, e_tl, o_tl), (h_br, e_br, o_br) = maps["tl"], maps["br"]
    # top 3 corners of each type: the peaks (the Gaussians' shoulders are suppressed by the 3 x 3 max pool)
    detections = decode_corners(h_tl, h_br, e_tl, e_br, o_tl, o_br, stride=4, k=3)
    found = detections[0]
    assert len(found["boxes"]) == 3  # the 9 pairs minus those of other classes, other objects or upside down
    order = found["boxes"][:, 0].argsort()
    assert torch.allclose(found["boxes"][order], targets[0]["boxes"][[0, 2, 1]], atol=1e-5)
    assert found["labels"][order].tolist() == [1, 1, 3]
    assert torch.allclose(found["scores"], torch.ones(3))
    assert len(detections[1]["boxes"]) == 0  # an empty heatmap gives no box


def test_decoding_rejects_pairs_by_embedding_class_and_geometry():
    targets = two_objects()
    (h_tl, e_tl, o_tl), (h_br, e_br, o_br) = perfect_outputs(targets).values()
    # same embedding for every corner: boxes 0 and 2 (both class 1) now also pair with each other's
    # corners where the geometry allows it (top-left of 0 with bottom-right of 2), never across classes
    same = decode_corners(h_tl, h_br, torch.zeros_like(e_tl), torch.zeros_like(e_br), o_tl, o_br, stride=4, k=3)[0]
    assert len(same["boxes"]) == 4
    assert (same["labels"] == 1).sum() == 3
    wide = [10.0, 12.0, 30.0, 90.0]  # top-left of box 0, bottom-right of box 2
    assert any(torch.allclose(b, torch.tensor(wide)) for b in same["boxes"])
    # a threshold below the embedding gap of 2 keeps the true pairs only; above it mixes them
    strict = decode_corners(h_tl, h_br, e_tl, e_br, o_tl, o_br, stride=4, k=3, embedding_threshold=1.9)[0]
    loose = decode_corners(h_tl, h_br, e_tl, e_br, o_tl, o_br, stride=4, k=3, embedding_threshold=4.1)[0]
    assert len(strict["boxes"]) == 3 and len(loose["boxes"]) == 4


@pytest.mark.parametrize(
    "options", [{}, {"corner_pool": False}, {"num_stacks": 2}], ids=["pool", "no_pool", "two_stacks"]
)
def test_forward_train_and_eval(options):
    torch.manual_seed(0)
    model = CornerNet(num_classes=K, channels=(16, 24, 32), **options)
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]
    model.train()
    losses = model(images, two_objects())
    assert set(losses) == {"loss_heatmap", "loss_pull", "loss_push", "loss_offset"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.heads_tl[0].heatmap[-1].weight.grad is not None

    model.eval()
    model.stage_timer.enabled = True
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    for p in predictions:
        assert len(p["boxes"]) <= 100
        assert ((p["labels"] >= 1) & (p["labels"] <= K)).all()
        assert (p["boxes"][:, 2:] >= p["boxes"][:, :2]).all()
    assert (predictions[1]["boxes"][:, 3] <= 96).all()
    assert set(model.stage_times_ms()) == {"backbone", "head", "decode_nms"}
