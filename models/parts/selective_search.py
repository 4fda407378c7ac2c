"""Selective Search region proposals (Uijlings et al., IJCV 2013), cached on disk.

R-CNN and Fast R-CNN classify the ~2000 "blobby" regions that Selective Search finds per image (course
slide 21): the image is over-segmented by graph-based segmentation (Felzenszwalb & Huttenlocher 2004),
then neighbouring regions are merged greedily by colour, texture, size and fill similarity; every region
of the hierarchy gives a box. OpenCV-contrib's ``cv2.ximgproc`` implements it in two modes: ``fast``
(Uijlings et al.'s "Selective Search Fast": HSV and Lab colour spaces x 2 segmentation thresholds x 2
similarity combinations) and ``quality`` (more colour spaces, thresholds and similarities: more boxes,
higher recall, ~3x slower).

Selective Search runs on the CPU (~0.08 s per 128 px image in ``fast`` mode here, ~2 s for a VOC image
in the papers), so its boxes are cached on disk, keyed by a hash of the image's pixels and the
algorithm's parameters: every image is segmented once, whichever model, run or epoch asks for it.
:meth:`SelectiveSearch.precompute` fills the cache for a whole split (with a progress bar) before
training. Within a process the boxes are also kept in memory under the same pixel hash, both
orientations at once (a horizontally flipped image's boxes are the mirrored ones), so after an image's
first lookup no epoch reads a file or looks up its mirror again; the proposals are the same as the
disk cache alone gives.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Literal

import cv2
import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

#: Bump when the cached content changes meaning (invalidates every cache entry).
CACHE_VERSION = 1

MISSING_XIMGPROC = (
    "cv2.ximgproc is missing: opencv-contrib-python-headless lost to opencv-python-headless (both install "
    "the same cv2 package, the last one installed wins): reinstall it with "
    "pip install --force-reinstall --no-deps opencv-contrib-python-headless"
)


def require_ximgproc() -> None:
    """Raise a clear ImportError when OpenCV was installed without the contrib modules."""
    if not hasattr(cv2, "ximgproc") or not hasattr(cv2.ximgproc, "segmentation"):
        raise ImportError(MISSING_XIMGPROC)


def _seed_c_rand(seed: int) -> None:
    """OpenCV ranks the hierarchy's regions with C ``rand()`` (Uijlings et al.'s pseudo-random ranking),
    so the order of the boxes, and which ones ``max_proposals`` keeps, changes from call to
    call unless the C library's generator is seeded. The set of boxes does not depend on it."""
    srand = _c_srand()
    if srand is not None:
        srand(seed)


@functools.cache
def _c_srand() -> Any:
    try:
        return ctypes.CDLL(None).srand
    except (OSError, AttributeError, TypeError):  # no C library by that name (Windows): the order stays random
        return None


def image_to_bgr_uint8(image: Tensor) -> np.ndarray:
    """3 x H x W RGB (float in [0, 1] or uint8) -> H x W x 3 BGR uint8, OpenCV's layout.

    In NumPy, not torch: the same float32 clamp, scaling and round-half-to-even (bit-identical bytes, so
    the same cache keys), without waking torch's intra-op threads for a 50k-element image on every lookup
    (which, with the training's threads busy, cost milliseconds)."""
    if image.dtype == torch.uint8:
        pixels = image.detach().cpu().numpy()
    else:
        pixels = image.detach().to("cpu", torch.float32).numpy()
        pixels = np.rint(np.clip(pixels, 0, 1) * np.float32(255)).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(1, 2, 0)[..., ::-1])


def pixel_digest(pixels: np.ndarray) -> str:
    """The cache key of an H x W x 3 BGR uint8 image: SHA-256 of its shape and bytes."""
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """xyxy boxes of an image -> those of its horizontal flip (exact on the integer boxes)."""
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


@functools.lru_cache(maxsize=64)
def _algorithm_key(mode: str, base_k: int, inc_k: int, sigma: float) -> str:
    params = {
        "mode": mode,
        "base_k": base_k,
        "inc_k": inc_k,
        "sigma": sigma,
        "opencv": cv2.__version__,
        "version": CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


class SelectiveSearch:
    """Selective Search boxes of one image, from the disk cache or computed.

    Args:
        mode: ``fast`` or ``quality`` (OpenCV's switchToSelectiveSearchFast / ...Quality).
        max_proposals: boxes kept per image, in Selective Search's ranking (R-CNN: ~2000).
        min_size: boxes narrower or shorter than this many pixels are dropped.
        base_k, inc_k, sigma: the graph segmentation's first threshold k, its increment between the
            strategies, and its Gaussian smoothing (OpenCV's defaults: 150, 150, 0.8).
        cache_dir: folder of the cache; None uses ``~/.cache/cv-course/selective_search`` (models point
            it beside the data: ``<data root>/.cache/selective_search``).
        use_cache: False computes every time and writes nothing.
        num_threads: ``cv2.setNumThreads`` while segmenting (fixed, so runs are reproducible).
        memory_cache_mb: size of the in-memory copy of the cache (boxes of both orientations of every
            image looked up, oldest dropped first); 0 reads the disk cache on every call.

    Attributes:
        num_computed, num_cache_hits: calls that ran Selective Search / that read the cache (this process).
        num_memory_hits: the cache hits answered from memory (no file read, no mirror lookup).
    """

    def __init__(
        self,
        mode: Literal["fast", "quality"] = "fast",
        max_proposals: int = 2000,
        min_size: float = 4.0,
        base_k: int = 150,
        inc_k: int = 150,
        sigma: float = 0.8,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        num_threads: int = 1,
        memory_cache_mb: float = 256.0,
    ) -> None:
        require_ximgproc()
        if mode not in ("fast", "quality"):
            raise ValueError(f"mode must be 'fast' or 'quality', got {mode!r}")
        if max_proposals < 1:
            raise ValueError(f"max_proposals must be >= 1, got {max_proposals}")
        self.mode, self.max_proposals, self.min_size = mode, max_proposals, float(min_size)
        self.base_k, self.inc_k, self.sigma = base_k, inc_k, sigma
        self.cache_dir = (
            Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "cv-course" / "selective_search"
        )
        self.use_cache = use_cache
        self.num_threads = num_threads
        self.num_computed = 0
        self.num_cache_hits = 0
        self.num_memory_hits = 0
        self.memory_cache_bytes = int(memory_cache_mb * 2**20)
        # (algorithm key, pixel digest) -> raw boxes; insertion order = age, for dropping the oldest.
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._memory_size = 0

    # ------------------------------------------------------------------ cache
    def algorithm_key(self) -> str:
        """Digest of what determines the raw boxes: mode, segmentation parameters, OpenCV version.
        (``max_proposals`` and ``min_size`` filter the cached boxes, so changing them reuses the cache.)"""
        return _algorithm_key(self.mode, self.base_k, self.inc_k, self.sigma)

    def cache_path(self, image: Tensor | np.ndarray) -> Path:
        """``<cache_dir>/<algorithm key>/<2 hex>/<hash of the pixels>.npy``."""
        pixels = image if isinstance(image, np.ndarray) else image_to_bgr_uint8(image)
        return self._path(pixel_digest(pixels))

    def _path(self, digest: str) -> Path:
        return self.cache_dir / self.algorithm_key() / digest[:2] / f"{digest}.npy"

    def remember(self, digest: str, boxes: np.ndarray) -> None:
        """Keep ``boxes`` in memory as the raw boxes of the image whose :func:`pixel_digest` is ``digest``."""
        if self.memory_cache_bytes <= 0:
            return
        key = (self.algorithm_key(), digest)
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_size -= old.nbytes
        self._memory[key] = boxes
        self._memory_size += boxes.nbytes
        while self._memory_size > self.memory_cache_bytes and self._memory:
            self._memory_size -= self._memory.pop(next(iter(self._memory))).nbytes

    def clear_memory(self) -> None:
        """Forget the in-memory copy (the disk cache stays)."""
        self._memory.clear()
        self._memory_size = 0

    # ------------------------------------------------------------ proposals
    def compute(self, image: Tensor | np.ndarray) -> np.ndarray:
        """Run Selective Search: unique boxes (N x 4 float32, xyxy pixels) in its ranking order."""
        pixels = image if isinstance(image, np.ndarray) else image_to_bgr_uint8(image)
        cv2.setNumThreads(self.num_threads)
        _seed_c_rand(0)
        search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(pixels)
        if self.mode == "fast":
            search.switchToSelectiveSearchFast(self.base_k, self.inc_k, self.sigma)
        else:
            search.switchToSelectiveSearchQuality(self.base_k, self.inc_k, self.sigma)
        xywh = search.process().reshape(-1, 4)
        self.num_computed += 1
        # The same box comes out of several strategies: keep its first (best-ranked) occurrence.
        _, first = np.unique(xywh, axis=0, return_index=True)
        xywh = xywh[np.sort(first)].astype(np.float32)
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)

    def raw_boxes(self, image: Tensor, use_cache: bool = True) -> np.ndarray:
        """The unfiltered boxes of ``image``: from memory, read from the disk cache, or computed and written
        to it. (The array may be shared with the cache: do not modify it.)"""
        pixels = image_to_bgr_uint8(image)
        if not (self.use_cache and use_cache):
            return self.compute(pixels)
        boxes, _ = self._lookup(pixels)
        return boxes

    def _lookup(self, pixels: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        """The raw boxes of ``pixels`` and the entries it put in memory: ``[(digest, boxes)]`` for the image
        and its mirror, empty when it was in memory already."""
        digest = pixel_digest(pixels)
        boxes = self._memory.get((self.algorithm_key(), digest))
        if boxes is not None:
            self.num_cache_hits += 1
            self.num_memory_hits += 1
            return boxes, []
        mirror = np.ascontiguousarray(pixels[:, ::-1])
        mirror_digest = pixel_digest(mirror)
        boxes = self._from_disk(digest, mirror_digest, pixels.shape[1])
        if boxes is not None:
            self.num_cache_hits += 1
        else:
            boxes = self.compute(pixels)
            path = self._path(digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, boxes)
            os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
        # The mirror resolves as its own lookup would (its own entry if it has one, else these boxes
        # mirrored), so that the flipped image never needs a lookup of its own.
        if mirror_digest == digest:
            entries = [(digest, boxes)]
        else:
            mirrored = _load(self._path(mirror_digest))
            entries = [
                (digest, boxes),
                (mirror_digest, mirrored if mirrored is not None else mirror_boxes(boxes, pixels.shape[1])),
            ]
        for key, value in entries:
            self.remember(key, value)
        return boxes, entries

    def _from_disk(self, digest: str, mirror_digest: str, width: int) -> np.ndarray | None:
        boxes = _load(self._path(digest))
        if boxes is None:
            # A horizontally flipped image gets the flipped boxes of the original, as Fast R-CNN's
            # training flips the proposals with the image (so flip augmentation costs no segmentation).
            mirrored = _load(self._path(mirror_digest))
            if mirrored is not None:
                boxes = mirror_boxes(mirrored, width)
        return boxes

    def __call__(self, image: Tensor, use_cache: bool = True) -> Tensor:
        """Proposals of one image (3 x H x W): float xyxy boxes on its device, at most ``max_proposals``,
        none smaller than ``min_size``."""
        boxes = torch.from_numpy(self.raw_boxes(image, use_cache))
        sizes = boxes[:, 2:] - boxes[:, :2]
        boxes = boxes[(sizes >= self.min_size).all(dim=1)][: self.max_proposals]
        return boxes.to(device=image.device, dtype=image.dtype if image.is_floating_point() else torch.float32)

    # ---------------------------------------------------------- precompute
    def precompute(self, images: Dataset | Iterable[Any], workers: int = 0, desc: str = "selective search") -> int:
        """Fill the cache for every image of ``images`` (a dataset of images or of ``(image, target)``
        pairs) with a progress bar; ``workers`` processes segment in parallel. Returns the number of
        images segmented (those not cached yet)."""
        if not self.use_cache:
            return 0
        loader = DataLoader(_CacheFiller(images, self), batch_size=None, num_workers=workers, collate_fn=_as_is)
        computed = 0
        start = time.perf_counter()
        # the bar is updated by hand: tqdm.auto's bar calls iter() on what it wraps, which would start the
        # loader's workers twice (the first ones segment and write files that the second ones then read)
        with tqdm(desc=desc, total=len(images), unit="img", leave=False) as bar:
            for was_computed, entries in loader:
                computed += int(was_computed)
                for digest, boxes in entries:  # from a worker process: into this one's memory
                    self.remember(digest, boxes)
                bar.update(1)
        if computed:
            seconds = time.perf_counter() - start
            rank_zero_info(
                f"{desc}: {computed} images segmented in {seconds:.1f} s ({seconds / computed:.3f} s/img) "
                f"-> {self.cache_dir}"
            )
        return computed


def _as_is(item: Any) -> Any:
    """The DataLoader's conversion for :class:`_CacheFiller` items: none (the boxes stay NumPy arrays)."""
    return item


def _load(path: Path) -> np.ndarray | None:
    """The cached boxes at ``path``; None if there are none (or the entry is damaged: recomputed)."""
    try:
        return np.load(path)
    except (OSError, ValueError):
        return None


class _CacheFiller(Dataset):
    """Item i: make sure image i's boxes are cached (in a DataLoader worker): whether it computed them, and
    the memory entries it made (sent back to the main process)."""

    def __init__(self, images: Any, search: SelectiveSearch) -> None:
        self.images, self.search = images, search

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[bool, list[tuple[str, np.ndarray]]]:
        item = self.images[index]
        image = item[0] if isinstance(item, (tuple, list)) else item
        before = self.search.num_computed
        _, entries = self.search._lookup(image_to_bgr_uint8(image))
        return self.search.num_computed > before, entries


def cache_dir_beside(root: str | Path | None) -> Path | None:
    """``<root>/.cache/selective_search`` (a DataModule's ``root``): the proposals are kept beside the images."""
    return Path(root) / ".cache" / "selective_search" if root is not None else None


def precompute_for_datamodule(search: SelectiveSearch, datamodule: Any, workers: int = 0) -> int:
    """Cache the proposals of the DataModule's ``train_dataset`` and ``val_dataset`` (those it has).

    Only images as the model will see them hit the cache later (horizontal flips too: the boxes are
    flipped); other random augmentations that change the pixels (colour jitter, crops, scaling) make
    every epoch's images new ones, segmented on the fly.
    """
    computed = 0
    for split in ("train", "val"):
        dataset = getattr(datamodule, f"{split}_dataset", None)
        if dataset is not None:
            computed += search.precompute(dataset, workers, desc=f"selective search ({split})")
    return computed
