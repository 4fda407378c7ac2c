"""Measuring a trained model: accuracy, GFLOPs and test-time latency, the same way for every model.

Accuracy goes through the model's own ``validation_step`` and ``val_metrics`` (the path of validation in
training, so there is one evaluation code); latency through :func:`metrics.latency.measure_latency`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from metrics.latency import measure_latency


def count_gflops(model: torch.nn.Module, sample: Any) -> float:
    """GFLOPs of one eval forward (torch.utils.flop_counter: convolutions and matmuls, 2 per MAC).
    Work outside the network (Selective Search, NMS) is not counted; its time is in the latency."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(sample)
    return counter.get_total_flops() / 1e9


def single(model: Any, image: torch.Tensor) -> Any:
    """One image as the model's forward takes it (a list for detectors, a batch of one for segmenters)."""
    return [image] if model.task != "semantic" else image.unsqueeze(0)


def evaluate(
    model: Any, loader: Any, device: torch.device, on_batch: Callable[[int, int], None] | None = None
) -> tuple[dict[str, float], Any]:
    """Accuracy on ``loader`` through the model's ``validation_step`` into its ``val_metrics``.

    Returns (metrics, PR curves of the box metric or None); the metrics are reset afterwards.
    """
    model.eval()
    collection = model.val_metrics
    for metric in collection.values():
        metric.reset()
    total = len(loader)
    with torch.inference_mode():
        for i, batch in enumerate(loader):
            model.validation_step(model.transfer_batch_to_device(batch, device, 0), i)
            if on_batch is not None:
                on_batch(i + 1, total)
    results: dict[str, float] = {}
    for metric in collection.values():
        results.update({k: float(v) for k, v in metric.compute().items()})
    box = collection["bbox"] if "bbox" in collection else None
    curves = box.pr_curves() if box is not None and hasattr(box, "pr_curves") else None
    for metric in collection.values():
        metric.reset()
    return results, curves


def eval_loader(dm: Any, limit: int | None) -> Any:
    """The validation loader, or one over its first ``limit`` images (the same images for every model)."""
    loader = dm.val_dataloader()
    if not limit or limit >= len(dm.val_dataset):
        return loader
    from torch.utils.data import DataLoader, Subset

    return DataLoader(
        Subset(dm.val_dataset, range(int(limit))), batch_size=loader.batch_size, collate_fn=loader.collate_fn
    )


def measure_test_latency(model: Any, images: list[torch.Tensor], warmup: int) -> dict[str, float]:
    """Per-image latency over distinct validation images (batch 1) with the model's stage timer on, after
    ``warmup`` untimed calls: median / p90 ms, FPS and ``latency_ms/<stage>`` (mean ms per image)."""
    model.eval()
    out = measure_latency(
        model,
        [single(model, im) for im in images],
        warmup=warmup,
        distinct=True,
        batch_size=1,
        stage_timer=model.stage_timer,
    )
    row = {"latency_ms_median": out["median_ms"], "latency_ms_p90": out["p90_ms"], "fps": out["fps"]}
    row.update({f"latency_ms/{k.split('/', 1)[1]}": v for k, v in out.items() if k.startswith("stage_ms/")})
    return row


def predict_examples(model: Any, images: list[torch.Tensor]) -> list[Any]:
    """Predictions for the example pictures: label maps (semantic) or box / mask dicts on the CPU."""
    with torch.inference_mode():
        if model.task == "semantic":
            return [model(im.unsqueeze(0)).argmax(1)[0].cpu() for im in images]
        return [{k: v.cpu() for k, v in model([im])[0].items() if torch.is_tensor(v)} for im in images]
