"""Per-stage wall-clock timing of a forward pass (proposals, backbone, per-region head, NMS).

The comparison shows where a detector spends its time, as the course does for R-CNN -> Fast R-CNN
-> Faster R-CNN. A model either wraps code in ``with timer.stage("nms"):`` or lets
:meth:`StageTimer.instrument` hook a submodule. Timing is off unless enabled, so training pays nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class StageTimer:
    """Accumulates milliseconds per named stage while :attr:`enabled`."""

    def __init__(self) -> None:
        self.enabled = False
        self.times_ms: dict[str, float] = defaultdict(float)
        self._open: dict[str, float] = {}

    def reset(self) -> None:
        self.times_ms = defaultdict(float)
        self._open = {}

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def start(self, name: str) -> None:
        if self.enabled:
            self._sync()
            self._open[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        if self.enabled and name in self._open:
            self._sync()
            self.times_ms[name] += (time.perf_counter() - self._open.pop(name)) * 1000.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def instrument(self, module: nn.Module, name: str) -> None:
        """Time every call of ``module`` as stage ``name`` (forward pre/post hooks)."""
        module.register_forward_pre_hook(lambda *_: self.start(name))
        module.register_forward_hook(lambda *_: self.stop(name))


def time_method(timer: StageTimer, obj: object, method: str, name: str) -> None:
    """Time every call of ``obj.method`` as stage ``name`` (for stages that are methods, not modules,
    such as torchvision's ``postprocess_detections``)."""
    original = getattr(obj, method)

    def timed(*args, **kwargs):
        with timer.stage(name):
            return original(*args, **kwargs)

    setattr(obj, method, timed)
