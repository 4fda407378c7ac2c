"""The comparison's tables and result files; rows of comparisons that share an output folder are merged.

Every table carries each model's training work (steps, epochs, seconds, and whether it was loaded from
the cache); a ``truncated`` row (its safety cap stopped training early) says so in every table it is in.
A preview spec heads every table as a preview that has not converged.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

import yaml

from models.registry import FAMILIES, list_models

#: display names of the registry's families (a family without one is shown by its registry name)
FAMILY_TITLES = {
    "sliding_window": "Sliding window",
    "two_stage": "Two-stage",
    "one_stage_anchor": "One-stage, anchor-based",
    "anchor_free": "Anchor-free",
    "semantic_segmentation": "Semantic segmentation",
    "instance_segmentation": "Instance segmentation",
    "pretraining": "Pretraining",
}
PREVIEW_NOTE = (
    "**Preview: short fixed schedules, not converged.** These numbers check that every model trains "
    "and is measured; they do not rank the models."
)
WORK_COLUMNS = [("train_steps", "steps"), ("train_epochs", "epochs"), ("train_s", "train s"), ("trained", "trained")]


def family_title(family: str) -> str:
    return FAMILY_TITLES.get(family, family.replace("_", " ").capitalize())


def detection_families() -> list[str]:
    """The registry's families of detectors, in the registry's order."""
    tasks = {m.family: m.task for m in list_models()}
    return [f for f in FAMILIES if tasks.get(f, "detection") == "detection"]


def is_measured(row: dict[str, Any]) -> bool:
    """A row with measurements in it: ``ok``, or ``truncated`` (shown, marked, never as a normal result)."""
    return row.get("status") in ("ok", "truncated")


def _fmt(value: Any, key: str = "") -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key == "params":
        return f"{value / 1e6:.2f}M"
    if key == "train_epochs":
        return f"{value:g}"
    if isinstance(value, float):
        if key.startswith("latency") or key in ("fps", "train_img_per_s", "train_s"):
            return f"{value:.1f}" if value < 1000 else f"{value:.0f}"
        if key == "gflops":
            return f"{value:.2f}"
        return "n/a" if value < 0 else f"{value:.3f}"
    return str(value)


def _label(row: dict[str, Any], key: str) -> str:
    text = str(row.get(key, ""))
    return f"{text} **(truncated)**" if row.get("status") == "truncated" else text


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``(key, header)`` columns; the first column of a truncated row
    is marked."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = []
    for r in rows:
        cells = [_fmt(r.get(k), k) for k, _ in columns]
        if columns and columns[0][0] in ("model", "run"):
            cells[0] = _label(r, columns[0][0])
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def load_published(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def _main_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if is_measured(r) and not r.get("group")]


def _with_published(rows: list[dict[str, Any]], pub: dict[str, Any], family: str) -> list[dict[str, Any]]:
    """The main-table rows of ``family``, each with its reference figure (the entry's own, else the paper's)."""
    return [
        dict(r, published=r.get("published") or pub.get(r["model"], ""))
        for r in _main_rows(rows)
        if r.get("family") == family
    ]


def rcnn_family_table(rows: list[dict[str, Any]], published: dict[str, Any]) -> str:
    """The course's R-CNN -> Fast R-CNN -> Faster R-CNN test-time story, ours beside the papers'."""
    by_model = {r["model"]: r for r in _main_rows(rows)}
    pub = {p["model"]: p for p in published.get("rcnn_family_speed", [])}
    base = by_model.get("rcnn")
    out = []
    for name in ("rcnn", "fast_rcnn", "faster_rcnn"):
        r = by_model.get(name)
        if r is None:
            continue
        total = r["latency_ms_median"] / 1000.0
        proposals = r.get("latency_ms/proposals", 0.0) / 1000.0
        p = pub.get(name, {})
        out.append(
            {
                "model": _label(r, "model"),
                "proposals": r.get("num_proposals", "RPN" if name == "faster_rcnn" else "–"),
                "s_with": total,
                "s_without": total - proposals if name != "faster_rcnn" else None,  # the RPN is part of the network
                "speedup": (base["latency_ms_median"] / r["latency_ms_median"]) if base else None,
                "pub_with": p.get("test_s_per_image_with_proposals"),
                "pub_without": p.get("test_s_per_image"),
            }
        )
    if not out:
        return "_no R-CNN family model in this run_"
    cols = [
        "model",
        "proposals / image",
        "s/image (with proposals)",
        "s/image (without proposals)",
        "speed-up vs R-CNN",
        "published s/image with proposals",
        "published s/image without",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for o in out:
        cells = [o["model"], str(o["proposals"])]
        cells += [f"{o[k]:.4f}" if isinstance(o[k], float) else "–" for k in ("s_with", "s_without")]
        cells += [f"{o['speedup']:.1f}x" if o["speedup"] else "–"]
        cells += [f"{o[k]:g}" if o[k] is not None else "–" for k in ("pub_with", "pub_without")]
        lines.append("| " + " | ".join(cells) + " |")
    source = published.get(
        "rcnn_family_note", "Published: VGG16 on an Nvidia K40 (Fast R-CNN Table 4; Faster R-CNN timing table)."
    )
    return "\n".join(lines) + f"\n\n{source}"


def detector_tables(rows: list[dict[str, Any]], published: dict[str, Any]) -> str:
    pub = published.get("detectors", {})
    cols = [
        ("model", "model"),
        ("params", "params"),
        ("gflops", "GFLOPs"),
        ("train_img_per_s", "train img/s"),
        ("latency_ms_median", "ms/img"),
        ("latency_ms_p90", "p90 ms"),
        ("fps", "FPS"),
        ("lecture/mAP", "course mAP"),
        ("voc07/mAP", "VOC07 mAP"),
        ("voc/mAP", "VOC mAP"),
        ("coco/AP", "AP"),
        ("coco/AP50", "AP50"),
        ("coco/AP75", "AP75"),
        ("coco/APs", "APs"),
        ("coco/APm", "APm"),
        ("coco/APl", "APl"),
        *WORK_COLUMNS,
        ("published", "published (paper, data)"),
    ]
    parts = []
    for family in detection_families():
        fam = _with_published(rows, pub, family)
        if fam:
            parts.append(f"#### {family_title(family)}\n\n" + markdown_table(fam, cols))
    return "\n\n".join(parts) or "_no detector in this run_"


def segmentation_table(rows: list[dict[str, Any]], published: dict[str, Any]) -> str:
    pub = published.get("segmenters", {})
    sem = _with_published(rows, pub, "semantic_segmentation")
    inst = _with_published(rows, pub, "instance_segmentation")
    speed = [("params", "params"), ("latency_ms_median", "ms/img"), ("fps", "FPS")]
    tail = [*WORK_COLUMNS, ("published", "published (paper, data)")]
    parts = []
    if sem:
        parts.append(
            markdown_table(
                sem,
                [
                    ("run", "model"),
                    *speed,
                    ("pixel_accuracy", "PA"),
                    ("mean_pixel_accuracy", "MPA"),
                    ("mean_iou", "mIoU"),
                    ("mean_dice", "Dice"),
                    *tail,
                ],
            )
        )
    if inst:
        parts.append(
            markdown_table(
                inst,
                [
                    ("run", "model"),
                    *speed,
                    ("coco/AP", "box AP"),
                    ("coco/AP50", "box AP50"),
                    ("coco_segm/AP", "mask AP"),
                    ("coco_segm/AP50", "mask AP50"),
                    ("coco_segm/AP75", "mask AP75"),
                    *tail,
                ],
            )
        )
    return "\n\n".join(parts) or "_no segmenter in this run_"


def ablation_table(rows: list[dict[str, Any]]) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("group") and is_measured(r):
            for group in r["group"].split("; "):
                groups.setdefault(group, []).append(r)
    parts = []
    for group, members in groups.items():
        seg = members[0].get("family") == "semantic_segmentation"
        acc = [("mean_iou", "mIoU")] if seg else [("voc07/mAP", "VOC07 mAP"), ("coco/AP", "AP"), ("coco/AP50", "AP50")]
        if any("coco_segm/AP" in m for m in members):
            acc.append(("coco_segm/AP", "mask AP"))
        cols = [("run", "run"), *acc, ("latency_ms_median", "ms/img"), *WORK_COLUMNS]
        parts.append(f"#### {group}\n\n" + markdown_table(members, cols))
    for r in (r for r in rows if any(k.startswith("nms_sweep/") for k in r)):
        cells = [(k, k.split("/")[1]) for k in sorted(k for k in r if k.startswith("nms_sweep/"))]
        parts.append(
            f"#### NMS IoU threshold sweep ({r['run']}, VOC07 mAP)\n\n" + markdown_table([r], [("run", "run"), *cells])
        )
    return "\n\n".join(parts) or "_no ablation in this run_"


def failures_table(rows: list[dict[str, Any]]) -> str:
    failed = [r for r in rows if r.get("status") == "failed"]
    return markdown_table(failed, [("run", "run"), ("error", "error")]) if failed else ""


def truncated_note(rows: list[dict[str, Any]]) -> str:
    cut = [r for r in rows if r.get("status") == "truncated"]
    if not cut:
        return ""
    names = ", ".join(f"{r['run']} ({r.get('train_steps', '?')} of {r.get('planned_steps', '?')} steps)" for r in cut)
    return f"**Truncated** (the safety cap stopped training before the schedule's end; not a result): {names}."


def render(
    rows: list[dict[str, Any]], spec: dict[str, Any], published: dict[str, Any], header: str, preview: bool = False
) -> str:
    """The Markdown of ``results.md``: the spec's tables, each headed as a preview for a preview spec."""
    tables = spec.get("tables", ["rcnn_family", "detectors", "segmentation", "ablations"])
    tag = " (preview, not converged)" if preview else ""
    sections = [header] + ([PREVIEW_NOTE] if preview else [])
    note = truncated_note(rows)
    if note:
        sections.append(note)
    if "rcnn_family" in tables:
        sections.append(f"### R-CNN family: test-time speed{tag}\n\n" + rcnn_family_table(rows, published))
    if "detectors" in tables:
        sections.append(
            f"### Detectors: speed and accuracy (validation set){tag}\n\n" + detector_tables(rows, published)
        )
    if "segmentation" in tables:
        sections.append(f"### Segmentation{tag}\n\n" + segmentation_table(rows, published))
    if "ablations" in tables:
        sections.append(f"### Ablations{tag}\n\n" + ablation_table(rows))
    pre = [r for r in rows if r.get("family") == "pretraining"]
    if pre:
        sections.append(
            "### Shared pretraining\n\n"
            + markdown_table(
                pre, [("run", "run"), ("train_s", "seconds"), ("accuracy", "crop accuracy"), ("error", "note")]
            )
        )
    fails = failures_table(rows)
    if fails:
        sections.append("### Failed\n\n" + fails)
    return "\n\n".join(sections) + "\n"


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """An exclusive lock on ``out/.results.lock`` (fcntl.flock): one writer of the result files at a time."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".results.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_rows(out: Path) -> list[dict[str, Any]]:
    path = out / "results.json"
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise SystemExit(f"{path}: not a results file ({exc}); move it away or use another --out") from None


def merge_rows(saved: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``saved`` with each of ``new`` replacing the row of the same run (or appended), order kept."""
    by_run = {r["run"]: r for r in new}
    merged = [by_run.pop(r["run"], r) for r in saved]
    return merged + [r for r in new if r["run"] in by_run]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def write_results(
    new_rows: list[dict[str, Any]],
    out: Path,
    spec: dict[str, Any],
    published: dict[str, Any],
    header: str,
    preview: bool = False,
) -> tuple[list[dict[str, Any]], str]:
    """Merge ``new_rows`` into ``out/results.json`` under the lock (rows another comparison wrote there
    meanwhile stay) and rewrite results.json / .csv / .md; returns (all rows, the Markdown)."""
    with locked(out):
        rows = merge_rows(read_rows(out), new_rows)
        _write_atomic(out / "results.json", json.dumps(rows, indent=2, default=float))
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        tmp = out / f".results.csv.tmp{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(out / "results.csv")
        md = render(rows, spec, published, header, preview)
        _write_atomic(out / "results.md", md)
    return rows, md
