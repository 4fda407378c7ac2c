"""Checkpoint writes that a crash cannot leave half-done, and whose leftovers the next save removes.

Lightning's default (``TorchCheckpointIO``) writes through an fsspec transaction whose temporary file lies
in the system temp folder: a process killed mid-write (SIGKILL, OOM killer) leaves a partial file of the
checkpoint's size in ``/tmp`` that nothing removes, and on another filesystem the final move is a copy,
not an atomic rename. :class:`AtomicCheckpointIO` writes ``<target>.partial`` beside the target, syncs it
and renames it over the target: the target is always either the old or the new checkpoint, and a later
save into the same folder (a rerun, a resume) deletes any partial file left there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

PARTIAL_SUFFIX = ".partial"


def remove_partial_checkpoints(folder: _PATH) -> list[Path]:
    """Delete the ``*.ckpt.partial`` files a killed save left in ``folder``; returns what was removed."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(f"*.ckpt{PARTIAL_SUFFIX}"):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves go to ``<target>.partial`` beside the target, then an atomic rename.

    Remote paths (``s3://`` ...) keep Lightning's own transaction.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cleaned: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        """Write ``checkpoint`` to ``path`` so that a crash at any point leaves the previous file intact."""
        protocol = get_filesystem(path).protocol
        if storage_options is not None or "file" not in (protocol if isinstance(protocol, tuple) else (protocol,)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent not in self._cleaned:  # leftovers of a killed earlier save into this folder
            remove_partial_checkpoints(target.parent)
            self._cleaned.add(target.parent)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
