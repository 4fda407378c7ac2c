#!/usr/bin/env python
"""Run a trained model on your own images.

    python scripts/predict.py --ckpt runs/fcos_shapes/checkpoints/last.ckpt photos/ --out predictions/
    python scripts/predict.py --ckpt RUN.ckpt a.jpg b.png --out out/ --image-ids image_info_test-dev2017.json

Writes into ``--out``:

* ``<stem>.jpg``: each image with its boxes (class name and score; ``--score-threshold``), instance
  masks or semantic classes drawn;
* ``coco_instances_results.json`` (detectors, instance segmenters): every prediction as COCO results
  ``{image_id, category_id, bbox [x, y, w, h], score[, segmentation RLE]}`` in original pixels;
* ``label_maps/<stem>.png`` (semantic segmenters): VOC palette label maps, pixel value = class;
* ``image_ids.json``: the image id given to each file (from ``--image-ids``, else 1..N in file order).

The model class comes from the checkpoint (``model_class``, saved by every model of the repo, or
LightningCLI's ``_class_path``), or ``--model`` (a name of :mod:`models.registry`); its arguments from
the checkpoint's hyper-parameters. Images are read and transformed as the DataModules do for
evaluation (``load_rgb`` + the checkpoint's ``eval_augment``). Category ids: the checkpoint's
``label_to_category_id`` (saved when the model was trained on a COCO DataModule), ``--label-map``
(the run's ``label_map.json``), else the label itself (VOC, shapes).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class PredictError(Exception):
    """Bad input (checkpoint, image, option); the message names it."""


def _import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise PredictError(f"cannot import model class {path!r} ({exc})") from None
    return obj


def model_class(checkpoint: dict[str, Any], name: str | None = None) -> type:
    """The LightningModule class of a checkpoint: ``name`` from the registry, else what the checkpoint says."""
    from models.registry import get_model

    if name:
        try:
            return get_model(name).cls
        except KeyError as exc:
            raise PredictError(str(exc.args[0])) from None
    path = checkpoint.get("model_class") or checkpoint.get("hyper_parameters", {}).get("_class_path")
    if not path:
        raise PredictError("the checkpoint does not name its model class; pass --model NAME (see models/registry.py)")
    return _import_class(str(path))


def load_model(ckpt: Path, name: str | None = None, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode on device, checkpoint dict)``. Pretrained-backbone arguments are switched off
    (the checkpoint holds every weight), so nothing is downloaded or read from a dataset."""
    if not ckpt.is_file():
        raise PredictError(f"{ckpt}: checkpoint not found")
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a broken file
        raise PredictError(f"{ckpt}: not a readable checkpoint ({exc})") from None
    cls = model_class(checkpoint, name)
    overrides = {"weights": None} if "weights" in checkpoint.get("hyper_parameters", {}) else {}
    model = cls.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False, **overrides)
    return model.to(device).eval(), checkpoint


def find_images(inputs: Sequence[Path]) -> list[Path]:
    """The image files named, and those directly inside the folders named (sorted)."""
    found: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise PredictError(f"{p}: no such file or folder")
    if not found:
        raise PredictError(f"no images in {', '.join(map(str, inputs))} (suffixes {', '.join(IMAGE_SUFFIXES)})")
    stems = [f.stem for f in found]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise PredictError(
            f"several inputs are named {dupes[0]!r} (outputs are named by file stem); rename or split them"
        )
    return found


def image_ids(files: Sequence[Path], coco_json: Path | None) -> dict[str, int]:
    """File name -> image id: from a COCO file's ``images`` (matched by base name), else 1..N."""
    if coco_json is None:
        return {f.name: i for i, f in enumerate(files, start=1)}
    try:
        images = json.loads(coco_json.read_text())["images"]
        by_name = {Path(im["file_name"]).name: int(im["id"]) for im in images}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PredictError(f"{coco_json}: cannot read its images' file_name and id ({exc})") from None
    missing = [f.name for f in files if f.name not in by_name]
    if missing:
        raise PredictError(f"{coco_json}: no image named {missing[0]!r} ({len(missing)} of {len(files)} missing)")
    return {f.name: by_name[f.name] for f in files}


def read_label_map(path: Path) -> dict[int, int]:
    """``label_to_category_id`` of a ``label_map.json`` (``COCODataModule.save_label_map``)."""
    try:
        doc = json.loads(path.read_text())
        return {int(k): int(v) for k, v in doc["label_to_category_id"].items()}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise PredictError(f"{path}: not a label_map.json with label_to_category_id ({exc})") from None


def eval_transform(checkpoint: dict[str, Any]) -> Any:
    """The albumentations pipeline of the checkpoint's DataModule ``eval_augment`` (``None`` if empty)."""
    from datamodules.transforms import build_transform

    return build_transform(list(checkpoint.get("datamodule_hyper_parameters", {}).get("eval_augment") or []))


def load_input(path: Path, transform: Any) -> tuple[np.ndarray, torch.Tensor]:
    """``(original H x W x 3 uint8, model input 3 x h x w float in [0, 1])``, as the eval dataloaders make them."""
    from datamodules.base import _to_image_tensor
    from datamodules.checks import DatasetError, load_rgb
    from datamodules.transforms import apply_transform

    try:
        image = load_rgb(path)
    except DatasetError as exc:
        raise PredictError(str(exc)) from None
    model_input = image
    if transform is not None:
        model_input = apply_transform(transform, image, np.zeros((0, 4), np.float32), {})[0]
    return image, _to_image_tensor(model_input)


@torch.no_grad()
def predict(
    model: Any,
    files: Sequence[Path],
    out: Path,
    ids: dict[str, int],
    transform: Any = None,
    label_to_category_id: dict[int, int] | None = None,
    score_threshold: float = 0.3,
    draw: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every file and write the outputs into ``out``; returns a summary (what was written)."""
    from tqdm import tqdm

    from models.prediction_writer import (
        LABEL_MAP_DIR,
        RESULTS_FILE,
        coco_results,
        draw_detections,
        draw_semantic,
        rescale_prediction,
        save_label_map,
        save_rgb,
        write_json,
    )

    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    semantic = getattr(model, "task", "") == "semantic"
    names = list(getattr(model, "class_names", []))
    results: list[dict[str, Any]] = []
    written: list[Path] = []
    for path in tqdm(files, desc="predict", disable=not progress):
        image, x = load_input(path, transform)
        size, orig = tuple(x.shape[-2:]), image.shape[:2]
        if semantic:
            labels = model(x[None].to(device)).argmax(1)[0].to(torch.uint8)
            if size != orig:
                labels = torch.nn.functional.interpolate(labels[None, None].float(), size=orig, mode="nearest")[0, 0]
            label_map = labels.to(torch.uint8).cpu().numpy()
            written.append(save_label_map(out / LABEL_MAP_DIR / f"{path.stem}.png", label_map))
            drawn = draw_semantic(image, label_map) if draw else None
        else:
            pred = rescale_prediction(model([x.to(device)])[0], size, orig)
            results += coco_results(pred, ids[path.name], label_to_category_id)
            drawn = draw_detections(image, pred, names, score_threshold) if draw else None
        if drawn is not None:
            written.append(save_rgb(out / f"{path.stem}.jpg", drawn))
    write_json(out / "image_ids.json", ids)
    summary: dict[str, Any] = {"images": len(files), "written": [str(p) for p in written]}
    if not semantic:
        write_json(out / RESULTS_FILE, results)
        summary["results"] = str(out / RESULTS_FILE)
        summary["detections"] = len(results)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="image files and / or folders of images")
    parser.add_argument("--ckpt", type=Path, required=True, help="a checkpoint of scripts/train.py (or any Trainer)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", default=None, help="registry name of the model class, if the checkpoint lacks it")
    parser.add_argument(
        "--image-ids",
        type=Path,
        default=None,
        help="COCO JSON whose images give the ids (e.g. image_info_test-dev2017.json)",
    )
    parser.add_argument("--label-map", type=Path, default=None, help="label_map.json: label -> COCO category id")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="least score of a drawn box")
    parser.add_argument("--no-draw", action="store_true", help="write only the results / label maps")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        files = find_images(args.inputs)
        ids = image_ids(files, args.image_ids)
        model, checkpoint = load_model(args.ckpt, args.model, device)
        mapping = read_label_map(args.label_map) if args.label_map else checkpoint.get("label_to_category_id")
        summary = predict(
            model,
            files,
            args.out,
            ids,
            eval_transform(checkpoint),
            mapping,
            args.score_threshold,
            not args.no_draw,
            not args.no_progress,
        )
    except PredictError as exc:
        print(f"predict.py: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"predict.py: {summary['images']} image(s) -> {args.out}"
        + (f" ({summary['detections']} detections in {summary['results']})" if "results" in summary else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
