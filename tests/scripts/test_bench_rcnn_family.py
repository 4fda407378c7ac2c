"""The R-CNN family at the papers' scale (scripts/bench_rcnn_family.py), on one small image and a few boxes.

Structure, counts and FLOPs only: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from datamodules.shapes_generator import render_image
from models.detection.fast_rcnn import truncate_fc_layers, truncated_svd_linear
from models.parts.roi_heads import FastRCNNHead, RoIPooler
from models.parts.selective_search import SelectiveSearch
from scripts.bench_rcnn_family import MODELS, STAGES, generated_images, load_images, paper_scale_table

SMALL = dict(
    min_size=160,
    max_proposals=16,
    rcnn_regions=4,
    rcnn_batch=3,
    rpn_pre_nms=50,
    rpn_proposals=8,
    crop_size=64,
    num_classes=20,
)
KEYS = {
    "model",
    "num_proposals",
    "regions_run",
    *STAGES,
    "total_s",
    "without_proposals_s",
    "gflops",
    "gflops_per_region",
    "published_with_s",
    "published_without_s",
    "scaled",
}


@pytest.fixture(scope="module")
def table():
    image = generated_images(1, width=160, height=120, seed=3, tiles=(2, 2))[0]
    rows, markdown = paper_scale_table([image], **SMALL)
    return image, {r["model"]: r for r in rows}, markdown


def test_rows_for_every_model_with_the_configured_counts(table):
    image, rows, markdown = table
    assert tuple(rows) == MODELS
    for row in rows.values():
        assert KEYS <= set(row)
        assert row["gflops"] > 0
        assert row["total_s"] == pytest.approx(sum(row[k] for k in STAGES))
        assert row["without_proposals_s"] == pytest.approx(row["total_s"] - row["proposal_s"])
    boxes = SelectiveSearch("fast", SMALL["max_proposals"], use_cache=False)(image)
    assert 0 < len(boxes) <= SMALL["max_proposals"]
    for model in ("rcnn", "fast_rcnn", "fast_rcnn_svd"):
        assert rows[model]["num_proposals"] == len(boxes)
    assert rows["rcnn"]["regions_run"] == min(len(boxes), SMALL["rcnn_regions"]) and rows["rcnn"]["scaled"]
    assert rows["fast_rcnn"]["regions_run"] == len(boxes) and not rows["fast_rcnn"]["scaled"]
    assert rows["faster_rcnn"]["num_proposals"] == SMALL["rpn_proposals"]
    assert f"{len(boxes)}, {SMALL['rcnn_regions']} run" in markdown
    for name in ("R-CNN", "Fast R-CNN + SVD", "Faster R-CNN", "random init", "146x", "9.2x"):
        assert name in markdown


def test_rcnn_flops_are_one_warped_region_times_the_region_count(table):
    _, rows, _ = table
    rcnn = rows["rcnn"]
    assert rcnn["gflops"] == pytest.approx(rcnn["gflops_per_region"] * rcnn["num_proposals"])
    # One region: all of VGG16 on a crop (its 1000-way fc8 replaced by 21 scores on fc7 and 84 deltas on pool5).
    vgg = torchvision.models.vgg16(weights=None).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        vgg(torch.zeros(1, 3, SMALL["crop_size"], SMALL["crop_size"]))
    k = SMALL["num_classes"] + 1
    expected = counter.get_total_flops() - 2 * 4096 * 1000 + 2 * 4096 * k + 2 * 25088 * 4 * k
    assert rcnn["gflops_per_region"] * 1e9 == pytest.approx(expected, rel=1e-9)


def test_roi_heads_count_fc6_fc7_per_roi_and_the_svd_row_uses_the_ranks(table):
    _, rows, _ = table
    k = SMALL["num_classes"] + 1
    outputs = 2 * 4096 * (k + 4 * k)
    assert rows["fast_rcnn"]["gflops_per_region"] * 1e9 == pytest.approx(2 * (25088 * 4096 + 4096 * 4096) + outputs)
    svd = 2 * (25088 * 1024 + 1024 * 4096 + 4096 * 256 + 256 * 4096) + outputs
    assert rows["fast_rcnn_svd"]["gflops_per_region"] * 1e9 == pytest.approx(svd)

    # The image's conv5_3 pass is the same in all three: the differences are the heads (and Faster's RPN).
    def image_part(row):
        return row["gflops"] - row["gflops_per_region"] * row["num_proposals"]

    conv = image_part(rows["fast_rcnn"])
    assert conv > 0 and conv == pytest.approx(image_part(rows["fast_rcnn_svd"]))
    faster = rows["faster_rcnn"]
    rpn = faster["gflops"] - conv - faster["gflops_per_region"] * faster["num_proposals"]
    assert rpn > 0  # the RPN's 3 x 3 conv and its two 1 x 1 layers


def test_truncated_svd_is_the_best_low_rank_layer():
    torch.manual_seed(0)
    layer = nn.Linear(12, 8)
    x = torch.randn(5, 12)
    full = truncated_svd_linear(layer, 8)
    assert torch.allclose(full(x), layer(x), atol=1e-5)
    low = truncated_svd_linear(layer, 3)
    assert [m.weight.shape for m in low] == [torch.Size([3, 12]), torch.Size([8, 3])] and low[0].bias is None
    assert torch.equal(low[1].bias, layer.bias)
    product = low[1].weight @ low[0].weight
    singular = torch.linalg.svdvals(layer.weight.detach().double())
    error = torch.linalg.matrix_norm(layer.weight.detach().double() - product.detach().double()) ** 2
    assert error.item() == pytest.approx((singular[3:] ** 2).sum().item(), rel=1e-4)  # Eckart-Young
    with pytest.raises(ValueError):
        truncated_svd_linear(layer, 9)


def test_truncate_fc_layers_compresses_a_fast_rcnn_head_in_place():
    torch.manual_seed(0)
    head = FastRCNNHead(4, 3, RoIPooler(2, 1.0, "pool"), representation_size=16).eval()
    features, boxes = torch.randn(1, 4, 8, 8), [torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 1.0, 7.0, 6.0]])]
    before = head(features, boxes)
    same = truncate_fc_layers(head, fc6_rank=16, fc7_rank=16)
    assert same is head and isinstance(head.fc_layers.fc6, nn.Sequential)
    for a, b in zip(head(features, boxes), before):
        assert torch.allclose(a, b, atol=1e-5)
    small = truncate_fc_layers(FastRCNNHead(4, 3, RoIPooler(2, 1.0, "pool"), 16), fc6_rank=5, fc7_rank=2)
    assert small.fc_layers.fc6[0].out_features == 5 and small.fc_layers.fc7[0].out_features == 2
    assert small(features, boxes)[0].shape == (2, 3)


def test_images_from_a_folder_and_generated(tmp_path):
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "b.png"), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    photo = rng.integers(0, 256, (20, 50, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), photo)
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_images(tmp_path, 5)
    assert [tuple(im.shape) for im in images] == [(3, 20, 50), (3, 30, 40)]
    assert torch.allclose(images[0], torch.from_numpy(photo[..., ::-1].copy()).permute(2, 0, 1).float() / 255)
    assert len(load_images(tmp_path, 1)) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "empty", 1)
    generated = generated_images(2, width=70, height=48, seed=1, tiles=(3, 2))
    assert [tuple(im.shape) for im in generated] == [(3, 48, 70)] * 2
    # a mosaic: the first tile (24 px) is the generator's scene 0 of that size
    scene = torch.from_numpy(render_image(1, "val", 0, size=24).image).permute(2, 0, 1).float() / 255
    assert torch.equal(generated[0][:, :24, :24], scene)
    assert 0.0 <= float(generated[0].min()) and float(generated[0].max()) <= 1.0
    assert not torch.equal(generated[0], generated[1])
