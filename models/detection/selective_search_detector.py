"""What R-CNN and Fast R-CNN share: Selective Search proposals as an input, not a network part."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from models.base import DetectionModule
from models.parts.selective_search import SelectiveSearch, cache_dir_beside, precompute_for_datamodule


class SelectiveSearchDetector(DetectionModule):
    """Base of the detectors that score external Selective Search proposals (R-CNN Sec. 2.1, Fast R-CNN
    Sec. 2): the search, its cache and precomputation, and the count of proposals scored.

    Args:
        proposal_mode, max_proposals, min_proposal_size: Selective Search
            (:class:`models.parts.selective_search.SelectiveSearch`; the papers: ``quality``, 2000).
        proposal_cache_dir: the cache's folder; None: beside the DataModule's data
            (``<root>/.cache/selective_search``), placed at ``setup``.
        precompute_proposals, proposal_workers: segment the train and val splits before training (into
            the cache), with this many processes.
    """

    def __init__(
        self,
        proposal_mode: Literal["fast", "quality"] = "fast",
        max_proposals: int = 2000,
        min_proposal_size: float = 4.0,
        proposal_cache_dir: str | None = None,
        precompute_proposals: bool = True,
        proposal_workers: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.selective_search = SelectiveSearch(
            proposal_mode, max_proposals, min_proposal_size, cache_dir=proposal_cache_dir
        )
        self.precompute_proposals, self.proposal_workers = precompute_proposals, proposal_workers
        self.proposals_seen, self.images_seen = 0, 0

    def setup(self, stage: str) -> None:
        """Put the proposal cache beside the DataModule's data (unless placed already), load ``weights:
        shapes`` (the base), and precompute the training proposals (with a progress bar) so that epochs do
        not wait on Selective Search."""
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if self.hparams.proposal_cache_dir is None and hasattr(datamodule, "root"):
            self.selective_search.cache_dir = cache_dir_beside(datamodule.root)
        if stage != "fit":
            return
        if self.precompute_proposals and datamodule is not None:
            precompute_for_datamodule(self.selective_search, datamodule, self.proposal_workers)

    @property
    def num_proposals(self) -> float:
        """Mean proposals per image over the evaluated images so far."""
        return self.proposals_seen / max(1, self.images_seen)

    def propose(self, images: list[Tensor]) -> list[Tensor]:
        """Selective Search boxes per image. A timed pass always segments (no cache read), so that the
        ``proposals`` stage shows what a new image costs."""
        with self.stage_timer.stage("proposals"):
            return [self.selective_search(image, use_cache=not self.stage_timer.enabled) for image in images]

    def reset_proposal_count(self) -> None:
        """Start :attr:`num_proposals` afresh (e.g. before an evaluation)."""
        self.proposals_seen = self.images_seen = 0

    def count_proposals(self, proposals: list[Tensor]) -> None:
        """Add the proposals scored for these images to :attr:`num_proposals`."""
        self.proposals_seen += sum(len(p) for p in proposals)
        self.images_seen += len(proposals)
