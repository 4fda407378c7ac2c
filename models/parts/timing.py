"""Per-stage wall-clock timing of a forward pass (proposals, backbone, per-region head, NMS).

The comparison shows where a detector spends its time, as the course does for R-CNN -> Fast R-CNN
-> Faster R-CNN. A model either wraps code in ``with timer.stage("nms"):`` or lets
:meth:`StageTimer.instrument` hook a submodule. Timing is off unless enabled, so training pays nothing.

Whether a stage boundary synchronises the GPU is decided once, when timing is switched on (from the
device passed to :meth:`StageTimer.enable`, else from whether CUDA is in use at that moment), not at
every boundary: ``torch.cuda.is_available()`` goes through NVML once Lightning is imported (tens of
microseconds a call), which would inflate the very latency being measured.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


def _no_sync() -> None:
    return None


def choose_sync(device: torch.device | str | None = None) -> Callable[[], None]:
    """The synchronisation a stage boundary needs on ``device``: ``torch.cuda.synchronize`` for a CUDA
    device, nothing otherwise. ``None`` asks once whether CUDA is available and already in use."""
    if device is not None:
        device = torch.device(device)
        if device.type != "cuda":
            return _no_sync
        return functools.partial(torch.cuda.synchronize, device)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.synchronize
    return _no_sync


class StageTimer:
    """Accumulates milliseconds per named stage while :attr:`enabled`.

    Args:
        device: where the timed model runs; decides the synchronisation at each stage boundary
            (``None``: decided when timing is switched on).
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self._enabled = False
        self._sync: Callable[[], None] = _no_sync
        self.times_ms: dict[str, float] = defaultdict(float)
        self._open: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        if on and not self._enabled:
            self._sync = choose_sync(self.device)
        self._enabled = bool(on)

    def enable(self, device: torch.device | str | None = None) -> None:
        """Switch timing on for a model on ``device`` (the synchronisation is chosen now, once)."""
        if device is not None:
            self.device = device
        self._enabled = False
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def reset(self) -> None:
        self.times_ms = defaultdict(float)
        self._open = {}

    def start(self, name: str) -> None:
        if self._enabled:
            self._sync()
            self._open[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        if self._enabled and name in self._open:
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
