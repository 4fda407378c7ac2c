#!/usr/bin/env python
"""Generate the embedded synthetic "shapes" dataset (Pascal VOC + COCO layouts over the same images).

    python scripts/make_dataset.py --out data/shapes
    python scripts/make_dataset.py --out data/shapes_small --seed 1 --num-train 200 --num-val 50 --size 96 --force

Without ``--force`` an existing dataset whose meta.json matches the arguments is kept as is.
See docs/shapes.md for the contents and the layouts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from datamodules.shapes_generator import (  # noqa: E402
    SHAPES_CLASSES,
    dataset_is_current,
    generate_shapes_dataset,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (a VOC 'year' folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--force", action="store_true", help="regenerate even if the dataset is current")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def summary(out: Path, seconds: float | None) -> str:
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    lines = [
        f"shapes dataset at {out} (generator v{meta['generator_version']}, seed {meta['seed']}, "
        f"{meta['size']}x{meta['size']} px)"
    ]
    stats = meta.get("stats", {})
    width = max(len(c) for c in SHAPES_CLASSES)
    for split, s in stats.items():
        n_img = max(s["images"], 1)
        lines.append(
            f"  {split}: {s['images']} images ({s['empty_images']} empty), {s['objects']} objects "
            f"({s['objects'] / n_img:.2f}/image), truncated {s['truncated']}, occluded {s['occluded']}, "
            f"difficult {s['difficult']}, box long side {s['box_long_side_px']['min']}.."
            f"{s['box_long_side_px']['max']} px ({s['box_long_side_px']['le16']} <= 16 px)"
        )
        for name, count in s["objects_per_class"].items():
            lines.append(f"    {name:<{width}} {count}")
    if seconds is None:
        lines.append("  up to date: nothing generated (use --force to regenerate)")
    else:
        lines.append(f"  generated in {seconds:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.force and dataset_is_current(args.out, args.seed, args.num_train, args.num_val, args.size):
        print(summary(args.out, None))
        return 0
    t0 = time.perf_counter()
    generate_shapes_dataset(
        args.out,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        size=args.size,
        progress=not args.quiet,
    )
    print(summary(args.out, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
