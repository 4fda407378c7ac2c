"""Inference latency: median / 90th percentile per call and throughput."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

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


def measure_latency(
    fn: Callable[..., Any],
    inputs: Any,
    warmup: int = 10,
    repeats: int = 50,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Time ``fn(inputs)`` (``fn(*inputs)`` for a tuple) under ``torch.inference_mode``.

    ``warmup`` untimed calls first (cuDNN autotune, caches); each timed call is bracketed by
    ``torch.cuda.synchronize`` when the inputs live on a GPU, so kernel time is counted.
    Returns ``median_ms``, ``p90_ms`` (per call) and ``fps`` = ``batch_size`` / median seconds
    (``batch_size`` defaults to the first dim of the first tensor input, else 1).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    device = _find_device(inputs)
    call = (lambda: fn(*inputs)) if isinstance(inputs, tuple) else (lambda: fn(inputs))
    if batch_size is None:
        first = inputs[0] if isinstance(inputs, (list, tuple)) and inputs else inputs
        batch_size = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim > 0 else 1
    times = []
    with torch.inference_mode():
        for _ in range(max(0, warmup)):
            call()
        _sync(device)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            call()
            _sync(device)
            times.append(time.perf_counter() - t0)
    arr = np.asarray(times) * 1000.0
    median = float(np.median(arr))
    return {
        "median_ms": median,
        "p90_ms": float(np.percentile(arr, 90)),
        "fps": float(batch_size / (median / 1000.0)) if median > 0 else float("inf"),
    }
