"""The comparison's pictures: speed vs accuracy (detection and segmentation on their own panels) and
example predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from comparison.report import family_title, is_measured

MARKERS = {
    "sliding_window": "s",
    "two_stage": "o",
    "one_stage_anchor": "^",
    "anchor_free": "D",
    "semantic_segmentation": "P",
    "instance_segmentation": "X",
}
#: (panel title, accuracy key, y label, families); instance segmenters sit with the detectors (box mAP)
PANELS = (
    (
        "Detection",
        "voc07/mAP",
        "VOC07 mAP@0.5",
        ("sliding_window", "two_stage", "one_stage_anchor", "anchor_free", "instance_segmentation"),
    ),
    ("Semantic segmentation", "mean_iou", "mIoU", ("semantic_segmentation",)),
)


def _push(a: np.ndarray, sa: np.ndarray, b: np.ndarray, sb: np.ndarray, gap: float = 2.0) -> np.ndarray | None:
    """The shift that moves box ``b`` (lower-left ``b``, size ``sb``) clear of box ``a`` along the axis of
    least overlap, or None when they do not overlap."""
    d = (b + sb / 2) - (a + sa / 2)
    overlap = (sa + sb) / 2 + gap - np.abs(d)
    if overlap[0] <= 0 or overlap[1] <= 0:
        return None
    axis = 1 if overlap[1] <= overlap[0] else 0
    shift = np.zeros(2)
    shift[axis] = overlap[axis] * (1.0 if d[axis] >= 0 else -1.0)
    return shift


def repel_labels(points: np.ndarray, sizes: np.ndarray, iterations: int = 300, marker: float = 10.0) -> np.ndarray:
    """Label positions (display units, lower-left corners) near ``points`` for labels of ``sizes`` (w, h),
    so that no two labels overlap and no label covers a marker (a ``marker``-sized square on each point).

    Each label starts up and right of its point; each overlapping pair is pushed apart along the axis of
    least overlap, a label on a marker is pushed off it, and every label is pulled gently back toward its
    start. Deterministic.
    """
    start = points + np.array([6.0, 4.0])
    pos = start.copy()
    n = len(pos)
    dot = np.array([marker, marker])
    for _ in range(iterations):
        moved = False
        for i in range(n):
            for j in range(i + 1, n):
                shift = _push(pos[i], sizes[i], pos[j], sizes[j])
                if shift is not None:
                    pos[i] -= shift / 2 + np.sign(shift) * 0.5
                    pos[j] += shift / 2 + np.sign(shift) * 0.5
                    moved = True
            for k in range(n):
                shift = _push(points[k] - dot / 2, dot, pos[i], sizes[i], gap=1.0)
                if shift is not None:
                    pos[i] += shift + np.sign(shift) * 0.5
                    moved = True
        if not moved:
            break
        pos += 0.02 * (start - pos)
    return pos


def labels_overlap(pos: np.ndarray, sizes: np.ndarray) -> bool:
    """Whether any two label boxes (lower-left corners ``pos``, ``sizes`` w, h) overlap."""
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            if (
                abs((pos[i, 0] + sizes[i, 0] / 2) - (pos[j, 0] + sizes[j, 0] / 2)) < (sizes[i, 0] + sizes[j, 0]) / 2
                and abs((pos[i, 1] + sizes[i, 1] / 2) - (pos[j, 1] + sizes[j, 1] / 2)) < (sizes[i, 1] + sizes[j, 1]) / 2
            ):
                return True
    return False


def _place_labels(ax: Any, fig: Any, xs: list[float], ys: list[float], names: list[str]) -> list[Any]:
    """Annotate the points with labels moved apart by :func:`repel_labels`; returns the text artists."""
    if not names:
        return []
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    points = ax.transData.transform(np.column_stack([xs, ys]))
    texts = [ax.text(0, 0, n, fontsize=8) for n in names]
    sizes = np.array([[t.get_window_extent(renderer).width, t.get_window_extent(renderer).height] for t in texts])
    for t in texts:
        t.remove()
    pos = repel_labels(points, sizes)
    inverse = ax.transData.inverted()
    artists = []
    for (x, y), (px, py), name in zip(points, pos, names):
        lx, ly = inverse.transform((px, py))
        px0, py0 = inverse.transform((x, y))
        far = np.hypot(px - x - 6, py - y - 4) > 8
        artists.append(
            ax.annotate(
                name,
                (px0, py0),
                xytext=(lx, ly),
                textcoords="data",
                fontsize=8,
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if far else None,
            )
        )
    return artists


def plot_speed_accuracy(rows: list[dict[str, Any]], path: Path) -> list[str]:
    """Latency (log scale) against accuracy, one panel per task; marker and colour by family, hollow for a
    truncated run. Returns the panel titles drawn (none when no row has both numbers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for title, key, ylabel, families in PANELS:
        pts = [
            r
            for r in rows
            if is_measured(r)
            and not r.get("group")
            and r.get("family") in families
            and isinstance(r.get(key), (int, float))
            and isinstance(r.get("latency_ms_median"), (int, float))
        ]
        if pts:
            panels.append((title, key, ylabel, pts))
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    palette = plt.get_cmap("tab10")
    colours = {family: palette(i) for i, family in enumerate(MARKERS)}
    for ax, (title, key, ylabel, pts) in zip(axes[0], panels):
        for r in pts:
            cut = r.get("status") == "truncated"  # hollow: the safety cap stopped its training
            colour = colours.get(r["family"], "0.4")
            label = family_title(r["family"]) + (" (truncated)" if cut else "")
            ax.scatter(
                r["latency_ms_median"],
                r[key],
                marker=MARKERS.get(r["family"], "o"),
                s=60,
                label=label,
                facecolors="none" if cut else colour,
                edgecolors=colour,
                linewidths=1.2,
            )
        ax.set_xscale("log")
        xs = [r["latency_ms_median"] for r in pts]
        lo, hi = min(xs), max(xs)
        ax.set_xlim(lo / 1.6, hi * 2.5)
        ys = [r[key] for r in pts]
        span = max(max(ys) - min(ys), 0.05)
        ax.set_ylim(min(ys) - 0.15 * span, max(ys) + 0.3 * span)
        ax.set_xlabel("test time per image, ms (log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(
            unique.values(),
            unique.keys(),
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncol=3,
            frameon=False,
        )  # below the panel: it never covers a point or a label
    fig.suptitle("Speed vs accuracy on the validation set")
    fig.tight_layout()
    for ax, (_, key, _, pts) in zip(axes[0], panels):
        _place_labels(ax, fig, [r["latency_ms_median"] for r in pts], [r[key] for r in pts], [r["run"] for r in pts])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [p[0] for p in panels]


def plot_examples(
    examples: dict[str, Any], images: list[torch.Tensor], targets: list[Any], class_names: list[str], path: Path
) -> None:
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
            masks = pred["masks"][keep]
            m = (masks[:, 0] > 0.5).any(0).numpy() if masks.ndim == 4 else masks.any(0).numpy()
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
