#!/usr/bin/env python
"""Benchmark our metrics against torchmetrics, pycocotools and faster-coco-eval in one run.

  python scripts/bench_metrics.py [--images 5000] [--classes 80] [--max-dets 100] [--seg-maps 1000]

Detection: a seeded COCO-val-like case (GT jittered into detections plus random boxes, up to
``--max-dets`` detections per image, crowd GT, tied scores). Every method gets the same data and
is timed end to end from its natural input (torch lists for the torchmetrics classes, in-memory
COCO dicts for the raw COCO APIs) and only its own work is timed: the raw APIs get their private
copies of the dicts (``loadRes`` writes into them) before the clock starts, in the child. Each method
runs in a forked child, so "peak MB" is the growth of the child's peak resident memory over its size
at fork. "max |dAP|" is the largest absolute difference of the 12 COCO numbers from raw pycocotools.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import pickle
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
TM_KEYS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def make_case(n_images: int, n_classes: int, max_dets: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 640, "height": 480} for i in range(n_images)]
    cats = [{"id": c + 1, "name": f"class{c + 1}"} for c in range(n_classes)]
    anns, dts = [], []
    for im in images:
        n_gt = int(rng.integers(0, 15))
        n_det = int(rng.integers(0, max_dets + 1))
        for _ in range(n_gt):
            w, h = float(rng.uniform(4, 300)), float(rng.uniform(4, 250))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            c = int(rng.integers(1, n_classes + 1))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": c,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(rng.random() < 0.01),
                }
            )
            if n_det > 0 and rng.random() < 0.8:
                j = rng.normal(0, 0.08, 4) * [w, h, w, h]
                dts.append(
                    {
                        "image_id": im["id"],
                        "category_id": c,
                        "bbox": [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)],
                        "score": float(np.round(rng.random(), 3)),
                    }
                )
                n_det -= 1
        for _ in range(n_det):
            w, h = float(rng.uniform(4, 300)), float(rng.uniform(4, 250))
            dts.append(
                {
                    "image_id": im["id"],
                    "category_id": int(rng.integers(1, n_classes + 1)),
                    "bbox": [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), w, h],
                    "score": float(np.round(rng.random(), 3)),
                }
            )
    return {"images": images, "categories": cats, "annotations": anns}, dts


def to_torch(gt: dict, dt: list[dict]) -> tuple[list[dict], list[dict]]:
    n = len(gt["images"])
    gi = np.array([a["image_id"] - 1 for a in gt["annotations"]], np.int64)
    gb = np.array([a["bbox"] for a in gt["annotations"]], np.float64).reshape(-1, 4)
    gb[:, 2:] += gb[:, :2]
    gl = np.array([a["category_id"] for a in gt["annotations"]], np.int64)
    gc = np.array([a["iscrowd"] for a in gt["annotations"]], np.int64)
    ga = np.array([a["area"] for a in gt["annotations"]], np.float64)
    di = np.array([d["image_id"] - 1 for d in dt], np.int64)
    db = np.array([d["bbox"] for d in dt], np.float64).reshape(-1, 4)
    db[:, 2:] += db[:, :2]
    dl = np.array([d["category_id"] for d in dt], np.int64)
    ds = np.array([d["score"] for d in dt], np.float64)
    gsplit = np.searchsorted(gi, np.arange(n + 1))
    dsplit = np.searchsorted(di, np.arange(n + 1))
    preds, targets = [], []
    for i in range(n):
        a, b = dsplit[i], dsplit[i + 1]
        preds.append(
            {
                "boxes": torch.from_numpy(db[a:b]),
                "scores": torch.from_numpy(ds[a:b]),
                "labels": torch.from_numpy(dl[a:b]),
            }
        )
        a, b = gsplit[i], gsplit[i + 1]
        targets.append(
            {
                "boxes": torch.from_numpy(gb[a:b]),
                "labels": torch.from_numpy(gl[a:b]),
                "iscrowd": torch.from_numpy(gc[a:b]),
                "area": torch.from_numpy(ga[a:b]),
            }
        )
    return preds, targets


def in_child(fn: Callable[..., Any], setup: Callable[[], Any] | None = None) -> tuple[float, float, Any]:
    """Run ``fn`` in a forked child: (seconds, peak RSS growth in MB, result).

    ``setup()`` (untimed, in the child) builds ``fn``'s argument: torch ops that start the
    intra-op thread pool must not run in the parent before a fork."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            with open("/proc/self/status") as f:
                rss0 = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            arg = setup() if setup is not None else None
            t0 = time.perf_counter()
            res = fn(arg) if setup is not None else fn()
            dt = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            payload = pickle.dumps((dt, max(peak - rss0, 0) / 1024.0, res))
        except BaseException as e:  # report, never hang the parent
            payload = pickle.dumps((float("nan"), float("nan"), repr(e)))
        with os.fdopen(w, "wb") as f:
            f.write(payload)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


def raw_coco(backend: str, case: tuple[dict, list[dict]]) -> list[float]:
    """``COCO`` + ``loadRes`` + ``COCOeval`` on ``case = (gt, dt)``, which it may modify."""
    gt, dt = case
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = gt
        g.createIndex()
        d = g.loadRes(dt)
        ev = COCOeval(g, d, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:12]]


Method = tuple[str, Callable[..., Any], Callable[[], Any] | None]


def detection_methods(gt: dict, dt: list[dict], preds: list, targets: list) -> list[Method]:
    """(name, timed function, untimed setup or None) of every detection method. The raw COCO APIs
    write into their input, so their setup makes private copies; the timed part is the same work
    for every method: from its input to the 12 numbers."""

    def private_copy() -> tuple[dict, list[dict]]:  # untimed setup in the child
        return copy.deepcopy(gt), copy.deepcopy(dt)

    return [
        ("pycocotools COCOeval (raw)", lambda case: raw_coco("pycocotools", case), private_copy),
        ("faster-coco-eval (raw)", lambda case: raw_coco("faster_coco_eval", case), private_copy),
        ("ours DetectionMetrics(coco)", lambda: ours(preds, targets, ("coco",)), None),
        (
            "ours DetectionMetrics(all 4 protocols)",
            lambda: ours(preds, targets, ("lecture", "voc07", "voc", "coco")),
            None,
        ),
        ("torchmetrics MAP backend=faster_coco_eval", lambda: tm_map(preds, targets, "faster_coco_eval"), None),
        ("torchmetrics MAP backend=pycocotools", lambda: tm_map(preds, targets, "pycocotools"), None),
    ]


def batched(preds: list, targets: list, bs: int = 16):
    for i in range(0, len(preds), bs):
        yield preds[i : i + bs], targets[i : i + bs]


def ours(preds: list, targets: list, protocols: tuple[str, ...]) -> list[float]:
    from metrics import DetectionMetrics

    m = DetectionMetrics(protocols=protocols)
    for p, t in batched(preds, targets):
        m.update(p, t)
    out = m.compute()
    return [out[f"coco/{k}"] for k in KEYS]


def tm_map(preds: list, targets: list, backend: str) -> list[float]:
    from torchmetrics.detection import MeanAveragePrecision

    m = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=backend)
    for p, t in batched(preds, targets):
        m.update(p, t)
    with contextlib.redirect_stdout(io.StringIO()):
        out = m.compute()
    return [float(out[k]) for k in TM_KEYS]


def seg_bench(n_maps: int, num_classes: int = 21, size: int = 512, bs: int = 8) -> list[tuple[str, float, float, Any]]:
    from torchmetrics.classification import MulticlassJaccardIndex

    from metrics import SegmentationMetrics

    def make_pool() -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(0)
        pool = []
        for _ in range(8):
            t = torch.randint(0, num_classes, (bs, size, size), generator=g)
            t[:, :, :8] = 255  # a void border
            noise = torch.randint(0, num_classes, (bs, size, size), generator=g)
            keep = torch.rand(bs, size, size, generator=g) < 0.7
            pool.append((torch.where(keep & (t != 255), t, noise), t))
        return pool

    steps = n_maps // bs

    def run_ours(pool: list) -> float:
        m = SegmentationMetrics(num_classes)
        for k in range(steps):
            m.update(*pool[k % len(pool)])
        return m.compute()["mean_iou"]

    def run_tm(pool: list, validate: bool) -> float:
        m = MulticlassJaccardIndex(num_classes, ignore_index=255, average="macro", validate_args=validate)
        for k in range(steps):
            m.update(*pool[k % len(pool)])
        return float(m.compute())

    rows = []
    for name, fn in (
        ("ours SegmentationMetrics", run_ours),
        ("torchmetrics MulticlassJaccardIndex", lambda pool: run_tm(pool, True)),
        ("torchmetrics MulticlassJaccardIndex (validate_args=False)", lambda pool: run_tm(pool, False)),
    ):
        rows.append((name, *in_child(fn, make_pool)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--max-dets", type=int, default=100)
    ap.add_argument("--seg-maps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[], help="method names to skip (substring match)")
    args = ap.parse_args()
    # import everything before forking, so no method pays for imports inside its timing
    import faster_coco_eval  # noqa: F401
    import pycocotools.cocoeval  # noqa: F401
    import torchmetrics.classification  # noqa: F401
    import torchmetrics.detection  # noqa: F401

    import metrics  # noqa: F401

    t0 = time.perf_counter()
    gt, dt = make_case(args.images, args.classes, args.max_dets, args.seed)
    preds, targets = to_torch(gt, dt)
    print(
        f"case: {args.images} images, {args.classes} classes, {len(gt['annotations'])} GT, {len(dt)} detections "
        f"(built in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    methods = detection_methods(gt, dt, preds, targets)
    rows = []
    for name, fn, setup in methods:
        if any(s in name for s in args.skip):
            continue
        sec, mb, res = in_child(fn, setup)
        rows.append((name, sec, mb, res))
        print(f"  {name}: {sec:.2f} s", flush=True)
    ref = next((r[3] for r in rows if r[0].startswith("pycocotools")), None)
    t_of = {r[0]: r[1] for r in rows}
    t_ours = t_of.get("ours DetectionMetrics(coco)")
    print()
    print("| method | seconds | peak MB | max abs dAP vs pycocotools | time / ours(coco) |")
    print("|---|---:|---:|---:|---:|")
    for name, sec, mb, res in rows:
        diff = (
            f"{max(abs(a - b) for a, b in zip(res, ref)):.1e}"
            if isinstance(res, list) and ref is not None
            else str(res)
            if not isinstance(res, list)
            else "n/a"
        )
        ratio = f"{sec / t_ours:.2f}x" if t_ours else "n/a"
        print(f"| {name} | {sec:.2f} | {mb:.0f} | {diff} | {ratio} |")
    if t_ours:
        tp = t_of.get("torchmetrics MAP backend=pycocotools")
        tf = t_of.get("faster-coco-eval (raw)")
        if tp:
            print(
                f"\nspeed-up of ours(coco) over torchmetrics MAP (pycocotools backend): {tp / t_ours:.1f}x "
                "(target >= 5x)"
            )
        if tf:
            print(f"ours(coco) time / raw faster-coco-eval time: {t_ours / tf:.2f} (target <= 1.5)")
    if args.seg_maps > 0:
        print(f"\nsegmentation: {args.seg_maps} label maps 512 x 512, 21 classes, batches of 8")
        seg = seg_bench(args.seg_maps)
        base = seg[0][1]
        miou0 = seg[0][3]
        print("| method | seconds | peak MB | mIoU | |mIoU - ours| | time / ours |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, sec, mb, val in seg:
            print(f"| {name} | {sec:.2f} | {mb:.0f} | {val:.6f} | {abs(val - miou0):.1e} | {sec / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
