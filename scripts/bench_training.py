#!/usr/bin/env python
"""Training-step throughput of a shapes config under variants, measured side by side (issue 14).

Each variant builds the model, data and trainer through the comparison's training path
(:func:`comparison.training.build`: ``scripts/train.py``'s CLI with the comparison's overrides) and
fits ``--warmup + --steps`` optimiser steps; the steps after the warm-up are timed (data loading
included). Variants alternate, in reversed order every other repeat, so that a shared machine's
drift hits all of them alike; the median of the repeats is printed with its ratio to the first variant
(the baseline), measured in the same run.

    python scripts/bench_training.py --config experiments/yolo_v1/shapes.yaml --variants workers
    python scripts/bench_training.py --config experiments/fast_rcnn/shapes.yaml --variants ss
    python scripts/bench_training.py --config experiments/fcn/shapes.yaml --variants val
    python scripts/bench_training.py --config experiments/faster_rcnn/shapes.yaml --variants roi_align

Variant sets:

* ``workers``: ``data.num_workers`` 2 (persistent, the configs' old setting) vs 0 (batches made in the
  training process);
* ``ss``: the Selective Search lookup as before (hash, file load, a second lookup for flipped images,
  every step) vs the in-memory cache (R-CNN / Fast R-CNN configs);
* ``val``: one (shortened) epoch of ``--warmup + --steps`` batches with the config's validation at its
  end (``check_val_every_n_epoch: 1``, the whole validation split) vs the comparison's
  ``limit_val_batches: 0``; the difference is one validation pass, also printed as a share of the
  config's whole schedule (``max_epochs`` full epochs at the measured step rate, plus
  ``max_epochs // check_val_every_n_epoch`` validation passes);
* ``roi_align``: torchvision's RoIAlign vs ``models.parts.roi_align``'s separable op in training
  (Faster R-CNN, Mask R-CNN; ``scripts/bench_roi_align.py`` times the op alone);
* ``optimizer``: ``model.init_args.optimizer_impl`` for-loop (torch's CPU default) vs foreach vs fused;
* ``channels_last``: the network in NCHW vs NHWC memory order (``model.init_args.channels_last``);
* ``speed``: torch's CPU defaults (for-loop optimiser, NCHW) vs fused + channels_last (the shapes
  configs' setting, ``experiments/_base/shapes.yaml``) vs those with ``trainer.precision: bf16-mixed``
  (bfloat16 autocast: a gain only on GPUs and CPUs with native bfloat16, AVX512_BF16 or AMX);
* ``deterministic``: ``trainer.deterministic`` on (the configs') vs off.

The backbone starts from random weights unless ``--keep-weights`` (the step time does not depend on
them, and ``weights: shapes`` would pretrain first where that is not cached).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402


class StepClock(pl.Callback):
    """Times the training steps after the first ``warmup`` (end of batch ``warmup`` to end of the last)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.steps, self.t0, self.t1 = warmup, 0, None, None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.steps += 1
        now = time.perf_counter()
        if self.steps == self.warmup:
            self.t0 = now
        self.t1 = now

    @property
    def timed_steps(self) -> int:
        return self.steps - self.warmup

    @property
    def steps_per_s(self) -> float:
        return self.timed_steps / (self.t1 - self.t0) if self.t0 is not None and self.t1 > self.t0 else float("nan")


# ------------------------------------------------------------------------ the old Selective Search lookup
def legacy_raw_boxes(self: Any, image: Any, use_cache: bool = True) -> np.ndarray:
    """``SelectiveSearch.raw_boxes`` before the in-memory cache: torch conversion, a hash and a file load per
    call, a second hash and load for a flipped image (the disk cache it reads and writes is the same)."""
    import os

    import torch

    from models.parts.selective_search import _load, mirror_boxes, pixel_digest

    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = np.ascontiguousarray(image.cpu().permute(1, 2, 0).numpy()[..., ::-1])
    if not (self.use_cache and use_cache):
        return self.compute(pixels)
    path = self._path(pixel_digest(pixels))  # the old key: algorithm key re-derived per call (use_legacy_lookup)
    boxes = _load(path)
    if boxes is None:
        mirrored = _load(self._path(pixel_digest(np.ascontiguousarray(pixels[:, ::-1]))))
        if mirrored is not None:
            boxes = mirror_boxes(mirrored, pixels.shape[1])
    if boxes is not None:
        self.num_cache_hits += 1
        return boxes
    boxes = self.compute(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, boxes)
    os.replace(tmp, path)
    return boxes


def _legacy_key(self: Any) -> str:
    """The old per-call algorithm key: JSON and SHA-256 of the parameters on every lookup."""
    import hashlib
    import json

    import cv2

    from models.parts.selective_search import CACHE_VERSION

    params = {
        "mode": self.mode,
        "base_k": self.base_k,
        "inc_k": self.inc_k,
        "sigma": self.sigma,
        "opencv": cv2.__version__,
        "version": CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def use_legacy_lookup(model: Any) -> None:
    search = model.selective_search
    search._legacy_key = types.MethodType(_legacy_key, search)
    search._path = types.MethodType(
        lambda self, digest: self.cache_dir / self._legacy_key() / digest[:2] / f"{digest}.npy", search
    )
    search.raw_boxes = types.MethodType(legacy_raw_boxes, search)


# ------------------------------------------------------------------------------------------ variants
Variant = tuple[str, dict[str, Any], Callable[[Any], None] | None]


def variants(kind: str) -> list[Variant]:
    if kind == "workers":
        return [
            ("num_workers=2", {"data.init_args.num_workers": 2, "data.init_args.persistent_workers": True}, None),
            ("num_workers=0", {"data.init_args.num_workers": 0, "data.init_args.persistent_workers": False}, None),
        ]
    if kind == "ss":
        workers0 = {"data.init_args.num_workers": 0, "data.init_args.persistent_workers": False}
        return [("ss-old", workers0, lambda cli: use_legacy_lookup(cli.model)), ("ss-new", workers0, None)]
    if kind == "val":
        return [
            ("val-every-epoch", {"trainer.limit_val_batches": 1.0, "trainer.check_val_every_n_epoch": 1}, None),
            ("no-val (comparison)", {"trainer.limit_val_batches": 0, "trainer.check_val_every_n_epoch": 1}, None),
        ]
    if kind == "roi_align":
        from models.parts import roi_align

        default = roi_align.SEPARABLE_MAX_MAP_CELLS

        def cells(limit: int) -> Callable[[Any], None]:
            return lambda cli: setattr(roi_align, "SEPARABLE_MAX_MAP_CELLS", limit)

        return [("roi_align-torchvision", {}, cells(0)), ("roi_align-separable", {}, cells(default))]
    if kind == "optimizer":
        return [
            (f"optimizer_impl={impl}", {"model.init_args.optimizer_impl": impl}, None)
            for impl in ("for-loop", "foreach", "fused")
        ]
    if kind == "channels_last":
        return [
            ("NCHW", {"model.init_args.channels_last": False}, None),
            ("channels_last", {"model.init_args.channels_last": True}, None),
        ]
    if kind == "deterministic":
        return [
            ("deterministic", {"trainer.deterministic": True}, None),
            ("not deterministic", {"trainer.deterministic": False}, None),
        ]
    if kind == "speed":  # the levers together, and bf16 autocast (fast only where the CPU has native bfloat16)
        fast = {"model.init_args.optimizer_impl": "fused", "model.init_args.channels_last": True}
        plain = {"model.init_args.optimizer_impl": "for-loop", "model.init_args.channels_last": False}
        return [
            ("for-loop+NCHW", plain, None),
            ("fused+channels_last", fast, None),
            ("fused+cl+bf16-mixed", {**fast, "trainer.precision": "bf16-mixed"}, None),
        ]
    raise SystemExit(f"unknown --variants {kind!r}")


def run_once(
    config: Path,
    overrides: dict[str, Any],
    patch: Callable[[Any], None] | None,
    steps: int,
    warmup: int,
    epochs: int | None,
    seed: int,
) -> dict[str, float]:
    from comparison.spec import Entry
    from comparison.training import build

    if epochs:  # one epoch cut to the timed batches, then (or not) its validation
        overrides = {**overrides, "trainer.limit_train_batches": warmup + steps}
    entry = Entry(
        run="bench", config=config, overrides=overrides, epochs=epochs, max_steps=None if epochs else warmup + steps
    )
    cli = build(entry, {"overrides": {}}, seed, "cpu")
    if patch is not None:
        patch(cli)
    clock = StepClock(warmup)
    cli.trainer.callbacks.append(clock)
    t0 = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s = time.perf_counter() - t0
    batches = len(cli.datamodule.train_dataloader())  # a full epoch's training batches
    return {"steps_per_s": clock.steps_per_s, "fit_s": fit_s, "steps": clock.steps, "epoch_batches": batches}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument(
        "--variants",
        choices=["workers", "ss", "val", "roi_align", "optimizer", "channels_last", "speed", "deterministic"],
        default="workers",
    )
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-weights", action="store_true", help="keep the config's weights (may pretrain)")
    args = parser.parse_args(argv)

    chosen = variants(args.variants)
    common: dict[str, Any] = {} if args.keep_weights else {"model.init_args.weights": None}
    epochs = 1 if args.variants == "val" else None
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in chosen}
    for repeat in range(args.repeats):
        order = chosen if repeat % 2 == 0 else chosen[::-1]
        for name, overrides, patch in order:
            r = run_once(args.config, {**common, **overrides}, patch, args.steps, args.warmup, epochs, args.seed)
            results[name].append(r)
            print(
                f"[repeat {repeat + 1}/{args.repeats}] {name:22s} {r['steps_per_s']:7.2f} steps/s  "
                f"fit {r['fit_s']:7.2f} s  ({r['steps']} steps)",
                flush=True,
            )

    print(
        f"\n{args.config}  variants={args.variants}  repeats={args.repeats}  "
        f"{'1 epoch' if epochs else f'{args.steps} timed steps after {args.warmup}'}"
    )
    base_name = chosen[0][0]
    for name, _, _ in chosen:
        rate = statistics.median(r["steps_per_s"] for r in results[name])
        fit = statistics.median(r["fit_s"] for r in results[name])
        # per-repeat ratios (paired: measured back to back) and their median
        paired = statistics.median(
            r["steps_per_s"] / b["steps_per_s"] for r, b in zip(results[name], results[base_name])
        )
        paired_fit = statistics.median(b["fit_s"] / r["fit_s"] for r, b in zip(results[name], results[base_name]))
        print(
            f"  {name:22s} {rate:7.2f} steps/s  x{paired:.3f} vs {base_name} (steps/s)   "
            f"fit {fit:7.2f} s  x{paired_fit:.3f} faster (whole fit)"
        )
    if args.variants == "val":
        from scripts.config_files import compose_config

        trainer_cfg = compose_config(args.config).get("trainer", {})
        max_epochs = int(trainer_cfg.get("max_epochs", 1))
        every = int(trainer_cfg.get("check_val_every_n_epoch", 1))
        no_val = results[chosen[1][0]]
        val_pass = statistics.median(b["fit_s"] - r["fit_s"] for r, b in zip(no_val, results[base_name]))
        passes = max_epochs // every
        train_s = max_epochs * no_val[0]["epoch_batches"] / statistics.median(r["steps_per_s"] for r in no_val)
        print(
            f"  one validation pass ~ {val_pass:.2f} s (paired median); the config's schedule: {max_epochs} epochs "
            f"of {no_val[0]['epoch_batches']} steps ~ {train_s:.0f} s of training, validation every {every}: "
            f"{passes} passes ~ {passes * val_pass:.0f} s saved (schedule with validation / without: "
            f"x{(train_s + passes * val_pass) / train_s:.3f})"
        )


if __name__ == "__main__":
    main()
