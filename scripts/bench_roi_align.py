#!/usr/bin/env python
"""RoIAlign forward + backward on a CPU: torchvision's op against ``models.parts.roi_align``'s separable one.

    python scripts/bench_roi_align.py [--repeats 10]

For each case (feature maps, RoIs, output grid, as Faster R-CNN and Mask R-CNN pool them on the embedded
dataset and at VOC / COCO sizes) both ops run alternately on the same inputs; the script prints the median
milliseconds of each and the ratio (torchvision / separable: above 1, the separable op is faster) and the
largest difference of outputs and gradients. ``roi_align`` uses the separable op only where the map is
small enough for it to win (``SEPARABLE_MAX_MAP_CELLS``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torchvision.ops import roi_align as torchvision_roi_align  # noqa: E402

from models.parts.roi_align import SEPARABLE_MAX_MAP_CELLS, separable_roi_align  # noqa: E402

# (name, images, channels, map height, map width, spatial scale, RoIs per image, output size)
CASES = [
    ("shapes Faster R-CNN c3", 8, 64, 16, 16, 1 / 8, 64, 7),
    ("shapes Mask R-CNN c2 box", 8, 64, 32, 32, 1 / 4, 64, 7),
    ("shapes Mask R-CNN c2 mask", 8, 64, 32, 32, 1 / 4, 16, 14),
    ("VOC 600 px P4", 2, 256, 38, 50, 1 / 16, 128, 7),
    ("COCO 800 px P3", 2, 256, 100, 136, 1 / 8, 128, 7),
]


def random_rois(images: int, per_image: int, height: int, width: int, scale: float, seed: int) -> torch.Tensor:
    """RoIs of 2-12 feature cells (as an FPN's level mapping keeps them), inside the image."""
    g = torch.Generator().manual_seed(seed)
    n = images * per_image
    size = (torch.rand(n, 2, generator=g) * 10 + 2) / scale
    limit = torch.tensor([width, height]) / scale - size
    corner = torch.rand(n, 2, generator=g) * limit.clamp(min=1)
    index = torch.arange(images).repeat_interleave(per_image)[:, None].float()
    return torch.cat([index, corner, corner + size], dim=1)


def time_op(op, features: torch.Tensor, rois: torch.Tensor, size: int, scale: float) -> tuple[float, tuple]:
    features.grad = None
    t0 = time.perf_counter()
    out = op(features, rois, (size, size), scale, 2, False)
    out.backward(torch.ones_like(out))
    return time.perf_counter() - t0, (out.detach(), features.grad.clone())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    print(f"torch threads: {torch.get_num_threads()}; separable op used up to {SEPARABLE_MAX_MAP_CELLS} map cells")
    print(f"{'case':28s} {'cells':>6s} {'torchvision ms':>15s} {'separable ms':>13s} {'ratio':>6s} {'max diff':>9s}")
    for name, images, channels, height, width, scale, per_image, size in CASES:
        features = torch.randn(images, channels, height, width, requires_grad=True)
        rois = random_rois(images, per_image, height, width, scale, seed=0)
        times: dict[str, list[float]] = {"tv": [], "sep": []}
        for _ in range(args.repeats + 1):  # the first round warms up
            t_tv, ref = time_op(torchvision_roi_align, features, rois, size, scale)
            t_sep, ours = time_op(separable_roi_align, features, rois, size, scale)
            times["tv"].append(t_tv)
            times["sep"].append(t_sep)
        diff = max((a - b).abs().max().item() for a, b in zip(ref, ours))
        tv, sep = (statistics.median(times[k][1:]) * 1000 for k in ("tv", "sep"))
        print(f"{name:28s} {height * width:6d} {tv:15.1f} {sep:13.1f} {tv / sep:6.2f} {diff:9.1e}")


if __name__ == "__main__":
    main()
