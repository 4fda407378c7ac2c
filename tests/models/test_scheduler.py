"""TaskModule's optimiser table and its schedules: warm-up, then multistep ("1x"), cosine or constant."""

from __future__ import annotations

import typing

import pytest
import torch

from models.base import OPTIMIZERS, SCHEDULERS, DetectionModule, TaskModule


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


def test_optimizer_table_builds_each_choice_with_its_settings():
    sgd = _Tiny(num_classes=1, optimizer="sgd", lr=0.05, momentum=0.8, weight_decay=1e-3).configure_optimizers()
    settings = {k: sgd["optimizer"].defaults[k] for k in ("lr", "momentum", "weight_decay")}
    assert type(sgd["optimizer"]) is torch.optim.SGD and settings == {"lr": 0.05, "momentum": 0.8, "weight_decay": 1e-3}
    adamw = _Tiny(num_classes=1, optimizer="adamw", lr=1e-3, weight_decay=0.05).configure_optimizers()["optimizer"]
    assert type(adamw) is torch.optim.AdamW and (adamw.defaults["lr"], adamw.defaults["weight_decay"]) == (1e-3, 0.05)


def test_unknown_optimizer_names_the_choices():
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; expected one of sgd, adamw"):
        _Tiny(num_classes=1, optimizer="adam").configure_optimizers()


def test_the_cli_choices_are_the_tables():
    hints = typing.get_type_hints(TaskModule.__init__)
    assert typing.get_args(hints["optimizer"]) == tuple(OPTIMIZERS)
    assert typing.get_args(hints["scheduler"]) == SCHEDULERS
