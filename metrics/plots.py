"""PNG plots of evaluation results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["plot_pr_curves", "plot_confusion_matrix"]


def plot_pr_curves(
    curves: Mapping[str, Mapping[str, object]], path: str | Path, title: str = "Precision / recall"
) -> Path:
    """One panel per class: the ranked precision/recall curve and the 11 interpolation points
    (max precision at recall >= r, r = 0, 0.1, ..., 1) that the VOC2007 / course AP averages.

    ``curves`` is :meth:`metrics.DetectionMetrics.pr_curves`'s output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(curves)
    n = max(len(names), 1)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        c = curves[name]
        rec = np.asarray(c["recall"], dtype=float)
        prec = np.asarray(c["precision"], dtype=float)
        ax.plot(np.r_[0.0, rec], np.r_[prec[:1] if len(prec) else [0.0], prec], lw=1.2, label="ranked")
        if "recall_11" in c:
            ax.plot(c["recall_11"], c["precision_11"], "o", ms=4, label="11-point")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ap = c.get("ap07", c.get("ap"))
        ax.set_title(f"{name}" + (f"  AP={float(ap):.3f}" if ap is not None else ""), fontsize=9)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.grid(alpha=0.3)
    if names:
        axes.ravel()[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(
    cm: torch.Tensor | np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "Confusion matrix",
) -> Path:
    """Row-normalised confusion matrix (rows = ground truth, each row sums to 1; empty rows 0)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.asarray(cm.cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    size = max(4.0, 0.35 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if norm[i, j] > 0:
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
