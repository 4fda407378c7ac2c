import numpy as np
import pytest

from metrics.boxes import box_iou_numpy
from metrics.data import FlatDetections
from metrics.voc import DEVKIT_POINTS, TENTHS, matlab_colon, voc_ap, voc_evaluate, voc_map
from metrics_testutils import devkit_reference


def box(x, y, s=9):
    return [x, y, x + s, y + s]


def flat_one_class(gts, dets):
    """gts: per image {"boxes", "difficult"}; dets: (image, score, box)."""
    preds = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)} for _ in gts]
    for img in range(len(gts)):
        mine = [d for d in dets if d[0] == img]
        preds[img] = {
            "boxes": np.array([d[2] for d in mine], float).reshape(-1, 4),
            "scores": np.array([d[1] for d in mine], float),
            "labels": np.ones(len(mine), np.int64),
        }
    targets = [
        {
            "boxes": np.array(g["boxes"], float).reshape(-1, 4),
            "labels": np.ones(len(g["boxes"]), np.int64),
            "difficult": np.array(g["difficult"], bool),
        }
        for g in gts
    ]
    return FlatDetections.from_lists(preds, targets)


def test_hand_worked_difficult_duplicate():
    gts = [
        {"boxes": [box(0, 0), box(50, 50)], "difficult": [False, True]},
        {"boxes": [box(0, 0)], "difficult": [False]},
    ]
    dets = [
        (0, 0.9, box(0, 0)),  # TP
        (0, 0.8, box(1, 0)),  # duplicate of the same GT -> FP
        (0, 0.7, box(50, 50)),  # difficult GT -> ignored
        (1, 0.6, box(0, 1)),
    ]  # TP
    r = voc_evaluate(flat_one_class(gts, dets))[1]
    assert r.npos == 2
    assert r.tp.tolist() == [1, 1, 2] and r.fp.tolist() == [0, 1, 1]
    np.testing.assert_allclose(r.recall, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(r.precision, [1.0, 0.5, 2 / 3])
    assert r.ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # area under the envelope
    assert r.ap07 == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_crowd_is_ignored_like_difficult():
    flat = FlatDetections.from_lists(
        [
            {
                "boxes": np.array([box(0, 0), box(50, 50)], float),
                "scores": np.array([0.9, 0.8]),
                "labels": np.array([1, 1]),
            }
        ],
        [{"boxes": np.array([box(0, 0), box(50, 50)], float), "labels": np.array([1, 1]), "iscrowd": np.array([0, 1])}],
    )
    r = voc_evaluate(flat)[1]
    assert r.npos == 1 and r.tp.tolist() == [1] and r.fp.tolist() == [0]
    assert r.ap == pytest.approx(1.0)


def test_tied_scores_keep_input_order():
    gts = [{"boxes": [], "difficult": []}, {"boxes": [box(0, 0)], "difficult": [False]}]
    fp_first = [(0, 0.5, box(0, 0)), (1, 0.5, box(0, 0))]
    r = voc_evaluate(flat_one_class(gts, fp_first))[1]
    assert r.tp.tolist() == [0, 1]
    assert r.ap == pytest.approx(0.5)
    # same detections, other image order: the TP comes first
    gts_swapped = [gts[1], gts[0]]
    tp_first = [(0, 0.5, box(0, 0)), (1, 0.5, box(0, 0))]
    assert voc_evaluate(flat_one_class(gts_swapped, tp_first))[1].ap == pytest.approx(1.0)


def test_matlab_colon_grid():
    # 0:0.1:1 in MATLAB: first half a + k*d, second half b - k*d
    g = matlab_colon(0.0, 0.1, 1.0)
    assert len(g) == 11 and g[0] == 0.0 and g[-1] == 1.0
    assert g[3] == 0.30000000000000004 and g[3] != 0.3
    assert g[6] == 0.6 and g[7] == 0.7 and g[8] == 0.8 and g[9] == 0.9 and g[5] == 0.5
    np.testing.assert_array_equal(DEVKIT_POINTS, g)
    arange = np.arange(0, 1.1, 0.1)  # py-faster-rcnn / Detectron2: shares 0.3 but moves 0.6 and 0.7
    assert arange[3] == g[3] and arange[6] != 0.6 and arange[7] != 0.7
    np.testing.assert_array_equal(TENTHS, [k / 10 for k in range(11)])
    np.testing.assert_array_equal(matlab_colon(1.0, 0.5, 3.0), [1.0, 1.5, 2.0, 2.5, 3.0])
    assert len(matlab_colon(1.0, 1.0, 0.0)) == 0


def test_eleven_point_ap_devkit_grid_by_default():
    # issue 13.8: 10 GT, detections TP, TP, TP, FP, TP -> recall reaches exactly 3/10
    gts = [{"boxes": [box(20 * k, 0) for k in range(10)], "difficult": [False] * 10}]
    dets = [
        (0, 0.9, box(0, 0)),
        (0, 0.8, box(20, 0)),
        (0, 0.7, box(40, 0)),
        (0, 0.6, box(500, 500)),
        (0, 0.5, box(60, 0)),
    ]
    flat = flat_one_class(gts, dets)
    r = voc_evaluate(flat)[1]
    assert r.ap07 == pytest.approx(4.6 / 11, abs=1e-12) and round(r.ap07, 6) == 0.418182
    tenths = voc_evaluate(flat, eleven_point_grid="tenths")[1]
    assert tenths.ap07 == pytest.approx(4.8 / 11, abs=1e-12) and round(tenths.ap07, 6) == 0.436364
    assert voc_ap(r.recall, r.precision, True) == r.ap07
    assert voc_ap(r.recall, r.precision, True, "tenths") == tenths.ap07
    with pytest.raises(ValueError, match="eleven_point_grid"):
        voc_evaluate(flat, eleven_point_grid="numpy")


def test_iou_exactly_half_counts_and_conventions():
    # continuous (the repo's boxes): [0,0,10,10] vs [0,0,10,5] -> 50/100 = 0.5 -> TP (>= 0.5)
    gts = [{"boxes": [[0, 0, 10, 10]], "difficult": [False]}]
    assert voc_evaluate(flat_one_class(gts, [(0, 0.9, [0, 0, 10, 5])]))[1].tp.tolist() == [1]
    # devkit pixel indices: [0,0,9,9] vs [0,0,9,4] -> 50/100 with the +1; continuous reads 36/81
    gts = [{"boxes": [box(0, 0)], "difficult": [False]}]
    flat = flat_one_class(gts, [(0, 0.9, [0, 0, 9, 4])])
    assert voc_evaluate(flat, convention="inclusive")[1].tp.tolist() == [1]
    assert voc_evaluate(flat)[1].tp.tolist() == [0]


def test_shifted_8x8_box_iou_and_match():
    # issue 13.6: an 8x8 box shifted by (1, 2): continuous IoU 42/86 = 0.488, not the +1 value 56/106
    a, b = [0, 0, 8, 8], [1, 2, 9, 10]
    assert box_iou_numpy([a], [b])[0, 0] == pytest.approx(42 / 86)
    assert box_iou_numpy([a], [b], "inclusive")[0, 0] == pytest.approx(56 / 106)
    flat = flat_one_class([{"boxes": [a], "difficult": [False]}], [(0, 0.9, b)])
    assert voc_evaluate(flat)[1].tp.tolist() == [0]  # 0.488 < 0.5: a false positive


def test_map_over_classes_with_gt_and_undefined_class():
    flat = FlatDetections.from_lists(
        [
            {
                "boxes": np.array([box(0, 0), box(30, 30)], float),
                "scores": np.array([0.9, 0.8]),
                "labels": np.array([1, 3]),
            }
        ],
        [{"boxes": np.array([box(0, 0), box(60, 60)], float), "labels": np.array([1, 2])}],
    )
    res = voc_evaluate(flat)
    assert res[1].ap == pytest.approx(1.0)
    assert res[2].ap == 0.0  # GT, no detection
    assert res[3].ap == -1.0 and res[3].npos == 0  # detection, no GT: undefined
    assert voc_map(res) == pytest.approx(0.5)
    assert voc_map(res, use_07_metric=True) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(8))
def test_matches_loop_devkit_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for img in range(10):
        boxes, diff = [], []
        for _ in range(rng.integers(0, 5)):
            x, y = rng.integers(0, 80, 2)
            boxes.append([x, y, x + rng.integers(4, 30), y + rng.integers(4, 30)])
            diff.append(bool(rng.random() < 0.2))
        gts.append({"boxes": boxes, "difficult": diff})
        for b in boxes:
            for _ in range(rng.integers(0, 3)):
                j = rng.integers(-3, 4, 4)
                dets.append(
                    (
                        img,
                        float(np.round(rng.random(), 1)),
                        [b[0] + j[0], b[1] + j[1], b[2] + j[2] + 3, b[3] + j[3] + 3],
                    )
                )
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(0, 80, 2)
            dets.append((img, float(np.round(rng.random(), 1)), [x, y, x + 12, y + 9]))
    # the flat layout orders detections by image; the reference must see the same input order
    dets.sort(key=lambda d: d[0])
    ap, ap11, npos = devkit_reference(gts, dets)
    if npos == 0:
        pytest.skip("no positive GT drawn")
    # the reference reads devkit pixel indices: devkit mode on them ...
    r = voc_evaluate(flat_one_class(gts, dets), convention="inclusive")[1]
    assert r.ap == pytest.approx(ap, abs=1e-12)
    assert r.ap07 == pytest.approx(ap11, abs=1e-12)
    # ... equals continuous mode on the converted boxes (x1 - 1, y1 - 1, x2, y2), exactly
    conv = lambda b: [b[0] - 1, b[1] - 1, b[2], b[3]]  # noqa: E731
    gts_c = [{"boxes": [conv(b) for b in g["boxes"]], "difficult": g["difficult"]} for g in gts]
    rc = voc_evaluate(flat_one_class(gts_c, [(i, sc, conv(b)) for i, sc, b in dets]))[1]
    assert rc.ap == r.ap and rc.ap07 == r.ap07
    np.testing.assert_array_equal(rc.tp, r.tp)
