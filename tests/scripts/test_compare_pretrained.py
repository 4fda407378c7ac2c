"""experiments/compare/coco_pretrained.yaml as a smoke test on the real COCO fixture: every torchvision model
evaluated without training, from random-weight files placed in a temporary torch.hub cache (no download)."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from models.parts import torchvision_weights as tw

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path("/work/shared/data/real/coco")


@pytest.mark.slow
@pytest.mark.skipif(not FIXTURE.exists(), reason="the real COCO fixture is not available")
def test_coco_pretrained_spec_evaluates_every_model(tmp_path, monkeypatch):
    from scripts.compare import main
    from scripts.coco_voc_subset import voc_subset

    def fail(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for builder in tw.PRETRAINED_BUILDERS.values():
        weights = tw.resolve(builder, "DEFAULT")
        extra = {"aux_loss": True} if builder in ("fcn_resnet50", "deeplabv3_resnet50") else {}
        net = torchvision.models.get_model(
            builder, weights=None, weights_backbone=None, num_classes=len(weights.meta["categories"]), **extra
        )
        tw.weights_path(weights).parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), tw.weights_path(weights))
    data = tmp_path / "coco"
    shutil.copytree(FIXTURE, data)
    voc_subset(data / "annotations/instances_val2017.json", data / "annotations/instances_val2017_voc.json")

    spec = yaml.safe_load((REPO / "experiments/compare/coco_pretrained.yaml").read_text())
    spec.update(latency_images=1, latency_warmup=0, example_images=1, eval_images=2)
    spec["published"] = str(REPO / spec["published"])
    for entry in spec["models"]:
        entry["config"] = str(REPO / entry["config"])
        overrides = entry["overrides"]
        for key, value in list(overrides.items()):
            if isinstance(value, str):
                overrides[key] = value.replace("data/coco", str(data))
        init = overrides["model"]["init_args"]
        if "eval_size" in init:
            init["eval_size"] = 96
        elif "SSD" not in overrides["model"]["class_path"]:  # SSD300 always resizes to 300 x 300
            init["builder_kwargs"] = {"min_size": 96, "max_size": 128}
    spec["overrides"] = {
        "data.init_args.train_annotations": str(data / "annotations/instances_val2017.json"),
        "data.init_args.val_annotations": str(data / "annotations/instances_val2017.json"),
        "data.init_args.train_images": str(data / "val2017"),
        "data.init_args.val_images": str(data / "val2017"),
        "data.init_args.num_workers": 0,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    rows = main(["--spec", str(path), "--out", str(tmp_path / "out")])
    by_run = {r["run"]: r for r in rows}
    assert set(by_run) == {e["run"] for e in spec["models"]}
    for run, row in by_run.items():
        assert row["status"] == "ok", (run, row.get("error"))
        assert row["train_s"] == 0.0 and row["eval_images"] == 2
    for run in ("faster_rcnn_torchvision", "retinanet_torchvision", "ssd_torchvision", "fcos_torchvision"):
        assert 0.0 <= by_run[run]["coco/AP"] <= 1.0
    assert "coco_segm/AP" in by_run["mask_rcnn_torchvision"]
    assert 0.0 <= by_run["deeplabv3_torchvision"]["mean_iou"] <= 1.0
    md = (tmp_path / "out" / "results.md").read_text()
    figures = ("box AP 37.0", "box AP 36.4", "box AP 25.1", "box AP 39.2", "mask AP 34.6", "mIoU 60.5", "mIoU 66.4")
    for figure in figures:
        assert figure in md
