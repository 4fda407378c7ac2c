"""What R-CNN and Fast R-CNN share: Selective Search proposals as an input, not a network part."""

from __future__ import annotations

from torch import Tensor

from models.base import DetectionModule
from models.parts.selective_search import SelectiveSearch, cache_dir_beside, precompute_for_datamodule


class SelectiveSearchDetector(DetectionModule):
    """Base of the detectors that score external Selective Search proposals (R-CNN, Fast R-CNN).

    Subclasses set ``self.selective_search``, ``self.precompute_proposals`` and ``self.proposal_workers``.
    """

    proposals_seen: int = 0
    images_seen: int = 0

    def setup(self, stage: str) -> None:
        """Put the proposal cache beside the data, load ``weights: shapes`` (the base), and precompute the
        training proposals (with a progress bar) so that epochs do not wait on Selective Search."""
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if self.hparams.proposal_cache_dir is None and self.hparams.data_root is None and hasattr(datamodule, "root"):
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
            search: SelectiveSearch = self.selective_search
            return [search(image, use_cache=not self.stage_timer.enabled) for image in images]
