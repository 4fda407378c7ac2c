"""The contract every registered model keeps (models/registry.py), checked for each entry of ``list_models()``:
a newly registered model is covered with no edit here, a removed one drops out.

Per model: finite scalar losses with working gradients in train mode on batches with objects, without any, and
mixed; eval outputs of its task's format (models/base.py) in range; the stage timer reporting the stages the
model declares; a fixed batch overfit by a few optimiser steps; detectors' test-time NMS IoU settable (the
comparison's sweep).

Models are built from the registry, ``cls(num_classes=3, **SPECS[name].args)``: no pretraining (every model's
``weights`` defaults to none), nothing read or downloaded, no config or DataModule involved (test_experiments.py
resolves every config), small widths where the class offers them. The data is the toy scene of tests/conftest.py
(a bright box, label 1, and a dark one, label 3, in 128 px images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from models.detection.selective_search_detector import SelectiveSearchDetector
from models.detection.torchvision_detector import TorchvisionDetector
from models.registry import RegisteredModel, list_models

K = 3
MODELS = list_models()
DETECTORS = [m for m in MODELS if m.task != "semantic"]


@dataclass(frozen=True)
class Spec:
    """How a model is built and how its fixed batch is fitted.

    ``steps`` optimiser steps (``optimizer``: ``sgd`` with momentum 0.9, ``adam`` or ``adamw``) on the 2-image toy
    batch must bring the mean of the last 5 losses below ``ratio`` times the mean of the first 5, and the last
    loss below ``ratio`` times the first; the terms in ``also_lower`` must drop too.
    """

    args: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.01
    steps: int = 30
    ratio: float = 0.5
    also_lower: tuple[str, ...] = ()


#: per-model numbers (the strictness of the per-model fits this contract replaced, or stricter); a model without
#: an entry gets the defaults
SPECS: dict[str, Spec] = {
    "sliding_window": Spec(
        args=dict(window_sizes=(32, 48, 64), stride_fraction=0.5, windows_per_image=32),
        optimizer="adamw",
        lr=3e-3,
        ratio=0.1,
    ),
    "rcnn": Spec(args=dict(crop_size=32, representation_size=64), lr=0.02, steps=40),
    "fast_rcnn": Spec(args=dict(representation_size=64), lr=0.02, steps=40),
    "faster_rcnn": Spec(args=dict(rpn_batch_size=64, box_batch_size=32)),
    "ssd": Spec(ratio=0.3),
    "retinanet": Spec(ratio=0.3),
    "yolo_v1": Spec(args=dict(dropout=0.0), lr=0.001, ratio=0.1),
    "cornernet": Spec(ratio=0.1),
    "fcos": Spec(ratio=0.6),
    "fcn": Spec(args=dict(channels=(8, 16, 32, 32, 32)), optimizer="adam", steps=40),
    "unet": Spec(args=dict(channels=(8, 16, 32, 32)), optimizer="adam", steps=40),
    "deeplabv3": Spec(args=dict(aspp_channels=16), optimizer="adam", steps=40),
    "mask_rcnn": Spec(
        args=dict(fpn_channels=16, representation_size=32, mask_head_channels=(16, 16)),
        lr=0.02,
        ratio=0.6,
        also_lower=("loss_mask",),
    ),
}

OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def spec_of(entry: RegisteredModel) -> Spec:
    """The entry's spec, else the default."""
    return SPECS.get(entry.name, Spec())


def build(entry: RegisteredModel, cache_dir: Any) -> Any:
    """The model of ``entry`` with K classes and its spec's arguments (Selective Search caching in ``cache_dir``)."""
    torch.manual_seed(0)
    args = dict(spec_of(entry).args)
    if issubclass(entry.cls, SelectiveSearchDetector):
        args["proposal_cache_dir"] = str(cache_dir)
    return entry.cls(num_classes=K, **args)


@dataclass
class Fitted:
    model: Any
    totals: list[float]
    terms: list[dict[str, float]]


@pytest.fixture(scope="module", params=MODELS, ids=[m.name for m in MODELS])
def entry(request: pytest.FixtureRequest) -> RegisteredModel:
    return request.param


@pytest.fixture(scope="module")
def fitted(entry: RegisteredModel, tmp_path_factory: pytest.TempPathFactory, train_steps, toy_batch) -> Fitted:
    """The entry's model after its spec's steps on the fixed toy batch (both images with objects)."""
    spec = spec_of(entry)
    model = build(entry, tmp_path_factory.mktemp("proposals")).train()
    batch = toy_batch(entry.task)
    optimizer = OPTIMIZERS[spec.optimizer](model.parameters(), lr=spec.lr)
    terms: list[dict[str, float]] = []

    def step_loss() -> torch.Tensor:
        losses = model.compute_losses(batch)
        terms.append({k: v.item() for k, v in losses.items()})
        return sum(losses.values())

    torch.manual_seed(0)
    totals = train_steps(step_loss, optimizer, spec.steps)
    return Fitted(model.eval(), totals, terms)


# ------------------------------------------------------------------ train mode
@pytest.mark.parametrize("empty", [(), (0, 1), (1,)], ids=["objects", "empty", "mixed"])
def test_train_losses_are_finite_scalars_with_gradients(entry, empty, tmp_path, toy_batch):
    model = build(entry, tmp_path).train()
    losses = model.compute_losses(toy_batch(entry.task, empty=empty))
    assert isinstance(losses, dict) and losses, entry.name
    for name, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value), (entry.name, name, value)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), entry.name


# ------------------------------------------------------------------ eval mode
def eval_images(task: str, toy_batch) -> Any:
    """Two toy images, the second cropped to 96 x 112 (semantic: both, as one B x 3 x H x W batch)."""
    first, second = toy_batch("detection")[0]
    if task == "semantic":
        return torch.stack([first, second])[..., :96, :112]
    return [first, second[:, :96, :112]]


def test_eval_outputs_have_the_task_format_in_range(entry, fitted, toy_batch):
    model, images = fitted.model, eval_images(entry.task, toy_batch)
    with torch.no_grad():
        outputs = model(images)
    if entry.task == "semantic":
        assert outputs.shape == (2, model.num_classes + 1, 96, 112) and torch.isfinite(outputs).all(), entry.name
        labels = model.predict_step(images, 0)
        assert labels.shape == (2, 96, 112) and 0 <= labels.min() <= labels.max() <= model.num_classes, entry.name
        return
    assert len(outputs) == len(images)
    for image, out in zip(images, outputs):
        height, width = image.shape[-2:]
        boxes, labels, scores = out["boxes"], out["labels"], out["scores"]
        n = len(boxes)
        assert boxes.shape == (n, 4) and labels.shape == (n,) and scores.shape == (n,), entry.name
        assert torch.isfinite(boxes).all() and (boxes[:, :2] >= 0).all(), entry.name
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all(), entry.name
        assert (boxes[:, 2:] >= boxes[:, :2]).all(), entry.name
        assert labels.dtype == torch.int64 and ((labels >= 1) & (labels <= model.num_classes)).all(), entry.name
        assert ((scores >= 0) & (scores <= 1)).all(), entry.name
        if entry.task == "instance":
            masks = out["masks"]
            assert masks.shape == (n, 1, height, width), entry.name
            assert ((masks >= 0) & (masks <= 1)).all(), entry.name
    assert sum(len(out["boxes"]) for out in outputs) > 0, f"{entry.name}: nothing detected after the fit"


def declared_stages(model: Any) -> set[str]:
    """The stages a model declares as data (:class:`TorchvisionDetector`'s ``timed_modules`` and
    ``timed_method``); other models name their stages in their forward code: empty here."""
    if isinstance(model, TorchvisionDetector):
        return {stage for _, stage in model.timed_modules} | {model.timed_method[2]}
    return set()


def test_eval_forward_reports_the_declared_stages(entry, fitted, toy_batch):
    model, images = fitted.model, eval_images(entry.task, toy_batch)
    model.stage_timer.reset()
    with torch.no_grad():
        model(images)
    assert model.stage_times_ms() == {}, f"{entry.name}: timed with the timer off"
    model.stage_timer.enabled = True
    try:
        with torch.no_grad():
            model(images)
        times = model.stage_times_ms()
    finally:
        model.stage_timer.enabled = False
        model.stage_timer.reset()
    assert times, f"{entry.name}: no stage timed"
    declared = declared_stages(model)
    assert not declared or set(times) == declared, (entry.name, declared, set(times))
    assert all(math.isfinite(ms) and ms >= 0 for ms in times.values()), (entry.name, times)


# ------------------------------------------------------------------ a fixed batch is overfit
def test_a_fixed_batch_is_overfit(entry, fitted):
    spec, totals = spec_of(entry), fitted.totals
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last < spec.ratio * first and totals[-1] < spec.ratio * totals[0], (entry.name, totals)
    for term in spec.also_lower:
        assert sum(t[term] for t in fitted.terms[-5:]) < sum(t[term] for t in fitted.terms[:5]), (entry.name, term)


# ------------------------------------------------------------------ detectors
@pytest.mark.parametrize("entry", DETECTORS, ids=[m.name for m in DETECTORS])
def test_the_test_time_nms_iou_is_settable(entry, tmp_path):
    """The comparison's NMS sweep calls ``set_nms_iou`` on every detector it sweeps."""
    model = build(entry, tmp_path)
    model.set_nms_iou(0.42)
    assert model.nms_thresh == 0.42, entry.name
