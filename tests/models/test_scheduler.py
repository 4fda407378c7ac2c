"""The multistep ("1x") learning-rate schedule of TaskModule beside warm-up."""

from __future__ import annotations

import pytest
import torch

from models.base import DetectionModule


class _Tiny(DetectionModule):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = torch.nn.Parameter(torch.zeros(1))


class _FakeTrainer:
    estimated_stepping_batches = 90


def _lrs(model: _Tiny, steps: int) -> list[float]:
    model._trainer = _FakeTrainer()
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_multistep_fractions_of_the_run():
    lrs = _lrs(_Tiny(num_classes=1, lr=0.02, warmup_steps=0, scheduler="multistep"), 90)  # milestones 2/3, 8/9
    assert lrs[0] == pytest.approx(0.02) and lrs[59] == pytest.approx(0.02)
    assert lrs[60] == pytest.approx(0.002) and lrs[79] == pytest.approx(0.002)
    assert lrs[80] == pytest.approx(0.0002) and lrs[89] == pytest.approx(0.0002)


def test_multistep_absolute_steps_after_warmup():
    model = _Tiny(num_classes=1, lr=1.0, warmup_steps=10, scheduler="multistep", milestones=[30, 50], lr_gamma=0.5)
    lrs = _lrs(model, 60)
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.55)
    assert lrs[10] == pytest.approx(1.0) and lrs[29] == pytest.approx(1.0)
    assert lrs[30] == pytest.approx(0.5) and lrs[49] == pytest.approx(0.5) and lrs[50] == pytest.approx(0.25)


def test_unknown_scheduler_is_rejected():
    model = _Tiny(num_classes=1, scheduler="step")
    model._trainer = _FakeTrainer()
    with pytest.raises(ValueError, match="multistep"):
        model.configure_optimizers()
