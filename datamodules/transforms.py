"""Augmentations from plain config: a list of ``{"name": <albumentations class>, **kwargs}`` dicts.

``build_transform`` turns the list (as LightningCLI reads it from YAML) into an
``albumentations.Compose`` whose ``BboxParams(format="pascal_voc", clip=True)`` carries the labels,
the per-box flags and the index of each box, so that boxes, labels, flags and instance masks move
together:

* boxes are 0-based continuous xyxy pixels (``pascal_voc`` format in albumentations' terms);
* a box that leaves the image is clipped to it; a box that becomes degenerate (width or height <= 0)
  is dropped together with its label, flags and mask;
* instance masks travel as ``masks`` (nearest-neighbour interpolation), the semantic label map as
  ``mask``. Pad / crop transforms fill masks with ``fill_mask`` (default 0): for semantic maps pass
  ``fill_mask: 255`` to mark padding as "ignore".

Wrappers such as ``OneOf`` / ``SomeOf`` / ``Sequential`` take their children the same way:
``{"name": "OneOf", "transforms": [{"name": "Blur"}, {"name": "GaussNoise"}], "p": 0.3}``.
Images stay uint8 RGB here; the dataset converts to a float tensor in [0, 1] afterwards, so
``ToTensorV2`` and ``Normalize`` are refused (models normalise).
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

import numpy as np

__all__ = ["build_transform", "apply_transform", "LABEL_FIELDS"]

#: per-box fields that albumentations keeps paired with the boxes
LABEL_FIELDS = ("labels", "difficult", "iscrowd", "truncated", "box_index")

_REFUSED = {
    "ToTensorV2": "the dataset converts images to float tensors itself",
    "ToTensor": "the dataset converts images to float tensors itself",
    "Normalize": "images stay in [0, 1]; models normalise",
}


def _build_one(spec: Any, where: str) -> Any:
    import albumentations as A

    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a dict like {{'name': 'HorizontalFlip', 'p': 0.5}}, got {spec!r}")
    if "name" not in spec:
        raise ValueError(f"{where}: missing 'name' (an albumentations class name) in {spec!r}")
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if name in _REFUSED:
        raise ValueError(f"{where}: {name} is not allowed here: {_REFUSED[name]}")
    cls = getattr(A, str(name), None)
    if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform | A.BaseCompose):
        close = difflib.get_close_matches(str(name), [n for n in dir(A) if n[:1].isupper()], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"{where}: unknown albumentations transform {name!r}{hint}")
    if issubclass(cls, A.BaseCompose):
        children = kwargs.pop("transforms", None)
        if not isinstance(children, list):
            raise ValueError(f"{where}: {name} needs 'transforms': a list of transform dicts")
        kwargs["transforms"] = [_build_one(c, f"{where}.transforms[{i}]") for i, c in enumerate(children)]
    else:
        kwargs.setdefault("strict", True)  # unknown keyword arguments are errors, not warnings
    try:
        return cls(**kwargs)
    except Exception as exc:  # bad kwargs: say which entry
        shown = {k: v for k, v in kwargs.items() if k != "strict"}
        raise ValueError(f"{where}: could not build {name}({shown}): {exc}") from exc


def build_transform(specs: Sequence[dict[str, Any]] | None, seed: int | None = None) -> Any | None:
    """``albumentations.Compose`` for ``specs`` (``None`` or an empty list gives ``None``: no-op)."""
    if not specs:
        return None
    import albumentations as A

    if not isinstance(specs, (list, tuple)):
        raise ValueError(f"augment: expected a list of transform dicts, got {specs!r}")
    transforms = [_build_one(s, f"augment[{i}]") for i, s in enumerate(specs)]
    bbox_params = A.BboxParams(
        format="pascal_voc",
        label_fields=list(LABEL_FIELDS),
        clip=True,
        filter_invalid_bboxes=True,
        min_area=0.0,
        min_visibility=0.0,
    )
    return A.Compose(transforms, bbox_params=bbox_params, seed=seed)


def apply_transform(
    transform: Any,
    image: np.ndarray,
    boxes: np.ndarray,
    fields: dict[str, np.ndarray],
    masks: np.ndarray | None = None,
    semantic: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
    """Run ``transform`` on one sample and keep everything paired.

    Args:
        image: H x W x 3 uint8.
        boxes: N x 4 float xyxy (0-based continuous pixels), inside the image.
        fields: per-box arrays (``labels``, ``difficult``, ``iscrowd``, ``truncated``), length N.
        masks: N x H x W uint8 instance masks, or ``None``.
        semantic: H x W uint8 label map, or ``None``.

    Returns ``(image, boxes, fields, masks, semantic)`` after the transform; boxes that became
    degenerate are removed from every output, masks included.
    """
    n = len(boxes)
    data: dict[str, Any] = {
        "image": image,
        "bboxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "box_index": np.arange(n, dtype=np.int64),
    }
    for key in LABEL_FIELDS[:-1]:
        data[key] = np.asarray(fields.get(key, np.zeros(n, dtype=bool)))
    if masks is not None and n > 0:  # albumentations cannot stack an empty list of masks
        data["masks"] = masks
    if semantic is not None:
        data["mask"] = semantic
    out = transform(**data)

    img = np.ascontiguousarray(out["image"])
    new_boxes = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
    keep_idx = np.asarray(out["box_index"], dtype=np.int64).reshape(-1)
    # albumentations round-trips through normalised coordinates: remove the float noise, then make
    # sure nothing degenerate survives (the drop rule is ours, whatever the library version does)
    new_boxes = np.round(new_boxes, 4)
    ok = (new_boxes[:, 2] > new_boxes[:, 0]) & (new_boxes[:, 3] > new_boxes[:, 1])
    new_boxes, keep_idx = new_boxes[ok], keep_idx[ok]
    new_fields = {key: np.asarray(fields[key])[keep_idx] for key in fields}
    new_masks = None
    if masks is not None:
        h, w = img.shape[:2]
        if n > 0:
            new_masks = np.asarray(out["masks"], dtype=np.uint8).reshape(n, h, w)[keep_idx]
        else:
            new_masks = np.zeros((0, h, w), dtype=np.uint8)
    new_sem = np.ascontiguousarray(out["mask"]) if semantic is not None else None
    return img, new_boxes.astype(np.float32), new_fields, new_masks, new_sem
