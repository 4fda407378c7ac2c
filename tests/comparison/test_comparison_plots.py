"""The speed/accuracy picture: one panel per task, labels pushed apart."""

import numpy as np

from comparison.plots import labels_overlap, plot_speed_accuracy, repel_labels


def test_labels_of_crowded_points_end_up_apart_and_near_their_points():
    points = np.array([[100, 100], [102, 101], [101, 99], [103, 100], [100, 102], [300, 50]], dtype=float)
    sizes = np.array([[40, 10]] * len(points), dtype=float)
    assert labels_overlap(points + [6, 4], sizes)
    placed = repel_labels(points, sizes)
    assert not labels_overlap(placed, sizes)
    assert np.abs(placed - points).max() < 100
    assert np.allclose(placed[-1], points[-1] + [6, 4])  # a lone label stays where it started


def test_detection_and_segmentation_get_their_own_panels(tmp_path):
    rows = [
        {
            "run": f"det{i}",
            "model": "fcos",
            "family": fam,
            "group": "",
            "status": "ok",
            "latency_ms_median": 10.0 + i,
            "voc07/mAP": 0.3 + 0.01 * i,
        }
        for i, fam in enumerate(["anchor_free", "two_stage", "one_stage_anchor", "instance_segmentation"])
    ]
    rows += [
        {
            "run": "fcn",
            "model": "fcn",
            "family": "semantic_segmentation",
            "group": "",
            "status": "ok",
            "latency_ms_median": 5.0,
            "mean_iou": 0.6,
        },
        {
            "run": "abl",
            "model": "fcn",
            "family": "semantic_segmentation",
            "group": "g",
            "status": "ok",
            "latency_ms_median": 5.0,
            "mean_iou": 0.6,
        },
    ]
    assert plot_speed_accuracy(rows, tmp_path / "a.png") == ["Detection", "Semantic segmentation"]
    assert (tmp_path / "a.png").stat().st_size > 1000
    assert plot_speed_accuracy(rows[-2:-1], tmp_path / "b.png") == ["Semantic segmentation"]
    assert plot_speed_accuracy([], tmp_path / "c.png") == [] and not (tmp_path / "c.png").exists()
