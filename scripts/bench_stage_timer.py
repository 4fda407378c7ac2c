#!/usr/bin/env python
"""What the stage timer costs: test-time latency with stages on vs off, same run, same images.

    python scripts/bench_stage_timer.py [--models fcos faster_rcnn] [--device cuda] [--rounds 5]

Each model (built from its shapes config, random weights) is timed over distinct random images with
``metrics.latency.measure_latency``, alternating rounds with the model's ``StageTimer`` off and on, and the
ratio of the median latencies (on / off) is printed. The comparison's latency is measured with stages on;
it should stay within 3% of the plain forward (ratio <= 1.03).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402


def build_model(run: str, device: str) -> torch.nn.Module:
    """The model of ``experiments/<run>/shapes.yaml`` with random weights (nothing is read or downloaded)."""
    import tempfile

    from comparison.spec import Entry
    from comparison.terminal import model_log
    from comparison.training import build

    entry = Entry(run, Path(f"experiments/{run}/shapes.yaml"), {"model.init_args.weights": None})
    with tempfile.TemporaryDirectory() as tmp, model_log(Path(tmp) / "build.log"):  # Lightning's messages
        cli = build(entry, {}, seed=0, device=device)
    return cli.model.to(device).eval()


def _per_boundary_sync() -> None:
    """The timer's old synchronisation: asks CUDA at every stage boundary (for --legacy)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def bench(
    model: torch.nn.Module, images: list[torch.Tensor], rounds: int, warmup: int, legacy: bool = False
) -> dict[str, float]:
    """Median latency (ms) with the stage timer off, on, and (``legacy``) on with the old per-boundary
    CUDA query, over ``rounds`` alternating rounds."""
    from unittest import mock

    from metrics.latency import measure_latency

    inputs = [[im] if model.task != "semantic" else im.unsqueeze(0) for im in images]
    times: dict[str, list[float]] = {"off": [], "on": [], "legacy": []}
    measure_latency(model, inputs, warmup=warmup, distinct=True, batch_size=1)
    for _ in range(rounds):
        times["off"].append(measure_latency(model, inputs, warmup=0, distinct=True, batch_size=1)["median_ms"])
        times["on"].append(
            measure_latency(model, inputs, warmup=0, distinct=True, batch_size=1, stage_timer=model.stage_timer)[
                "median_ms"
            ]
        )
        if legacy:
            with mock.patch("models.parts.timing.choose_sync", lambda device=None: _per_boundary_sync):
                times["legacy"].append(
                    measure_latency(
                        model, inputs, warmup=0, distinct=True, batch_size=1, stage_timer=model.stage_timer
                    )["median_ms"]
                )
    return {k: statistics.median(v) for k, v in times.items() if v}


def main(argv: list[str] | None = None) -> list[tuple[str, float, float]]:
    """Print and return (model, off ms, on ms) per model."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["fcos", "faster_rcnn"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=10, help="distinct images per round")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--legacy", action="store_true", help="also time the old timer (CUDA asked at every boundary)")
    args = p.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.size, args.size, generator=generator).to(args.device) for _ in range(args.images)]
    results = []
    legacy_cols = f" {'old on ms':>10} {'old/off':>8}" if args.legacy else ""
    print(f"{'model':<14} {'off ms':>9} {'on ms':>9} {'on/off':>7}{legacy_cols}")
    for run in args.models:
        t = bench(build_model(run, args.device), images, args.rounds, args.warmup, args.legacy)
        results.append((run, t["off"], t["on"]))
        extra = f" {t['legacy']:10.2f} {t['legacy'] / t['off']:8.3f}" if "legacy" in t else ""
        print(f"{run:<14} {t['off']:9.2f} {t['on']:9.2f} {t['on'] / t['off']:7.3f}{extra}", flush=True)
    return results


if __name__ == "__main__":
    main()
