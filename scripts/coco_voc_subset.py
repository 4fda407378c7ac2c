#!/usr/bin/env python
"""Write COCO's VOC-class subset: an instances JSON keeping only the 20 categories that are VOC classes.

    python scripts/coco_voc_subset.py data/coco/annotations/instances_val2017.json \\
        data/coco/annotations/instances_val2017_voc.json

torchvision's FCN / DeepLabv3 weights are trained and scored on this subset (``COCO-val2017-VOC-labels``):
objects of the other 60 categories are background. Every image is kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: COCO category ids of the VOC classes (COCO's spelling: airplane, motorcycle, couch, dining table, ...).
VOC_CATEGORY_IDS = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)


def voc_subset(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` with only the VOC categories and their annotations; returns ``target``."""
    data = json.loads(Path(source).read_text(encoding="utf-8"))
    keep = set(VOC_CATEGORY_IDS)
    data["categories"] = [c for c in data["categories"] if c["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a.get("category_id") in keep]
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data), encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    print(voc_subset(args.source, args.target))


if __name__ == "__main__":
    main()
