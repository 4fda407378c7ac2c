import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "evaluate.py"
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def load_evaluate():
    """Import scripts/evaluate.py by path, for fast in-process checks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def pycoco(gt: dict, dt: list, iou_type: str) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = json.loads(json.dumps(gt))
        g.createIndex()
        ev = COCOeval(g, g.loadRes(json.loads(json.dumps(dt))), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(COCO_KEYS, ev.stats[:12].tolist()))


GT = {
    "images": [{"id": 7, "width": 100, "height": 80}, {"id": 3, "width": 100, "height": 80}],
    "categories": [{"id": 1, "name": "dog"}, {"id": 5, "name": "person"}, {"id": 9, "name": "zebra"}],
    "annotations": [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [60, 40, 20, 20], "area": 400, "iscrowd": 0, "difficult": 1},
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 4, "image_id": 3, "category_id": 5, "bbox": [50, 10, 30, 60], "area": 1800, "iscrowd": 0},
        {"id": 5, "image_id": 3, "category_id": 5, "bbox": [0, 50, 30, 30], "area": 900, "iscrowd": 1},
    ],
}
DT = [
    {"image_id": 7, "category_id": 1, "bbox": [10, 10, 30, 20], "score": 0.9},  # TP
    {"image_id": 7, "category_id": 1, "bbox": [11, 10, 30, 20], "score": 0.8},  # duplicate: FP
    {"image_id": 7, "category_id": 1, "bbox": [60, 40, 20, 20], "score": 0.7},  # difficult: ignored by VOC
    {"image_id": 3, "category_id": 1, "bbox": [0, 1, 40, 40], "score": 0.6},  # TP
    {"image_id": 3, "category_id": 5, "bbox": [0, 50, 30, 30], "score": 0.95},  # on crowd: ignored by VOC
]


def test_detection_bbox_json(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dt.json").write_text(json.dumps(DT))
    out = tmp_path / "out" / "metrics.json"
    r = run("detection", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"), "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "voc/mAP" in r.stdout  # the table
    m = json.loads(out.read_text())
    expected = {f"coco/{k}" for k in COCO_KEYS} | {"voc07/mAP", "voc/mAP", "lecture/mAP"}
    expected |= {f"{p}/AP/{n}" for p in ("voc07", "voc") for n in ("dog", "person", "zebra")}
    assert set(m) == expected
    ref = pycoco(GT, DT, "bbox")
    for k in COCO_KEYS:
        assert m[f"coco/{k}"] == pytest.approx(ref[k], abs=1e-6)
    # dog: ranked TP, FP, (ignored), TP with 2 positives -> rec .5 .5 1, prec 1 .5 2/3
    assert m["voc/AP/dog"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert m["voc07/AP/dog"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    # person: one positive, its only detection sits on the crowd region -> AP 0
    assert m["voc/AP/person"] == 0.0
    assert m["voc/AP/zebra"] == -1.0  # no GT: undefined
    assert m["voc/mAP"] == pytest.approx((0.5 + 0.5 * 2 / 3) / 2)
    # course evaluator: dog has 3 GT (difficult counts), person 1 (crowd left out);
    # dog thresholds .9/.8/.7/.6 -> (P, R) = (1, 1/3), (.5, 1/3), (2/3, 2/3), (3/4, 1)
    dog = (4 * 1 + 3 * 3 / 4 + 4 * 3 / 4) / 11
    assert m["lecture/mAP"] == pytest.approx((dog + 0.0) / 2)
    assert all(v == -1.0 or 0.0 <= v <= 1.0 for v in m.values())


def test_detection_segm(tmp_path):
    from pycocotools import mask as mask_utils

    gt = json.loads(json.dumps(GT))
    gt["annotations"] = gt["annotations"][2:4]
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    m1 = np.zeros((80, 100), np.uint8)
    m1[0:38, 0:40] = 1
    rle = mask_utils.encode(np.asfortranarray(m1))
    rle["counts"] = rle["counts"].decode()
    dt = [{"image_id": 3, "category_id": 1, "segmentation": rle, "score": 0.8}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    r = run(
        "detection",
        "--gt",
        str(tmp_path / "gt.json"),
        "--dt",
        str(tmp_path / "dt.json"),
        "--iou-type",
        "segm",
        "--json",
        str(tmp_path / "o.json"),
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "o.json").read_text())
    ref = pycoco(gt, dt, "segm")
    assert all(m[f"coco_segm/{k}"] == pytest.approx(ref[k], abs=1e-6) for k in COCO_KEYS)
    assert "coco/AP" not in m
    assert m["voc/AP/dog"] == pytest.approx(1.0)  # box from the mask, IoU 0.95


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda gt, dt: gt["annotations"][1].pop("bbox"), "gt.json: annotations[1].bbox"),
        (lambda gt, dt: gt["annotations"][0].update(image_id=99), "gt.json: annotations[0].image_id"),
        (lambda gt, dt: dt[2].update(score="high"), "dt.json: [2].score"),
        (lambda gt, dt: gt.pop("categories"), "gt.json: missing or non-list field 'categories'"),
    ],
)
def test_malformed_detection_files(tmp_path, mutate, needle):
    gt, dt = json.loads(json.dumps(GT)), json.loads(json.dumps(DT))
    mutate(gt, dt)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    ev = load_evaluate()
    with pytest.raises(ev.InputError, match=needle.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        ev.load_detection_inputs(tmp_path / "gt.json", tmp_path / "dt.json", "bbox")


def test_malformed_file_via_cli(tmp_path):
    (tmp_path / "gt.json").write_text("{not json")
    (tmp_path / "dt.json").write_text("[]")
    r = run("detection", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"))
    assert r.returncode == 2
    assert "gt.json" in r.stderr and "not valid JSON" in r.stderr


def _png(path: Path, arr: np.ndarray, palette: bool = True) -> None:
    from PIL import Image

    im = Image.fromarray(arr.astype(np.uint8), mode="L")
    if palette:
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


def test_semantic_folders(tmp_path):
    gt_dir, pr_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pr_dir.mkdir()
    g = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    p = np.array([[0, 1, 1, 1], [0, 2, 0, 0]])
    _png(gt_dir / "a.png", g)
    _png(pr_dir / "a.png", p, palette=False)
    _png(gt_dir / "b.png", np.zeros((3, 3)))
    _png(pr_dir / "b.png", np.zeros((3, 3)))
    out = tmp_path / "m.json"
    r = run("semantic", "--gt", str(gt_dir), "--pred", str(pr_dir), "--num-classes", "4", "--json", str(out))
    assert r.returncode == 0, r.stderr
    m = json.loads(out.read_text())
    assert set(m) == {
        "pixel_accuracy",
        "mean_pixel_accuracy",
        "mean_iou",
        "mean_dice",
        "iou/0",
        "iou/1",
        "iou/2",
        "iou/3",
    }
    # class 0: 12 GT px (3 in a, 9 in b), 11 right, 1 predicted 1; one class-2 px predicted 0
    # -> TP 11, FN 1, FP 1 -> IoU 11 / 13; the 255 pixel is ignored
    assert m["pixel_accuracy"] == pytest.approx(14 / 16)
    assert m["iou/0"] == pytest.approx(11 / 13)
    assert m["iou/1"] == pytest.approx(2 / 3)
    assert m["iou/2"] == pytest.approx(1 / 2)
    assert m["iou/3"] == -1.0
    assert m["mean_iou"] == pytest.approx((11 / 13 + 2 / 3 + 1 / 2) / 3)
    # size mismatch and missing file name the file
    _png(pr_dir / "b.png", np.zeros((3, 4)))
    r = run("semantic", "--gt", str(gt_dir), "--pred", str(pr_dir), "--num-classes", "4")
    assert r.returncode == 2 and "b.png" in r.stderr and "size" in r.stderr
    (pr_dir / "b.png").unlink()
    r = run("semantic", "--gt", str(gt_dir), "--pred", str(pr_dir), "--num-classes", "4")
    assert r.returncode == 2 and "missing prediction b.png" in r.stderr


def _write(tmp_path, gt, dt):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    return ["--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json")]


def _rle(m):
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def test_segm_size_ranges_use_mask_areas(tmp_path, capsys):
    # an unmatched L-shaped detection: mask area 357 (small) but box area 3600 (medium); the size
    # ranges must see the mask area, as pycocotools does for segm results
    h = w = 120
    g1, g2 = np.zeros((h, w)), np.zeros((h, w))
    g1[0:20, 0:20] = 1
    g2[70:120, 70:120] = 1
    fp = np.zeros((h, w))
    fp[0:60, 40:43] = 1
    fp[57:60, 40:100] = 1
    gt = {
        "images": [{"id": 1, "height": h, "width": w}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": _rle(m),
                "bbox": [float(v) for v in b],
                "area": float(m.sum()),
                "iscrowd": 0,
            }
            for k, (m, b) in enumerate(((g1, [0, 0, 20, 20]), (g2, [70, 70, 50, 50])))
        ],
    }
    dt = [
        {"image_id": 1, "category_id": 1, "segmentation": _rle(fp), "score": 0.9},
        {"image_id": 1, "category_id": 1, "segmentation": _rle(g1), "score": 0.5},
        {"image_id": 1, "category_id": 1, "segmentation": _rle(g2), "score": 0.6},
    ]
    ev = load_evaluate()
    args = ["detection", *_write(tmp_path, gt, dt), "--iou-type", "segm", "--json", str(tmp_path / "o.json")]
    assert ev.main(args) == 0
    m = json.loads((tmp_path / "o.json").read_text())
    ref = pycoco(gt, dt, "segm")
    for k in COCO_KEYS:
        assert m[f"coco_segm/{k}"] == pytest.approx(ref[k], abs=1e-12), k
    assert m["coco_segm/APs"] < 0.6 and m["coco_segm/APm"] == pytest.approx(1.0)  # the FP is small
    # results that carry a bbox get the same COCO numbers (the mask still decides the area)
    with_box = [{**d, "bbox": [0.0, 0.0, 1.0, 1.0]} for d in dt]
    assert (
        ev.main(
            ["detection", *_write(tmp_path, gt, with_box), "--iou-type", "segm", "--json", str(tmp_path / "o2.json")]
        )
        == 0
    )
    m2 = json.loads((tmp_path / "o2.json").read_text())
    assert all(m2[f"coco_segm/{k}"] == m[f"coco_segm/{k}"] for k in COCO_KEYS)


def test_boxes_are_continuous_for_voc_and_course(tmp_path):
    # COCO [0, 0, 8, 8] vs a detection shifted by (1, 2): IoU 42/86 = 0.488 < 0.5 (0.528 with a +1)
    gt = {
        "images": [{"id": 1, "width": 50, "height": 50}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 0}],
    }
    dt = [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 8, 8], "score": 0.9}]
    ev = load_evaluate()
    m = ev.detection_metrics(*ev.load_detection_inputs(*[Path(p) for p in _write(tmp_path, gt, dt)[1::2]], "bbox"))
    assert m["voc/mAP"] == 0.0 and m["voc07/mAP"] == 0.0 and m["lecture/mAP"] == 0.0
    assert m["coco/AP50"] == 0.0


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda gt, dt: dt[0].update(category_id=999), "dt.json: [0].category_id: 999 is not in the GT categories"),
        (lambda gt, dt: gt["annotations"][3].update(id=1), "gt.json: annotations[3].id: duplicate annotation id 1"),
        (lambda gt, dt: gt["images"][1].update(id=7), "gt.json: images[1].id: duplicate image id 7"),
    ],
)
def test_inconsistent_ids_are_refused(tmp_path, capsys, mutate, needle):
    gt, dt = json.loads(json.dumps(GT)), json.loads(json.dumps(DT))
    mutate(gt, dt)
    ev = load_evaluate()
    assert ev.main(["detection", *_write(tmp_path, gt, dt)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_unwritable_json_fails_before_the_work(tmp_path, capsys, where):
    ev = load_evaluate()
    args = _write(tmp_path, GT, DT)
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "d").mkdir()
    out = tmp_path / "f.txt" / "m.json" if where == "under_a_file" else tmp_path / "d"
    assert ev.main(["detection", *args, "--json", str(out)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""  # nothing computed or printed
    assert cap.err.startswith(f"evaluate.py: error: {out}: cannot write the metrics") and cap.err.count("\n") == 1
    # a writable path in a new folder: the check leaves no file behind when the work then fails
    new = tmp_path / "new" / "m.json"
    bad = json.loads(json.dumps(DT))
    bad[0]["score"] = "x"
    assert ev.main(["detection", *_write(tmp_path, GT, bad), "--json", str(new)]) == 2
    assert not new.exists()
