import numpy as np
import torch

from metrics.latency import measure_latency
from metrics.plots import plot_confusion_matrix, plot_pr_curves


def test_plots_write_png(tmp_path):
    curves = {
        "dog": {
            "recall": np.array([0.5, 0.5, 1.0]),
            "precision": np.array([1.0, 0.5, 2 / 3]),
            "ap07": 0.85,
            "recall_11": np.arange(11) / 10,
            "precision_11": np.r_[np.ones(6), np.full(5, 2 / 3)],
        },
        "cat": {"recall": np.array([]), "precision": np.array([]), "ap07": 0.0},
    }
    p = plot_pr_curves(curves, tmp_path / "pr" / "curves.png")
    c = plot_confusion_matrix(torch.tensor([[5, 1], [0, 0]]), tmp_path / "cm.png", ["bg", "dog"])
    for f in (p, c):
        assert f.is_file() and f.stat().st_size > 1000
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measure_latency_runs_under_inference_mode():
    seen = []

    def fn(x):
        seen.append(torch.is_inference_mode_enabled())
        return x * 2

    out = measure_latency(fn, torch.ones(4, 3), warmup=2, repeats=5)
    assert set(out) == {"median_ms", "p90_ms", "fps"}
    assert len(seen) == 7 and all(seen)
    assert 0 < out["median_ms"] <= out["p90_ms"]
    assert out["fps"] == np.float64(4 / (out["median_ms"] / 1000))
