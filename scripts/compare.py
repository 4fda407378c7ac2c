#!/usr/bin/env python
"""The comparison: every detector and segmenter trained (or loaded) and measured the same way.

    python scripts/compare.py --spec experiments/compare/default.yaml --out runs/compare

For each model of the spec, on the same validation set and hardware: parameters, GFLOPs per image,
training throughput, test-time latency (median / p90 ms per image, FPS, per stage where the model
reports stages) and accuracy (the course's evaluator, VOC07, VOC, COCO for detectors; PA, MPA, mIoU,
Dice for semantic segmenters; box and mask AP for Mask R-CNN). Prints the course's tables beside the
papers' published figures and writes ``results.{md,csv,json}`` and plots into ``--out``.

Results are written after each model; a rerun skips rows already ``ok`` unless ``--force``; a model
that fails gets a ``failed`` row with the reason and the others go on.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from metrics import DetectionMetrics, SegmentationMetrics  # noqa: E402

DETECTION_FAMILIES = ("sliding_window", "two_stage", "one_stage_anchor", "anchor_free")
FAMILY_TITLES = {
    "sliding_window": "Sliding window",
    "two_stage": "Two-stage",
    "one_stage_anchor": "One-stage, anchor-based",
    "anchor_free": "Anchor-free",
    "semantic_segmentation": "Semantic segmentation",
    "instance_segmentation": "Instance segmentation",
    "pretraining": "Pretraining",
}
SPEED_KEYS = ("params", "gflops", "train_img_per_s", "train_s", "latency_ms_median", "latency_ms_p90", "fps")
DETECTION_KEYS = ("lecture/mAP", "voc07/mAP", "voc/mAP", "coco/AP", "coco/AP50", "coco/AP75", "coco/APs", "coco/APm", "coco/APl")
SEGMENTATION_KEYS = ("pixel_accuracy", "mean_pixel_accuracy", "mean_iou", "mean_dice")


# --------------------------------------------------------------------------- spec
@dataclass
class Entry:
    """One row of the comparison: a config, optional overrides, and the ablation group it is in."""

    run: str
    config: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    group: str | None = None  # ablation group, None for the main tables
    budget_s: float | None = None


def load_spec(path: Path) -> dict[str, Any]:
    """Read and check a comparison spec; errors name the file and the field."""
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{path}: cannot read the spec: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("models"), list):
        raise SystemExit(f"{path}: 'models' must be a list of {{run, config}} entries")
    return spec


def spec_entries(spec: dict[str, Any], spec_path: Path) -> list[Entry]:
    entries = []
    for i, item in enumerate(spec["models"]):
        if isinstance(item, str):
            item = {"run": item}
        if "run" not in item:
            raise SystemExit(f"{spec_path}: models[{i}]: missing 'run'")
        run = item["run"]
        config = Path(item.get("config", f"experiments/{run}/shapes.yaml"))
        if not (REPO_ROOT / config).exists() and not config.exists():
            raise SystemExit(f"{spec_path}: models[{i}] ({run}): config {config} does not exist")
        group = item.get("group")  # one ablation group, or a list (a baseline shared by two ablations)
        group = "; ".join(group) if isinstance(group, list) else group
        entries.append(Entry(run, config, dict(item.get("overrides") or {}), group or None, item.get("budget_s")))
    return entries


# ------------------------------------------------------------------ build & train
def build(entry: Entry, spec: dict[str, Any], args: argparse.Namespace, budget_s: float | None) -> Any:
    """Instantiate model, DataModule and Trainer from the model's own config through LightningCLI,
    with the spec's overrides (data location, budget, device) on top: the same code path as training."""
    from scripts.train import main as train_cli

    overrides: dict[str, Any] = {
        "seed_everything": args.seed,
        "trainer.accelerator": args.device,
        "trainer.devices": 1,
        "trainer.logger": False,
        "trainer.enable_checkpointing": False,
        "trainer.callbacks": None,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.limit_val_batches": 0,
        "trainer.num_sanity_val_steps": 0,
        "trainer.deterministic": False,
        "wandb.mode": "disabled",  # --wandb logs the comparison itself (log_to_wandb)
    }
    if budget_s is not None:
        seconds = int(math.ceil(budget_s))
        overrides["trainer.max_time"] = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    overrides.update(spec.get("overrides") or {})
    overrides.update(entry.overrides)
    config = entry.config if entry.config.is_absolute() else REPO_ROOT / entry.config
    cli_args = ["--config", str(config)] + [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    return train_cli(args=cli_args, run=False, exit_on_error=False)


class ThroughputMeter(pl.Callback):
    """Counts training images and the seconds spent in training batches (data loading included)."""

    def __init__(self) -> None:
        self.images, self.seconds, self._t = 0, 0.0, 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.images += len(batch[0])
        now = time.perf_counter()
        self.seconds, self._t = self.seconds + now - self._t, now

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


# ------------------------------------------------------------------ measurement
def count_gflops(model: torch.nn.Module, sample: Any) -> float:
    """GFLOPs of one eval forward (torch.utils.flop_counter: convolutions and matmuls, 2 per MAC).
    Work outside the network (Selective Search, NMS) is not counted; its time is in the latency."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(sample)
    return counter.get_total_flops() / 1e9


def _single(model: Any, image: torch.Tensor) -> Any:
    return [image] if model.task != "semantic" else image.unsqueeze(0)


def measure_test_latency(model: Any, images: list[torch.Tensor], warmup: int) -> dict[str, float]:
    """Per-image latency over distinct validation images (batch 1), after ``warmup`` untimed calls.

    Distinct images matter: a proposal cache or a repeated input would hide the proposal time.
    Stage times are means over the timed images.
    """
    sync = torch.cuda.synchronize if images[0].is_cuda else (lambda: None)
    with torch.inference_mode():
        for i in range(warmup):
            model(_single(model, images[i % len(images)]))
        timer = model.stage_timer
        timer.reset()
        timer.enabled = True
        times = []
        try:
            for image in images:
                sync()
                t0 = time.perf_counter()
                model(_single(model, image))
                sync()
                times.append((time.perf_counter() - t0) * 1000.0)
        finally:
            timer.enabled = False
    arr = np.asarray(times)
    out = {"latency_ms_median": float(np.median(arr)), "latency_ms_p90": float(np.percentile(arr, 90))}
    out["fps"] = 1000.0 / out["latency_ms_median"]
    for stage, total in model.stage_times_ms().items():
        out[f"latency_ms/{stage}"] = total / len(images)
    timer.reset()
    return out


def evaluate(model: Any, loader: Iterable, device: torch.device, class_names: list[str]) -> tuple[dict[str, float], Any]:
    """Accuracy on the whole validation set with the repo's exact metrics; returns (metrics, PR curves)."""
    if model.task == "semantic":
        metric: Any = SegmentationMetrics(num_classes=model.num_classes + 1).to(device)
        with torch.inference_mode():
            for images, masks in loader:
                metric.update(model(images.to(device)), masks.to(device))
        return metric.compute(), None
    bbox = DetectionMetrics(protocols=("lecture", "voc07", "voc", "coco"), iou_type="bbox", class_names=class_names)
    segm = DetectionMetrics(protocols=("coco",), iou_type="segm", class_names=class_names) if model.task == "instance" else None
    with torch.inference_mode():
        for images, targets in loader:
            preds = model([im.to(device) for im in images])
            preds = [{k: v.cpu() if torch.is_tensor(v) else v for k, v in p.items()} for p in preds]
            bbox.update(preds, targets)
            if segm is not None:
                segm.update(preds, targets)
    results = bbox.compute()
    if segm is not None:
        results.update(segm.compute())
    return results, bbox.pr_curves()


def eval_loader(dm: Any, limit: int | None) -> Any:
    """The validation loader, or one over its first ``limit`` images (the same images for every model)."""
    loader = dm.val_dataloader()
    if not limit or limit >= len(dm.val_dataset):
        return loader
    from torch.utils.data import DataLoader, Subset

    return DataLoader(Subset(dm.val_dataset, range(int(limit))), batch_size=loader.batch_size, collate_fn=loader.collate_fn)


def predict_examples(model: Any, images: list[torch.Tensor]) -> list[Any]:
    with torch.inference_mode():
        if model.task == "semantic":
            return [model(im.unsqueeze(0)).argmax(1)[0].cpu() for im in images]
        return [{k: v.cpu() for k, v in model([im])[0].items() if torch.is_tensor(v)} for im in images]


# ---------------------------------------------------------------------- one row
def run_entry(entry: Entry, spec: dict[str, Any], args: argparse.Namespace, out: Path, progress: Any) -> tuple[dict[str, Any], Any]:
    from models.registry import get_model

    budget = args.budget_s if args.budget_s is not None else entry.budget_s or spec.get("budget_s")
    progress.set_postfix_str(f"{entry.run}: build")
    cli = build(entry, spec, args, None if args.checkpoints else budget)
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    name = getattr(type(model), "registry_name", type(model).__name__)
    registered = get_model(name)
    row: dict[str, Any] = {"run": entry.run, "model": name, "family": registered.family, "group": entry.group or ""}
    row["params"] = sum(p.numel() for p in model.parameters())
    ckpt_dir = Path(args.checkpoints) if args.checkpoints else out / "checkpoints"
    ckpt = ckpt_dir / f"{entry.run}.ckpt"
    if args.checkpoints:
        progress.set_postfix_str(f"{entry.run}: load {ckpt.name}")
        if not ckpt.exists():
            raise FileNotFoundError(f"--checkpoints: {ckpt} does not exist")
        dm.prepare_data()
        dm.setup("fit")
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    else:
        progress.set_postfix_str(f"{entry.run}: train ({budget:.0f} s budget)" if budget else f"{entry.run}: train")
        meter = ThroughputMeter()
        trainer.callbacks.append(meter)
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        row["train_s"] = time.perf_counter() - t0
        row["train_img_per_s"] = meter.img_per_s
        row["train_steps"] = trainer.global_step
        row["train_epochs"] = trainer.current_epoch
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(ckpt)
    device = torch.device(args.device)
    model = model.to(device).eval()
    dm.setup("validate")
    progress.set_postfix_str(f"{entry.run}: evaluate")
    class_names = list(dm.class_names)
    loader = eval_loader(dm, spec.get("eval_images"))
    row["eval_images"] = len(loader.dataset)
    metrics, curves = evaluate(model, loader, device, class_names)
    row.update(metrics)
    val = dm.val_dataset
    n_lat = min(int(spec.get("latency_images", 20)), len(val))
    images = [val[i][0].to(device) for i in range(n_lat)]
    progress.set_postfix_str(f"{entry.run}: latency")
    row["gflops"] = count_gflops(model, _single(model, images[0]))
    row.update(measure_test_latency(model, images, warmup=int(spec.get("latency_warmup", 3))))
    if hasattr(model, "num_proposals"):  # R-CNN / Fast R-CNN: mean Selective Search boxes per image
        row["num_proposals"] = round(float(model.num_proposals), 1)
    n_show = min(int(spec.get("example_images", 4)), len(val))
    shown = images[:n_show] if n_show <= n_lat else [val[i][0].to(device) for i in range(n_show)]
    examples = {"predictions": predict_examples(model, shown), "curves": curves, "task": model.task,
                "images": [im.cpu() for im in shown], "targets": [val[i][1] for i in range(n_show)], "class_names": class_names}
    for nms in spec.get("nms_sweep", {}).get(entry.run, []) if not entry.group else []:
        progress.set_postfix_str(f"{entry.run}: NMS IoU {nms}")
        model.set_nms_iou(float(nms))
        swept, _ = evaluate(model, loader, device, class_names)
        row[f"nms_sweep/{nms}/voc07/mAP"] = swept.get("voc07/mAP")
    row["status"], row["error"] = "ok", ""
    return row, examples


def summarize_error(exc: BaseException, limit: int = 300) -> str:
    """One line for the results table: the exception's first line, or for a config that does not
    validate (jsonargparse lists one error per union member) the errors that say something."""
    lines = [ln.strip() for ln in str(exc).splitlines()] or [""]
    if "Errors:" in lines:
        reasons: list[str] = []
        for ln in lines[lines.index("Errors:") + 1:]:
            if ln.startswith("Given value"):
                break
            if ln.startswith("- "):
                reasons.append(ln[2:])
            elif reasons and ln:
                reasons[-1] += " " + ln
        reasons = [r for r in reasons if "NoneType" not in r]
        if reasons:
            return f"{type(exc).__name__}: {'; '.join(reasons)}"[:limit]
    return f"{type(exc).__name__}: {lines[0]}"[:limit]


# ------------------------------------------------------------------- reporting
def _fmt(value: Any, key: str = "") -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key == "params":
        return f"{value / 1e6:.2f}M"
    if isinstance(value, float):
        if key.startswith("latency") or key in ("fps", "train_img_per_s", "train_s"):
            return f"{value:.1f}" if value < 1000 else f"{value:.0f}"
        if key == "gflops":
            return f"{value:.2f}"
        return "n/a" if value < 0 else f"{value:.3f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``(key, header)`` columns."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k), k) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def load_published(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def rcnn_family_table(rows: list[dict[str, Any]], published: dict[str, Any]) -> str:
    """The course's R-CNN -> Fast R-CNN -> Faster R-CNN test-time story, ours beside the papers'."""
    by_model = {r["model"]: r for r in rows if r.get("status") == "ok" and not r.get("group")}
    pub = {p["model"]: p for p in published.get("rcnn_family_speed", [])}
    base = by_model.get("rcnn")
    out = []
    for name in ("rcnn", "fast_rcnn", "faster_rcnn"):
        r = by_model.get(name)
        if r is None:
            continue
        total = r["latency_ms_median"] / 1000.0
        proposals = r.get("latency_ms/proposals", 0.0) / 1000.0
        without = total - proposals if name != "faster_rcnn" else None  # the RPN is part of the network
        p = pub.get(name, {})
        out.append({
            "model": name,
            "proposals": r.get("num_proposals", "RPN" if name == "faster_rcnn" else "–"),
            "s_with": total,
            "s_without": without,
            "speedup": (base["latency_ms_median"] / r["latency_ms_median"]) if base else None,
            "pub_with": p.get("test_s_per_image_with_proposals"),
            "pub_without": p.get("test_s_per_image"),
        })
    if not out:
        return "_no R-CNN family model in this run_"
    cols = [("model", "model"), ("proposals", "proposals / image"), ("s_with", "s/image (with proposals)"),
            ("s_without", "s/image (without proposals)"), ("speedup", "speed-up vs R-CNN"),
            ("pub_with", "published s/image with proposals"), ("pub_without", "published s/image without")]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for o in out:
        cells = [o["model"], str(o["proposals"])]
        cells += [f"{o[k]:.4f}" if isinstance(o[k], float) else "–" for k in ("s_with", "s_without")]
        cells += [f"{o['speedup']:.1f}x" if o["speedup"] else "–"]
        cells += [f"{o[k]:g}" if o[k] is not None else "–" for k in ("pub_with", "pub_without")]
        lines.append("| " + " | ".join(cells) + " |")
    source = published.get("rcnn_family_note", "Published: VGG16 on an Nvidia K40 (Fast R-CNN Table 4; Faster R-CNN timing table).")
    return "\n".join(lines) + f"\n\n{source}"


def detector_tables(rows: list[dict[str, Any]], published: dict[str, Any]) -> str:
    pub = published.get("detectors", {})
    parts = []
    cols = [("model", "model"), ("params", "params"), ("gflops", "GFLOPs"), ("train_img_per_s", "train img/s"),
            ("latency_ms_median", "ms/img"), ("latency_ms_p90", "p90 ms"), ("fps", "FPS"),
            ("lecture/mAP", "course mAP"), ("voc07/mAP", "VOC07 mAP"), ("voc/mAP", "VOC mAP"),
            ("coco/AP", "AP"), ("coco/AP50", "AP50"), ("coco/AP75", "AP75"), ("coco/APs", "APs"),
            ("coco/APm", "APm"), ("coco/APl", "APl"), ("published", "published (paper, data)")]
    for family in DETECTION_FAMILIES:
        fam = [dict(r, published=pub.get(r["model"], "")) for r in rows
               if r.get("family") == family and r.get("status") == "ok" and not r.get("group")]
        if fam:
            parts.append(f"#### {FAMILY_TITLES[family]}\n\n" + markdown_table(fam, cols))
    return "\n\n".join(parts) or "_no detector in this run_"


def segmentation_table(rows: list[dict[str, Any]], published: dict[str, Any]) -> str:
    pub = published.get("segmenters", {})
    sem = [dict(r, published=pub.get(r["model"], "")) for r in rows
           if r.get("family") == "semantic_segmentation" and r.get("status") == "ok" and not r.get("group")]
    inst = [dict(r, published=pub.get(r["model"], "")) for r in rows
            if r.get("family") == "instance_segmentation" and r.get("status") == "ok" and not r.get("group")]
    parts = []
    speed = [("params", "params"), ("latency_ms_median", "ms/img"), ("fps", "FPS")]
    if sem:
        parts.append(markdown_table(sem, [("run", "model"), *speed, ("pixel_accuracy", "PA"),
                                          ("mean_pixel_accuracy", "MPA"), ("mean_iou", "mIoU"), ("mean_dice", "Dice"),
                                          ("published", "published (paper, data)")]))
    if inst:
        parts.append(markdown_table(inst, [("run", "model"), *speed, ("coco/AP", "box AP"), ("coco/AP50", "box AP50"),
                                           ("coco_segm/AP", "mask AP"), ("coco_segm/AP50", "mask AP50"),
                                           ("coco_segm/AP75", "mask AP75"), ("published", "published (paper, data)")]))
    return "\n\n".join(parts) or "_no segmenter in this run_"


def ablation_table(rows: list[dict[str, Any]]) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("group") and r.get("status") == "ok":
            for group in r["group"].split("; "):
                groups.setdefault(group, []).append(r)
    parts = []
    for group, members in groups.items():
        seg = members[0].get("family") == "semantic_segmentation"
        acc = [("mean_iou", "mIoU")] if seg else [("voc07/mAP", "VOC07 mAP"), ("coco/AP", "AP"), ("coco/AP50", "AP50")]
        if any("coco_segm/AP" in m for m in members):
            acc.append(("coco_segm/AP", "mask AP"))
        parts.append(f"#### {group}\n\n" + markdown_table(members, [("run", "run"), *acc, ("latency_ms_median", "ms/img")]))
    sweeps = [r for r in rows if any(k.startswith("nms_sweep/") for k in r)]
    for r in sweeps:
        keys = sorted(k for k in r if k.startswith("nms_sweep/"))
        cells = [(k, k.split("/")[1]) for k in keys]
        parts.append(f"#### NMS IoU threshold sweep ({r['run']}, VOC07 mAP)\n\n" + markdown_table([r], [("run", "run"), *cells]))
    return "\n\n".join(parts) or "_no ablation in this run_"


def failures_table(rows: list[dict[str, Any]]) -> str:
    failed = [r for r in rows if r.get("status") != "ok"]
    return markdown_table(failed, [("run", "run"), ("error", "error")]) if failed else ""


def write_results(rows: list[dict[str, Any]], out: Path, spec: dict[str, Any], published: dict[str, Any], header: str) -> str:
    """Write results.json / results.csv / results.md; return the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(rows, indent=2, default=float))
    tmp.replace(out / "results.json")
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    tables = spec.get("tables", ["rcnn_family", "detectors", "segmentation", "ablations"])
    sections = [header]
    if "rcnn_family" in tables:
        sections.append("### R-CNN family: test-time speed\n\n" + rcnn_family_table(rows, published))
    if "detectors" in tables:
        sections.append("### Detectors: speed and accuracy (validation set)\n\n" + detector_tables(rows, published))
    if "segmentation" in tables:
        sections.append("### Segmentation\n\n" + segmentation_table(rows, published))
    if "ablations" in tables:
        sections.append("### Ablations\n\n" + ablation_table(rows))
    pre = [r for r in rows if r.get("family") == "pretraining"]
    if pre:
        sections.append("### Shared pretraining\n\n" + markdown_table(pre, [("run", "run"), ("train_s", "seconds"), ("accuracy", "crop accuracy"), ("error", "note")]))
    fails = failures_table(rows)
    if fails:
        sections.append("### Failed\n\n" + fails)
    md = "\n\n".join(sections) + "\n"
    (out / "results.md").write_text(md)
    return md


# ----------------------------------------------------------------------- plots
def plot_speed_accuracy(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    markers = {"sliding_window": "s", "two_stage": "o", "one_stage_anchor": "^", "anchor_free": "D",
               "semantic_segmentation": "P", "instance_segmentation": "X"}
    for r in rows:
        if r.get("status") != "ok" or r.get("group") or "latency_ms_median" not in r:
            continue
        acc = r.get("voc07/mAP", r.get("mean_iou"))
        if acc is None:
            continue
        ax.scatter(r["latency_ms_median"], acc, marker=markers.get(r["family"], "o"), s=60, label=FAMILY_TITLES.get(r["family"]))
        ax.annotate(r["run"], (r["latency_ms_median"], acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("test time per image, ms (log scale)")
    ax.set_ylabel("VOC07 mAP@0.5 (detectors) / mIoU (semantic)")
    ax.set_title("Speed vs accuracy on the validation set")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(examples: dict[str, Any], images: list[torch.Tensor], targets: list[Any], class_names: list[str], path: Path) -> None:
    """A grid: ground truth on the first row, then each model's boxes (score >= 0.3) or masks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    runs = [r for r in examples if examples[r].get("predictions") is not None]
    n_cols = len(images)
    fig, axes = plt.subplots(len(runs) + 1, n_cols, figsize=(2.2 * n_cols, 2.2 * (len(runs) + 1)), squeeze=False)
    colours = plt.get_cmap("tab10")

    def draw(ax: Any, image: torch.Tensor, pred: Any, title: str) -> None:
        ax.imshow(image.permute(1, 2, 0).cpu().numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7)
        if isinstance(pred, torch.Tensor):  # semantic label map
            masked = np.ma.masked_where(pred.numpy() == 0, pred.numpy())
            ax.imshow(masked, cmap="tab10", alpha=0.5, vmin=0, vmax=10, interpolation="nearest")
            return
        keep = pred.get("scores", torch.ones(len(pred["boxes"]))) >= 0.3
        if "masks" in pred and keep.any():
            m = (pred["masks"][keep][:, 0] > 0.5).any(0).numpy() if pred["masks"].ndim == 4 else pred["masks"][keep].any(0).numpy()
            ax.imshow(np.ma.masked_where(~m, m), cmap="autumn", alpha=0.4)
        for box, label in zip(pred["boxes"][keep], pred["labels"][keep]):
            x1, y1, x2, y2 = box.tolist()
            c = colours(int(label) % 10)
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=c, lw=1.2))
            ax.text(x1, y1, class_names[int(label) - 1][:4], color=c, fontsize=5, va="bottom")

    for j, (image, target) in enumerate(zip(images, targets)):
        gt = target if isinstance(target, torch.Tensor) else {"boxes": target["boxes"], "labels": target["labels"]}
        draw(axes[0, j], image, gt, "ground truth")
        for i, run in enumerate(runs):
            draw(axes[i + 1, j], image, examples[run]["predictions"][j], run)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", type=Path, default=REPO_ROOT / "experiments/compare/default.yaml")
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument("--models", nargs="+", help="subset of the spec's runs (by run name)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--budget-s", type=float, default=None, help="training seconds per model (overrides the spec)")
    p.add_argument("--checkpoints", type=Path, default=None, help="evaluate <DIR>/<run>.ckpt instead of training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rerun rows already in results.json")
    p.add_argument("--wandb", action="store_true", help="also log tables and pictures to W&B (offline unless logged in)")
    return p.parse_args(argv)


def run_pretraining(spec: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """The shared `weights: shapes` pretraining, once, reported on its own row."""
    pre = spec.get("pretrain")
    if not pre:
        return None
    from models.parts.pretrain import pretrain_on_shapes

    result = pretrain_on_shapes(pre["data_root"], arch=pre.get("arch", "small_cnn"))
    return {"run": f"pretrain_{pre.get('arch', 'small_cnn')}", "model": pre.get("arch", "small_cnn"), "family": "pretraining",
            "group": "", "status": "ok", "error": "cached" if result.cached else "", "train_s": result.seconds,
            "accuracy": result.accuracy}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    spec = load_spec(args.spec)
    entries = spec_entries(spec, args.spec)
    if args.models:
        unknown = set(args.models) - {e.run for e in entries}
        if unknown:
            raise SystemExit(f"--models: {sorted(unknown)} not in {args.spec} (runs: {[e.run for e in entries]})")
        entries = [e for e in entries if e.run in args.models]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    published = load_published(REPO_ROOT / spec.get("published", "experiments/compare/published.yaml"))
    previous = {}
    if (out / "results.json").exists():
        previous = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    # rows already measured are kept (and skipped) unless --force reruns them; other runs' rows stay
    rerun = {e.run for e in entries} if args.force else set()
    rows: list[dict[str, Any]] = [r for r in previous.values() if r.get("status") == "ok" and r["run"] not in rerun]
    done = {r["run"] for r in rows}
    header = (f"## Comparison `{args.spec.name}` on {args.device} ({torch.get_num_threads()} threads), seed {args.seed}\n\n"
              f"Budget per model: {args.budget_s or spec.get('budget_s', 'config')} s of training.")

    def record(row: dict[str, Any]) -> None:
        rows[:] = [r for r in rows if r["run"] != row["run"]] + [row]
        write_results(rows, out, spec, published, header)

    if spec.get("pretrain") and not args.checkpoints:
        try:
            pre_row = run_pretraining(spec, out)
            if pre_row:
                record(pre_row)
        except Exception as exc:  # the models can still train from scratch
            record({"run": "pretrain", "model": "pretrain", "family": "pretraining", "group": "", "status": "failed",
                    "error": f"{type(exc).__name__}: {exc}"})
    examples: dict[str, Any] = {}
    todo = [e for e in entries if e.run not in done]
    progress = tqdm(todo, desc="compare", unit="model", disable=None)
    for entry in progress:
        progress.set_description(entry.run)
        try:
            row, ex = run_entry(entry, spec, args, out, progress)
            if not entry.group:
                examples[entry.run] = ex
        except (Exception, SystemExit) as exc:  # one failing model must not stop the others
            (out / "logs").mkdir(exist_ok=True)
            (out / "logs" / f"{entry.run}.txt").write_text(traceback.format_exc())
            row = {"run": entry.run, "model": entry.run, "family": "", "group": entry.group or "",
                   "status": "failed", "error": summarize_error(exc)}
            print(f"[compare] {entry.run} failed: {row['error']} (traceback in {out / 'logs' / (entry.run + '.txt')})", file=sys.stderr)
        record(row)
    md = write_results(rows, out, spec, published, header)
    plot_speed_accuracy(rows, out / "speed_accuracy.png")
    for kind, label_maps in (("detection", False), ("semantic", True)):
        runs = {r: e for r, e in examples.items() if (e["task"] == "semantic") == label_maps}
        if runs:
            first = next(iter(runs.values()))
            plot_examples(runs, first["images"], first["targets"], first["class_names"], out / f"examples_{kind}.png")
    if examples:
        from metrics.plots import plot_pr_curves

        for run, ex in examples.items():
            if ex.get("curves"):
                plot_pr_curves(ex["curves"], out / f"pr_{run}.png", title=f"{run}: precision / recall (VOC, IoU 0.5)")
    if args.wandb:
        log_to_wandb(rows, out, spec, args)
    print(md)
    return rows


def log_to_wandb(rows: list[dict[str, Any]], out: Path, spec: dict[str, Any], args: argparse.Namespace) -> None:
    """One W&B run per model grouped under the comparison, plus a summary run with the tables."""
    import os

    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if wandb.api.api_key else "offline")
    group = f"compare-{args.spec.stem}"
    for r in rows:
        run = wandb.init(project=spec.get("wandb_project", "cv-course"), group=group, name=r["run"], mode=mode,
                         dir=str(out), config={k: r[k] for k in ("model", "family", "group") if k in r}, reinit="finish_previous")
        run.summary.update({k: v for k, v in r.items() if isinstance(v, (int, float))})
        run.finish()
    run = wandb.init(project=spec.get("wandb_project", "cv-course"), group=group, name=f"{group}-summary", mode=mode, dir=str(out))
    keys = sorted({k for r in rows for k in r})
    run.log({"results": wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in rows])})
    for png in sorted(out.glob("*.png")):
        run.log({png.stem: wandb.Image(str(png))})
    run.finish()


if __name__ == "__main__":
    main()
