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


# ------------------------------------------------------------------------------ the in-memory cache
def legacy_bgr_uint8(image: torch.Tensor) -> np.ndarray:
    """The conversion before the NumPy one (torch ops): the cache keys must not change."""
    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(image.cpu().permute(1, 2, 0).numpy()[..., ::-1])


def legacy_raw_boxes(search: SelectiveSearch, image: torch.Tensor) -> np.ndarray:
    """The disk-only lookup before the in-memory cache (own entry, else the mirror's, else computed)."""
    pixels = legacy_bgr_uint8(image)
    path = search.cache_path(pixels)
    if path.is_file():
        return np.load(path)
    mirror = search.cache_path(np.ascontiguousarray(pixels[:, ::-1]))
    if mirror.is_file():
        m, width = np.load(mirror), pixels.shape[1]
        return np.stack([width - m[:, 2], m[:, 1], width - m[:, 0], m[:, 3]], axis=1)
    boxes = search.compute(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, boxes)
    return boxes


def test_image_conversion_is_bit_identical_to_the_torch_one():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 40, 56, generator=generator) * 1.4 - 0.2  # values outside [0, 1] too
    image[0].view(-1)[:256] = (torch.arange(256) + 0.5) / 255  # halves: round half to even in both
    image[1].view(-1)[:256] = torch.arange(256) / 255
    for tensor in (image, image.double(), image.half(), (image.clamp(0, 1) * 255).to(torch.uint8), shapes_image()):
        assert np.array_equal(image_to_bgr_uint8(tensor), legacy_bgr_uint8(tensor)), tensor.dtype


def test_proposals_are_those_of_the_disk_cache_alone(tmp_path):
    """Plain and flipped images, in either order, with and without each other's entry on disk: the same
    boxes, in the same order, as the disk-only lookup gives."""
    reference = SelectiveSearch(cache_dir=tmp_path / "reference", memory_cache_mb=0)
    a, b = shapes_image(1, 80)[:, :, :72], shapes_image(2, 64)
    both = shapes_image(3, 64)
    # both orientations of `both` segmented separately (own entries on disk, not mirrors of each other)
    for directory in ("reference", "new"):
        SelectiveSearch(cache_dir=tmp_path / directory).raw_boxes(both, use_cache=False)
        for img in (both, both.flip(-1)):
            search = SelectiveSearch(cache_dir=tmp_path / directory)
            path = search.cache_path(img)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, search.compute(img))
    new = SelectiveSearch(cache_dir=tmp_path / "new")
    sequence = [a, a.flip(-1), b.flip(-1), b, both, both.flip(-1)] * 2
    for image in sequence:
        expected = torch.from_numpy(legacy_raw_boxes(reference, image))
        expected = expected[((expected[:, 2:] - expected[:, :2]) >= new.min_size).all(dim=1)][: new.max_proposals]
        assert torch.equal(new(image), expected)
    assert new.num_computed == 2  # a and b's flip: the other orientation is the mirror
    assert new.num_memory_hits == len(sequence) - 3  # after the first of a, b's flip and `both`, all from memory
    fresh = SelectiveSearch(cache_dir=tmp_path / "new")  # a new process finds the same on disk
    for image in sequence[:6]:
        assert torch.equal(fresh(image), new(image))


def test_second_lookup_reads_no_file(search, monkeypatch):
    image = shapes_image(size=80)[:, :, :72]
    plain = search(image)
    flipped_reference = torch.stack([72 - plain[:, 2], plain[:, 1], 72 - plain[:, 0], plain[:, 3]], dim=1)

    def no_disk(*args, **kwargs):
        pytest.fail("read the disk cache for an image already looked up")

    monkeypatch.setattr(selective_search, "_load", no_disk)
    monkeypatch.setattr(selective_search.np, "load", no_disk)
    monkeypatch.setattr(search, "compute", no_disk)
    assert torch.equal(search(image), plain)
    assert torch.equal(search(image.flip(-1)), flipped_reference)  # the mirror of the first lookup, no lookup
    assert search.num_memory_hits == 2 and search.num_cache_hits == 2


def test_precompute_in_workers_fills_this_process_memory(search, monkeypatch):
    images = [shapes_image(i) for i in range(3)]
    assert search.precompute([(image, {}) for image in images], workers=1) == 3
    monkeypatch.setattr(selective_search, "_load", lambda *_: pytest.fail("read a file after precompute"))
    for image in images:
        for img in (image, image.flip(-1)):
            boxes = search.raw_boxes(img)
            assert isinstance(boxes, np.ndarray) and boxes.dtype == np.float32
    assert search.num_memory_hits == 6


def test_memory_budget_drops_the_oldest(tmp_path, monkeypatch):
    images = [shapes_image(i) for i in range(4)]
    reference = [SelectiveSearch(cache_dir=tmp_path, memory_cache_mb=0)(image) for image in images]
    one_entry = SelectiveSearch(cache_dir=tmp_path, memory_cache_mb=max(len(b) for b in reference) * 16 / 2**20)
    for _ in range(2):
        for image, expected in zip(images, reference):
            assert torch.equal(one_entry(image), expected)
    assert len(one_entry._memory) == 1 and one_entry._memory_size <= one_entry.memory_cache_bytes
    no_memory = SelectiveSearch(cache_dir=tmp_path, memory_cache_mb=0)
    no_memory(images[0]), no_memory(images[0])
    assert no_memory.num_memory_hits == 0 and no_memory.num_cache_hits == 2 and not no_memory._memory


def test_precompute_starts_the_loader_workers_once(search, monkeypatch):
    """tqdm.auto's bar calls iter() on what it wraps: wrapping the loader started a second set of workers, whose
    lookups found the first set's files and were not counted as segmented (a flaky count of 1 or 2 of 3)."""
    from torch.utils.data import DataLoader

    starts = []
    original = DataLoader.__iter__
    monkeypatch.setattr(DataLoader, "__iter__", lambda self: starts.append(1) or original(self))
    images = [shapes_image(i) for i in range(2)]
    assert search.precompute([(image, {}) for image in images], workers=1) == 2
    assert len(starts) == 1
