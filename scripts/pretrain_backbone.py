#!/usr/bin/env python
"""Pretrain a backbone on the embedded shapes dataset (``weights: shapes``) and cache it beside the data.

    python scripts/pretrain_backbone.py --data-root data/shapes
    python scripts/pretrain_backbone.py --data-root data/shapes --arch resnet18 --force

Models configured with ``weights: shapes`` run this step themselves on first use; running it beforehand
keeps its time out of the first training run. Prints the cache file, the time the pretraining took and
the crop accuracy on the validation split (K + 1 classes, background included) against chance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from models.parts.backbones import BACKBONES  # noqa: E402
from models.parts.pretrain import PretrainRecipe, pretrain_on_shapes  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-root", type=Path, required=True, help="folder of the generated shapes dataset (has meta.json)"
    )
    p.add_argument("--arch", default="small_cnn", choices=BACKBONES)
    p.add_argument("--channels", type=int, nargs="+", default=None, help="small_cnn stage widths")
    p.add_argument("--epochs", type=int, default=PretrainRecipe.epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="pretrain again even if a cached result exists")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = pretrain_on_shapes(args.data_root, args.arch, args.epochs, args.seed, args.channels, force=args.force)
    print(
        json.dumps(
            {
                "path": str(result.path),
                "cached": result.cached,
                "seconds": round(result.seconds, 1),
                "crop_accuracy": round(result.accuracy, 4),
                "chance": round(result.chance, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
