"""Augmentations keep boxes, labels, flags and masks together (hypothesis property test)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamodules.transforms import apply_transform, build_transform


@st.composite
def samples(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = draw(st.integers(16, 72))
    w = draw(st.integers(16, 72))
    n = draw(st.integers(0, 6))
    boxes, masks = [], []
    for _ in range(n):
        x1 = draw(st.integers(0, w - 1))
        y1 = draw(st.integers(0, h - 1))
        x2 = draw(st.integers(x1 + 1, w))
        y2 = draw(st.integers(y1 + 1, h))
        m = np.zeros((h, w), np.uint8)
        m[y1:y2, x1:x2] = 1
        boxes.append((x1, y1, x2, y2))
        masks.append(m)
    image = np.asarray(draw(st.integers(0, 2**31 - 1)) % 255, np.uint8) * np.ones((h, w, 3), np.uint8)
    return image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(masks, np.uint8).reshape(n, h, w)


PIPELINES = st.lists(
    st.sampled_from(
        [
            {"name": "HorizontalFlip", "p": 0.5},
            {"name": "VerticalFlip", "p": 0.5},
            {"name": "RandomScale", "scale_limit": 0.5, "p": 1.0},
            {"name": "RandomCrop", "height": 14, "width": 14, "pad_if_needed": True, "p": 1.0},
            {"name": "RandomCrop", "height": 16, "width": 10, "pad_if_needed": True, "p": 1.0},
            {"name": "CenterCrop", "height": 12, "width": 15, "pad_if_needed": True, "p": 1.0},
            {"name": "Transpose", "p": 0.5},
        ]
    ),
    min_size=1,
    max_size=4,
).filter(lambda p: sum(s["name"] == "RandomScale" for s in p) <= 1)  # each resampling may add 1 px


def tight(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=samples(), pipeline=PIPELINES, seed=st.integers(0, 2**31 - 1))
def test_boxes_follow_their_masks_and_flags_stay_paired(sample, pipeline, seed) -> None:
    image, boxes, masks = sample
    n = len(boxes)
    # identity-carrying fields: label i+1 belongs to object i; flags are functions of i
    idx = np.arange(n)
    fields = {
        "labels": (idx + 1).astype(np.int64),
        "difficult": idx % 2 == 0,
        "iscrowd": idx % 3 == 0,
        "truncated": idx % 5 == 1,
    }
    compose = build_transform(pipeline, seed=seed)
    img, out_boxes, out_fields, out_masks, _ = apply_transform(compose, image, boxes, fields, masks=masks)
    h, w = img.shape[:2]
    k = len(out_boxes)
    assert out_masks.shape == (k, h, w) and out_masks.dtype == np.uint8
    for key in fields:
        assert len(out_fields[key]) == k
    src = out_fields["labels"] - 1
    assert len(set(src.tolist())) == k and (src >= 0).all() and (src < n).all()
    assert np.array_equal(out_fields["difficult"], src % 2 == 0)
    assert np.array_equal(out_fields["iscrowd"], src % 3 == 0)
    assert np.array_equal(out_fields["truncated"], src % 5 == 1)
    for box, mask in zip(out_boxes, out_masks):
        x1, y1, x2, y2 = box.tolist()
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h  # clipped, not degenerate
        if mask.any():
            assert np.allclose(box, tight(mask), atol=1.0), (box, tight(mask), pipeline)
        else:  # nearest-neighbour downscaling can erase a sub-pixel sliver, never more
            assert min(x2 - x1, y2 - y1) <= 1.0, (box, pipeline)
    # an object is only dropped when it really left the image: every surviving mask pixel is owned
    # by a kept box (flip / crop / scale keep rectangle masks rectangles)
    dropped = sorted(set(range(n)) - set(src.tolist()))
    if not any(s["name"] == "RandomScale" for s in pipeline):
        for j in dropped:
            # re-run the same transform on that object alone: its mask must vanish
            solo = build_transform(pipeline, seed=seed)
            _, _, _, m, _ = apply_transform(
                solo, image, boxes[j : j + 1], {"labels": np.array([1])}, masks=masks[j : j + 1]
            )
            assert len(m) == 0


def test_empty_targets_and_semantic_mask_transform() -> None:
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :5] = 200
    sem = np.zeros((10, 20), np.uint8)
    sem[:, :5] = 3
    sem[0, 0] = 255
    flip = build_transform([{"name": "HorizontalFlip", "p": 1.0}])
    img, boxes, fields, masks, out = apply_transform(
        flip,
        image,
        np.zeros((0, 4), np.float32),
        {"labels": np.zeros(0, np.int64)},
        masks=np.zeros((0, 10, 20), np.uint8),
        semantic=sem,
    )
    assert boxes.shape == (0, 4) and masks.shape == (0, 10, 20) and fields["labels"].shape == (0,)
    assert np.array_equal(out, sem[:, ::-1]) and np.array_equal(img, image[:, ::-1])


def test_box_fully_outside_after_crop_is_dropped_with_its_mask() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    boxes = np.array([[0, 0, 4, 4], [12, 12, 20, 20]], np.float32)
    masks = np.zeros((2, 20, 20), np.uint8)
    masks[0, 0:4, 0:4] = 1
    masks[1, 12:20, 12:20] = 1
    crop = build_transform([{"name": "Crop", "x_min": 10, "y_min": 10, "x_max": 20, "y_max": 20}])
    fields = {"labels": np.array([4, 5]), "difficult": np.array([True, False])}
    _, b, f, m, _ = apply_transform(crop, image, boxes, fields, masks=masks)
    assert b.tolist() == [[2.0, 2.0, 10.0, 10.0]] and f["labels"].tolist() == [5] and f["difficult"].tolist() == [False]
    assert m.shape == (1, 10, 10) and int(m.sum()) == 64


def test_partly_outside_box_is_clipped() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    crop = build_transform([{"name": "Crop", "x_min": 5, "y_min": 0, "x_max": 20, "y_max": 20}])
    _, b, f, _, _ = apply_transform(crop, image, np.array([[2, 3, 9, 8]], np.float32), {"labels": np.array([1])})
    assert b.tolist() == [[0.0, 3.0, 4.0, 8.0]] and f["labels"].tolist() == [1]


def test_config_errors_are_clear() -> None:
    assert build_transform(None) is None and build_transform([]) is None
    with pytest.raises(ValueError, match=r"augment\[1\].*'HorizontalFlp'.*HorizontalFlip"):
        build_transform([{"name": "VerticalFlip"}, {"name": "HorizontalFlp"}])
    with pytest.raises(ValueError, match="missing 'name'"):
        build_transform([{"p": 0.5}])
    with pytest.raises(ValueError, match="ToTensorV2 is not allowed"):
        build_transform([{"name": "ToTensorV2"}])
    with pytest.raises(ValueError, match=r"augment\[0\]: could not build RandomScale"):
        build_transform([{"name": "RandomScale", "no_such_arg": 1}])
    nested = build_transform(
        [{"name": "OneOf", "transforms": [{"name": "HorizontalFlip"}, {"name": "VerticalFlip"}], "p": 1.0}]
    )
    assert type(nested.transforms[0]).__name__ == "OneOf"
