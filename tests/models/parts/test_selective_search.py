import cv2
import numpy as np
import pytest
import torch

from datamodules.shapes_generator import render_image
from models.parts import selective_search
from models.parts.selective_search import SelectiveSearch, cache_dir_beside, image_to_bgr_uint8


def shapes_image(index: int = 1, size: int = 64) -> torch.Tensor:
    """An image of the embedded dataset (rendered in memory), 3 x H x W in [0, 1]."""
    return torch.from_numpy(render_image(0, "train", index, size).image).permute(2, 0, 1).float() / 255


@pytest.fixture
def search(tmp_path) -> SelectiveSearch:
    return SelectiveSearch(cache_dir=tmp_path / "ss")


def test_boxes_are_valid_unique_and_inside_the_image(search):
    image = shapes_image(size=80)[:, :, :72]  # H 80 x W 72: catches swapped axes
    boxes = search(image)
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 5
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 72).all() and (boxes[:, 3] <= 80).all()
    sizes = boxes[:, 2:] - boxes[:, :2]
    assert (sizes >= search.min_size).all()
    assert len(torch.unique(boxes, dim=0)) == len(boxes)


def test_boxes_are_opencv_boxes_converted_to_xyxy(search):
    image = shapes_image()
    raw = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    raw.setBaseImage(image_to_bgr_uint8(image))
    raw.switchToSelectiveSearchFast()
    expected = {(x, y, x + w, y + h) for x, y, w, h in raw.process().tolist()}
    assert {tuple(b) for b in search.compute(image).astype(int).tolist()} == expected


def test_max_proposals_keeps_the_best_ranked(tmp_path):
    image = shapes_image()
    everything = SelectiveSearch(cache_dir=tmp_path)(image)
    five = SelectiveSearch(max_proposals=5, cache_dir=tmp_path)(image)
    assert len(everything) > 5
    assert torch.equal(five, everything[:5])


def test_min_size_drops_small_boxes(tmp_path):
    image = shapes_image()
    boxes = SelectiveSearch(min_size=20, cache_dir=tmp_path)(image)
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 20).all()
    assert len(boxes) < len(SelectiveSearch(min_size=1, cache_dir=tmp_path)(image))


def test_ranking_is_deterministic(search):
    image = shapes_image()
    first, second = search.compute(image), search.compute(image)
    assert np.array_equal(first, second)  # same boxes in the same order, so max_proposals is reproducible


def test_second_call_reads_the_cache(search, monkeypatch):
    image = shapes_image()
    first = search(image)
    assert (search.num_computed, search.num_cache_hits) == (1, 0)
    assert search.cache_path(image).is_file()
    second = search(image)
    assert (search.num_computed, search.num_cache_hits) == (1, 1)
    assert torch.equal(first, second)
    # A new instance (another process, another run) finds it on disk without segmenting.
    fresh = SelectiveSearch(cache_dir=search.cache_dir)
    monkeypatch.setattr(fresh, "compute", lambda *_: pytest.fail("segmented an image that is cached"))
    assert torch.equal(fresh(image), first)


def test_flipped_image_reuses_the_flipped_boxes(search, monkeypatch):
    image = shapes_image(size=80)[:, :, :72]
    boxes = search(image)
    monkeypatch.setattr(search, "compute", lambda *_: pytest.fail("segmented the mirror of a cached image"))
    flipped = search(image.flip(-1))
    assert torch.equal(flipped, torch.stack([72 - boxes[:, 2], boxes[:, 1], 72 - boxes[:, 0], boxes[:, 3]], dim=1))


def test_without_cache_nothing_is_read_or_written(search):
    image = shapes_image()
    search(image, use_cache=False)
    search(image, use_cache=False)
    assert search.num_computed == 2 and search.num_cache_hits == 0
    assert not search.cache_path(image).exists()


def test_cache_key_changes_with_parameters_and_content(tmp_path):
    image = shapes_image()
    key = SelectiveSearch(cache_dir=tmp_path).cache_path(image)
    assert SelectiveSearch(mode="quality", cache_dir=tmp_path).cache_path(image) != key
    assert SelectiveSearch(sigma=0.5, cache_dir=tmp_path).cache_path(image) != key
    assert SelectiveSearch(base_k=100, cache_dir=tmp_path).cache_path(image) != key
    changed = image.clone()
    changed[0, 0, 0] = 1.0 - changed[0, 0, 0]
    assert SelectiveSearch(cache_dir=tmp_path).cache_path(changed) != key
    assert SelectiveSearch(cache_dir=tmp_path).cache_path(shapes_image(2)) != key
    # Filtering is applied to the cached boxes: changing it reuses the entry.
    assert SelectiveSearch(max_proposals=10, min_size=8, cache_dir=tmp_path).cache_path(image) == key


def test_quality_mode_finds_more_boxes(tmp_path):
    image = shapes_image()
    fast, quality = SelectiveSearch("fast", cache_dir=tmp_path), SelectiveSearch("quality", cache_dir=tmp_path)
    assert len(quality(image)) > len(fast(image))


def test_precompute_fills_the_cache_once(search):
    images = [shapes_image(i) for i in range(3)]
    dataset = [(image, {"boxes": torch.zeros(0, 4)}) for image in images]  # (image, target) pairs as a DataModule's
    assert search.precompute(dataset) == 3
    assert all(search.cache_path(image).is_file() for image in images)
    assert search.precompute(dataset) == 0


def test_cache_dir_beside_the_data():
    assert cache_dir_beside("data/shapes").as_posix() == "data/shapes/.cache/selective_search"
    assert cache_dir_beside(None) is None


def test_missing_contrib_modules_give_the_fix(monkeypatch):
    monkeypatch.delattr(selective_search.cv2, "ximgproc")
    with pytest.raises(ImportError, match="pip install --force-reinstall --no-deps opencv-contrib-python-headless"):
        SelectiveSearch()


def test_rejects_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="fast"):
        SelectiveSearch(mode="slow", cache_dir=tmp_path)
