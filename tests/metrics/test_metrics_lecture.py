import numpy as np
import pytest

from metrics.data import FlatDetections
from metrics.lecture import (
    calc_precision_recall,
    get_avg_precision_at_iou,
    get_single_image_results,
    lecture_evaluate,
    lecture_map,
)


def box(x, y, s=10):
    return [x, y, x + s, y + s]  # continuous: 10 x 10 pixels


def reference_single_image(gt_boxes, pred_boxes, iou_thr, plus_one=True):
    """Literal port of the public evaluator.py's matching (pixel-index IoU with +1 there)."""
    off = 1.0 if plus_one else 0.0

    def iou_of(p, g):
        if g[2] < p[0] or p[2] < g[0] or g[3] < p[1] or p[3] < g[1]:
            return 0.0
        inter = max(min(g[2], p[2]) - max(g[0], p[0]) + off, 0) * max(min(g[3], p[3]) - max(g[1], p[1]) + off, 0)
        area_g = (g[2] - g[0] + off) * (g[3] - g[1] + off)
        area_p = (p[2] - p[0] + off) * (p[3] - p[1] + off)
        return inter / (area_g + area_p - inter)

    if len(pred_boxes) == 0:
        return {"true_pos": 0, "false_pos": 0, "false_neg": len(gt_boxes)}
    if len(gt_boxes) == 0:
        return {"true_pos": 0, "false_pos": len(pred_boxes), "false_neg": 0}
    gi, pi, ious = [], [], []
    for ip, p in enumerate(pred_boxes):
        for ig, g in enumerate(gt_boxes):
            v = iou_of(p, g)
            if v > iou_thr:
                gi.append(ig)
                pi.append(ip)
                ious.append(v)
    gm, pm = [], []
    for idx in np.argsort(ious, kind="stable")[::-1]:  # numpy's default sort is stable on such inputs
        if gi[idx] not in gm and pi[idx] not in pm:
            gm.append(gi[idx])
            pm.append(pi[idx])
    return {"true_pos": len(gm), "false_pos": len(pred_boxes) - len(pm), "false_neg": len(gt_boxes) - len(gm)}


def test_slides_worked_example_precision_recall():
    # slide 104, left: predicted 4, ground truth 3, true predicted 1
    gt = [box(0, 0), box(100, 0), box(200, 0)]
    pred = [box(0, 0), box(50, 50), box(300, 300), box(400, 400)]
    r = get_single_image_results(gt, pred, 0.5)
    assert r == {"true_pos": 1, "false_pos": 3, "false_neg": 2}
    assert calc_precision_recall({"img": r}) == (pytest.approx(1 / 4), pytest.approx(1 / 3))
    # slide 104, right: predicted 1, ground truth 2, true predicted 1
    r2 = get_single_image_results([box(0, 0), box(100, 0)], [box(1, 0)], 0.5)
    assert r2 == {"true_pos": 1, "false_pos": 0, "false_neg": 1}
    assert calc_precision_recall([r2]) == (pytest.approx(1.0), pytest.approx(0.5))
    # both images together: (1 + 1) / (4 + 1), (1 + 1) / (3 + 2)
    assert calc_precision_recall([r, r2]) == (pytest.approx(2 / 5), pytest.approx(2 / 5))


def test_slide_101_matching_if_appear_firstly():
    # IoU-sorted pairs (GT, pred): (2, 3), (1, 1), (1, 2) -> matched GT 2, 1 and pred 3, 1
    gt = [[0, 0, 99, 99], [200, 0, 299, 99]]  # GT "1", GT "2"
    pred = [
        [0, 0, 99, 89],  # pred "1": IoU 0.9 with GT 1
        [0, 0, 99, 79],  # pred "2": IoU 0.8 with GT 1
        [200, 0, 299, 97],
    ]  # pred "3": IoU 0.98 with GT 2
    r = get_single_image_results(gt, pred, 0.5)
    assert r == {"true_pos": 2, "false_pos": 1, "false_neg": 0}


def test_edge_cases_and_strict_threshold():
    assert get_single_image_results([box(0, 0)], [], 0.5) == {"true_pos": 0, "false_pos": 0, "false_neg": 1}
    assert get_single_image_results([], [box(0, 0)], 0.5) == {"true_pos": 0, "false_pos": 1, "false_neg": 0}
    assert calc_precision_recall([]) == (0.0, 0.0)
    # IoU exactly 0.5: [0,0,10,10] vs [0,0,10,5] -> 50 / 100; strictly greater is required
    assert get_single_image_results([box(0, 0)], [[0, 0, 10, 5]], 0.5)["true_pos"] == 0
    assert get_single_image_results([box(0, 0)], [[0, 0, 10, 5]], 0.49)["true_pos"] == 1
    # the same on pixel indices (the course code's +1): [0,0,9,9] vs [0,0,9,4] -> 50 / 100
    assert get_single_image_results([[0, 0, 9, 9]], [[0, 0, 9, 4]], 0.5, "inclusive")["true_pos"] == 0
    assert get_single_image_results([[0, 0, 9, 9]], [[0, 0, 9, 4]], 0.49, "inclusive")["true_pos"] == 1
    # continuous (default) on those indices is 40 / 90 < 0.49
    assert get_single_image_results([[0, 0, 9, 9]], [[0, 0, 9, 4]], 0.44)["true_pos"] == 1
    assert get_single_image_results([[0, 0, 9, 9]], [[0, 0, 9, 4]], 0.45)["true_pos"] == 0


def test_equal_ious_follow_the_reference():
    # issue 13.9: all three overlapping pairs have IoU 0.2 on pixel indices; the reference walks
    # equal IoUs last-enumerated first and finds both matches
    gt = [[40, 0, 49, 9], [40, 20, 49, 29]]
    pred = [[40, 5, 49, 24], [10, 5, 49, 9]]
    expected = {"true_pos": 2, "false_pos": 0, "false_neg": 0}
    assert reference_single_image(gt, pred, 0.1) == expected
    assert get_single_image_results(gt, pred, 0.1, "inclusive") == expected
    # devkit mode on pixel indices == continuous mode on the converted boxes (x1 - 1, y1 - 1, x2, y2)
    conv = lambda bs: [[b[0] - 1, b[1] - 1, b[2], b[3]] for b in bs]  # noqa: E731
    assert get_single_image_results(conv(gt), conv(pred), 0.1) == expected


@pytest.mark.parametrize("seed", range(6))
def test_single_image_matches_reference_port_with_ties(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        gt = [
            [int(x), int(y), int(x) + int(rng.choice([4, 8])), int(y) + int(rng.choice([4, 8]))]
            for x, y in rng.integers(0, 12, (int(rng.integers(0, 5)), 2))
        ]
        pred = [
            [int(x), int(y), int(x) + int(rng.choice([4, 8])), int(y) + int(rng.choice([4, 8]))]
            for x, y in rng.integers(0, 12, (int(rng.integers(0, 5)), 2))
        ]
        thr = float(rng.choice([0.1, 0.3, 0.5]))
        assert get_single_image_results(gt, pred, thr, "inclusive") == reference_single_image(gt, pred, thr), (gt, pred)
        assert get_single_image_results(gt, pred, thr) == reference_single_image(gt, pred, thr, plus_one=False)


@pytest.mark.parametrize("seed", range(4))
def test_distinct_ious_make_the_matching_order_independent(seed):
    rng = np.random.default_rng(seed)
    gt = [
        [float(x), float(y), float(x) + rng.uniform(5, 20), float(y) + rng.uniform(5, 20)]
        for x, y in rng.uniform(0, 30, (5, 2))
    ]
    pred = [
        [b[0] + rng.normal(0, 3), b[1] + rng.normal(0, 3), b[2] + rng.normal(0, 3), b[3] + rng.normal(0, 3)]
        for b in gt + gt[:2]
    ]
    r = get_single_image_results(gt, pred, 0.3)
    for _ in range(5):
        assert get_single_image_results(list(rng.permutation(gt)), list(rng.permutation(pred)), 0.3) == r


def test_avg_precision_hand_worked_includes_all_boxes_threshold():
    gts = {"a": [box(0, 0)], "b": [box(0, 0)]}
    preds = {
        "a": {"boxes": [box(0, 0), box(50, 50)], "scores": [0.9, 0.8]},
        "b": {"boxes": [box(0, 0)], "scores": [0.7]},
    }
    res = get_avg_precision_at_iou(gts, preds, 0.5)
    np.testing.assert_allclose(res["model_thrs"], [0.9, 0.8, 0.7])
    np.testing.assert_allclose(res["precisions"], [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(res["recalls"], [0.5, 0.5, 1.0])
    # r = 0..0.5 -> 1 (6 levels), r = 0.6..1 -> 2/3 only reachable with "all boxes" (5 levels)
    assert res["avg_prec"] == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_iou_matching_differs_from_score_ranking():
    # A (high score) overlaps G1 and G2; B (lower score) overlaps G1 best. Matching by IoU gives
    # B-G1 and A-G2: 2 TP. The devkit (score order, best GT each) gives A-G1 and B -> FP.
    from metrics.voc import voc_evaluate

    g1, g2 = [0, 0, 99, 99], [30, 0, 129, 99]
    a, b = [14, 0, 113, 99], [0, 0, 99, 94]  # IoU(a,g1)=.752 > IoU(a,g2)=.722; IoU(b,g1)=.949
    single = get_single_image_results([g1, g2], [a, b], 0.5)
    assert single["true_pos"] == 2
    flat = FlatDetections.from_lists(
        [{"boxes": np.array([a, b], float), "scores": np.array([0.9, 0.8]), "labels": np.array([1, 1])}],
        [{"boxes": np.array([g1, g2], float), "labels": np.array([1, 1])}],
    )
    voc = voc_evaluate(flat)[1]
    assert voc.tp.tolist() == [1, 1] and voc.fp.tolist() == [0, 1]
    lec = lecture_evaluate(flat)[1]
    np.testing.assert_allclose(lec["recalls"], [0.5, 1.0])


def naive_curve(gts, preds, thr, plus_one=False):
    """The slides' procedure literally: for every distinct score, keep score >= p in every image,
    rematch with the reference's matching (each image's boxes sorted by ascending score, as the
    reference sorts them), sum over images."""
    scores = sorted({s for p in preds.values() for s in p["scores"]}, reverse=True)
    P, R = [], []
    for level in scores:
        results = {}
        for k in set(gts) | set(preds):
            p = preds.get(k, {"boxes": [], "scores": []})
            order = np.argsort(p["scores"], kind="stable")
            keep = [p["boxes"][i] for i in order if p["scores"][i] >= level]
            results[k] = reference_single_image(gts.get(k, []), keep, thr, plus_one)
        pr, rc = calc_precision_recall(results)
        P.append(pr)
        R.append(rc)
    return np.array(scores), np.array(P), np.array(R)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("convention", ["continuous", "inclusive"])
def test_incremental_curve_equals_literal_rematching(seed, convention):
    rng = np.random.default_rng(seed)
    gts, preds = {}, {}
    for i in range(12):
        g = []
        for _ in range(rng.integers(0, 5)):
            x, y = rng.integers(0, 60, 2)
            g.append([x, y, x + rng.integers(5, 30), y + rng.integers(5, 30)])
        gts[i] = g
        boxes, scores = [], []
        for gb in g:  # jittered copies (several per GT), some overlapping two GT
            for _ in range(rng.integers(0, 3)):
                j = rng.integers(-4, 5, 4)
                boxes.append(
                    [
                        gb[0] + j[0],
                        gb[1] + j[1],
                        max(gb[2] + j[2], gb[0] + j[0] + 1),
                        max(gb[3] + j[3], gb[1] + j[1] + 1),
                    ]
                )
                scores.append(float(np.round(rng.random(), 1)))  # ties
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(0, 60, 2)
            boxes.append([x, y, x + 10, y + 10])
            scores.append(float(np.round(rng.random(), 1)))
        if boxes:
            preds[i] = {"boxes": boxes, "scores": scores}
    thrs, P, R = naive_curve(gts, preds, 0.5, plus_one=convention == "inclusive")
    res = get_avg_precision_at_iou(gts, preds, 0.5, convention)
    np.testing.assert_array_equal(res["model_thrs"], thrs)
    np.testing.assert_allclose(res["precisions"], P, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["recalls"], R, rtol=0, atol=1e-12)
    expected = sum((max([p for p, r in zip(P, R) if r >= k / 10], default=0.0)) for k in range(11)) / 11
    assert res["avg_prec"] == pytest.approx(expected, abs=1e-12)


def test_per_class_mean_skips_classes_without_gt_and_ignores_crowd():
    flat = FlatDetections.from_lists(
        [
            {
                "boxes": np.array([box(0, 0), box(0, 0), box(40, 40)], float),
                "scores": np.array([0.9, 0.8, 0.7]),
                "labels": np.array([1, 2, 3]),
            }
        ],
        [
            {
                "boxes": np.array([box(0, 0), box(0, 0), box(40, 40)], float),
                "labels": np.array([1, 2, 1]),
                "iscrowd": np.array([0, 1, 0]),
                "difficult": np.array([0, 0, 1]),
            }
        ],
    )
    res = lecture_evaluate(flat)
    assert res[1]["num_gt"] == 2  # the difficult GT counts
    assert res[2]["num_gt"] == 0  # the crowd GT is left out
    assert res[1]["avg_prec"] == pytest.approx(6 / 11)  # recall 0.5 at precision 1
    assert lecture_map(res) == pytest.approx(6 / 11)  # classes 2 and 3 have no GT


def test_curve_independent_of_prediction_order_with_distinct_scores():
    # equal IoUs inside the curve go to the higher score (the reference sorts by score first)
    gts = {0: [[40, 0, 50, 10], [40, 20, 50, 30]]}
    boxes = [[40, 5, 50, 25], [10, 5, 50, 10], [41, 21, 50, 30]]
    scores = [0.9, 0.8, 0.3]
    res = get_avg_precision_at_iou(gts, {0: {"boxes": boxes, "scores": scores}}, 0.1)
    rev = get_avg_precision_at_iou(gts, {0: {"boxes": boxes[::-1], "scores": scores[::-1]}}, 0.1)
    for k in ("precisions", "recalls", "model_thrs"):
        np.testing.assert_array_equal(res[k], rev[k])
    assert res["avg_prec"] == rev["avg_prec"]
    thrs, P, R = naive_curve(gts, {0: {"boxes": boxes, "scores": scores}}, 0.1)
    np.testing.assert_array_equal(res["precisions"], P)
    np.testing.assert_array_equal(res["recalls"], R)
