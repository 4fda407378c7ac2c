"""Inference latency: median / 90th percentile per call, throughput and, optionally, per-stage times.

One timing loop for the repo: :func:`measure_latency` times one input repeatedly or a sequence of
distinct inputs once each (``distinct=True``: a proposal cache or a repeated input would hide work),
and with a :class:`~models.parts.timing.StageTimer` reports the mean milliseconds of each stage.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["measure_latency"]


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def _find_device(inputs: Any) -> torch.device | None:
    if isinstance(inputs, torch.Tensor):
        return inputs.device
    if isinstance(inputs, dict):
        inputs = list(inputs.values())
    if isinstance(inputs, (list, tuple)):
        for x in inputs:
            d = _find_device(x)
            if d is not None:
                return d
    return None


def _batch_size(inputs: Any) -> int:
    first = inputs[0] if isinstance(inputs, (list, tuple)) and inputs else inputs
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim > 0 else 1


def measure_latency(
    fn: Callable[..., Any],
    inputs: Any,
    warmup: int = 10,
    repeats: int = 50,
    batch_size: int | None = None,
    distinct: bool = False,
    stage_timer: Any = None,
) -> dict[str, float]:
    """Time ``fn(inputs)`` (``fn(*inputs)`` for a tuple) under ``torch.inference_mode``.

    ``warmup`` untimed calls first (cuDNN autotune, caches); each timed call is bracketed by
    ``torch.cuda.synchronize`` when the inputs live on a GPU, so kernel time is counted.
    With ``distinct=True`` ``inputs`` is a sequence of inputs, each timed once (``repeats`` is ignored)
    and warm-up cycles through them. A ``stage_timer`` (with ``enable(device)``, ``disable()``, ``reset()``
    and ``times_ms``) is on during the timed calls only; its stages come back as ``stage_ms/<name>``,
    mean milliseconds per call.
    Returns ``median_ms``, ``p90_ms`` (per call) and ``fps`` = ``batch_size`` / median seconds
    (``batch_size`` defaults to the first dim of the first tensor input, else 1).
    """
    samples = list(inputs) if distinct else [inputs]
    if not samples:
        raise ValueError("distinct=True needs at least one input")
    if not distinct and repeats < 1:
        raise ValueError("repeats must be >= 1")
    timed = samples if distinct else [inputs] * repeats
    device = _find_device(samples[0])

    def call(x: Any) -> Any:
        return fn(*x) if isinstance(x, tuple) else fn(x)

    if batch_size is None:
        batch_size = _batch_size(samples[0])
    times = []
    with torch.inference_mode():
        for i in range(max(0, warmup)):
            call(samples[i % len(samples)])
        _sync(device)
        if stage_timer is not None:
            stage_timer.reset()
            stage_timer.enable(device)
        try:
            for x in timed:
                _sync(device)
                t0 = time.perf_counter()
                call(x)
                _sync(device)
                times.append(time.perf_counter() - t0)
        finally:
            if stage_timer is not None:
                stage_timer.disable()
    arr = np.asarray(times) * 1000.0
    median = float(np.median(arr))
    out = {
        "median_ms": median,
        "p90_ms": float(np.percentile(arr, 90)),
        "fps": float(batch_size / (median / 1000.0)) if median > 0 else float("inf"),
    }
    if stage_timer is not None:
        out.update({f"stage_ms/{name}": total / len(timed) for name, total in stage_timer.times_ms.items()})
        stage_timer.reset()
    return out
