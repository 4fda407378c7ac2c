"""Predicted label maps as Pascal VOC palette PNGs, and colour overlays for plots and W&B.

The PNGs have VOC's layout (one indexed PNG per image, pixel value = class, VOC colour map), so
``scripts/evaluate.py semantic --gt <VOC>/SegmentationClass --pred DIR --num-classes K`` scores them
exactly like the ground truth of the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from datamodules.palette import save_palette_png, voc_palette

_COLOURS = np.asarray(voc_palette(256), dtype=np.float32).reshape(256, 3)


def _image_names(dataloader: Any) -> Sequence[str] | None:
    """File stems of a :class:`datamodules.AnnotatedDataset` behind ``dataloader``, in its order."""
    records = getattr(getattr(dataloader, "dataset", None), "records", None)
    return [Path(r.file_name).stem for r in records] if records is not None else None


@torch.no_grad()
def save_semantic_predictions(
    model: nn.Module, dataloader: Iterable[Any], out_dir: str | Path, names: Sequence[str] | None = None
) -> list[Path]:
    """Run ``model`` (``images B x 3 x H x W -> logits B x (K+1) x H x W``) over ``dataloader`` and
    write the arg-max of every image as ``out_dir/<name>.png``.

    The names are ``names`` if given, else the file stems of the loader's
    :class:`datamodules.AnnotatedDataset` (``val_000000``; the loader must not shuffle), else the
    running index ``000000``, ``000001``, ... Predictions have the size of the loaded images, so
    evaluate without a resizing ``eval_augment`` (VOC's images differ in size: ``batch_size: 1``).
    Returns the written paths in loader order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else _image_names(dataloader)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    paths: list[Path] = []
    try:
        for batch in dataloader:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            labels = model(images.to(device)).argmax(1).to(torch.uint8).cpu().numpy()
            for label_map in labels:
                index = len(paths)
                if names is not None and index >= len(names):
                    raise ValueError(f"{len(names)} names for more predicted images")
                name = names[index] if names is not None else f"{index:06d}"
                path = out / f"{name}.png"
                save_palette_png(path, label_map)
                paths.append(path)
    finally:
        model.train(was_training)
    if names is not None and len(paths) != len(names):
        raise ValueError(f"{len(names)} names for {len(paths)} predicted images")
    return paths


def overlay_mask(image: np.ndarray | Tensor, mask: np.ndarray | Tensor, alpha: float = 0.5) -> np.ndarray:
    """Blend the VOC colour of every labelled pixel (class > 0, the 255 border band included) into
    ``image``; background pixels keep the image.

    Args:
        image: H x W x 3 uint8, or a 3 x H x W float tensor in [0, 1] (the DataModules' images).
        mask: H x W class indices.
        alpha: weight of the label colour.

    Returns:
        H x W x 3 uint8 RGB.
    """
    if isinstance(image, Tensor):
        image = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != mask.shape:
        raise ValueError(f"image must be H x W x 3 and mask H x W of the same size, got {image.shape} and {mask.shape}")
    labels = mask.astype(np.int64)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * _COLOURS[labels]
    out = np.where((labels > 0)[..., None], blended, image.astype(np.float32))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
