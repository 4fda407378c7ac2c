"""Samplers that make training resumable mid-epoch and evaluation exact under DDP.

* :class:`ResumableShuffleSampler` (training): the order of epoch ``e`` is a pure function of
  ``(seed, e)``, so a run resumed from a mid-epoch checkpoint can skip exactly the batches it already
  trained on and continue with the same order; under DDP each rank takes its shard (padded with
  repeats to equal length, as ``DistributedSampler``, so every rank makes the same number of steps).
* :class:`ShardedEvalSampler` (validation / test): rank ``r`` of ``w`` takes images ``r, r + w, ...``
  with no padding, so no image is counted twice when the metrics are gathered (Lightning's default
  ``DistributedSampler`` pads the last batch with repeats, which would bias mIoU and counts).

The DataModule builds both itself (``Trainer(use_distributed_sampler=False)``, the default of
``scripts/train.py``), reading rank and world size from its trainer.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps): distinct inputs give unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x >> 1


class EpochIndex(int):
    """A dataset index that knows its epoch (``int(i)`` is the index; ``i.epoch`` the epoch)."""

    epoch: int

    def __new__(cls, index: int, epoch: int) -> "EpochIndex":
        obj = super().__new__(cls, index)
        obj.epoch = int(epoch)
        return obj

    def __reduce__(self) -> tuple:  # pickled into DataLoader workers
        return (EpochIndex, (int(self), self.epoch))


class ResumableShuffleSampler(Sampler[int]):
    """Shuffled indices, one permutation per epoch from ``(seed, epoch)``, sharded across ranks.

    Args:
        length: dataset size.
        seed: base seed (the run's seed).
        rank, world_size: this process's shard.

    Indices are :class:`EpochIndex` es: ints that also carry the epoch, so the dataset can seed each
    sample's augmentation from ``(seed, epoch, index)``, in any worker, persistent or not.
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.length, self.seed, self.rank, self.world_size = length, int(seed), rank, world_size
        self.epoch = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, samples to skip), used once

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = int(epoch)

    def resume(self, epoch: int, samples_done: int) -> None:
        """Skip the first ``samples_done`` samples of this rank's shard the next time ``epoch`` is iterated
        (a checkpoint taken at the very end of an epoch resumes at the start of the next one)."""
        if samples_done >= len(self):
            epoch, samples_done = epoch + 1, 0
        self.set_epoch(epoch)
        self._resume_at = (int(epoch), int(samples_done))

    def __len__(self) -> int:
        return -(-self.length // self.world_size)

    def indices(self, epoch: int) -> list[int]:
        """This rank's full shard for ``epoch`` (no skipping)."""
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order = torch.randperm(self.length, generator=generator).tolist()
        total = len(self) * self.world_size
        order += order[: total - len(order)]  # pad with repeats so every rank makes the same steps
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        epoch, skip = self.epoch, 0
        if self._resume_at is not None and self._resume_at[0] == epoch:
            skip, self._resume_at = self._resume_at[1], None
        for index in self.indices(epoch)[skip:]:
            yield EpochIndex(index, epoch)


class ShardedEvalSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` in order: every image on exactly one rank, none repeated."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))
