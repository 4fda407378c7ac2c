"""Predicted label maps as VOC palette PNGs, and colour overlays."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from datamodules.palette import read_label_png, voc_palette
from models.segmentation.io import overlay_mask, save_semantic_predictions


class FixedLogits(nn.Module):
    """Logits whose arg-max is a known label map per image (the mean of the image's first channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        labels = (images[:, 0] * 10).long()  # 0..10 -> 11 classes
        return nn.functional.one_hot(labels, 11).permute(0, 3, 1, 2).float() + self.dummy


def test_save_semantic_predictions_writes_argmax_as_palette_pngs(tmp_path):
    torch.manual_seed(0)
    images = torch.randint(0, 11, (5, 3, 6, 7)).float() / 10
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, torch.zeros(5, 6, 7).long()), batch_size=2
    )
    model = FixedLogits().train()
    paths = save_semantic_predictions(model, loader, tmp_path / "pred", names=[f"img_{i}" for i in range(5)])
    assert [p.name for p in paths] == [f"img_{i}.png" for i in range(5)]
    assert model.training  # mode restored
    for path, image in zip(paths, images):
        assert np.array_equal(read_label_png(path), (image[0] * 10).round().numpy().astype(np.uint8))
        with Image.open(path) as png:
            assert png.mode == "P" and png.getpalette()[:6] == voc_palette(2)


def test_save_semantic_predictions_names_by_index_and_checks_count(tmp_path):
    loader = [torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4)]  # a loader of bare image batches
    paths = save_semantic_predictions(FixedLogits(), loader, tmp_path)
    assert [p.name for p in paths] == ["000000.png", "000001.png", "000002.png"]
    with pytest.raises(ValueError, match="2 names for more"):
        save_semantic_predictions(FixedLogits(), loader, tmp_path, names=["a", "b"])
    with pytest.raises(ValueError, match="4 names for 3"):
        save_semantic_predictions(FixedLogits(), loader, tmp_path, names=["a", "b", "c", "d"])


def test_overlay_mask_blends_label_colours_and_keeps_background():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1, 2], [0, 0, 255]])
    out = overlay_mask(image, mask, alpha=0.5)
    colours = np.asarray(voc_palette(256)).reshape(256, 3)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert (out[mask == 0] == 100).all()
    for label, (y, x) in [(1, (0, 1)), (2, (0, 2)), (255, (1, 2))]:
        assert np.array_equal(out[y, x], np.round(0.5 * 100 + 0.5 * colours[label]).astype(np.uint8))


def test_overlay_mask_takes_tensor_images_in_unit_range():
    image = torch.full((3, 4, 4), 1.0)
    out = overlay_mask(image, torch.ones(4, 4, dtype=torch.long), alpha=1.0)
    assert (out == np.asarray(voc_palette(2)[3:6], dtype=np.uint8)).all()
    with pytest.raises(ValueError, match="same size"):
        overlay_mask(image, torch.ones(3, 4, dtype=torch.long))


def test_saved_predictions_score_as_the_model_with_evaluate_script(tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    import shutil

    from datamodules import ShapesDataModule
    from metrics import SegmentationMetrics
    from models.segmentation.fcn import FCN
    from scripts.evaluate import semantic_metrics

    params = tiny_shapes_params
    data = ShapesDataModule(
        root=str(tiny_shapes_dataset),
        task="semantic",
        seed=params["seed"],
        num_train=params["num_train"],
        num_val=params["num_val"],
        image_size=params["size"],
        batch_size=3,
        progress=False,
    )
    data.setup("validate")
    loader = data.val_dataloader()
    torch.manual_seed(0)
    model = FCN(channels=(4, 8, 8, 16, 16), num_classes=data.num_classes).eval()
    paths = save_semantic_predictions(model, loader, tmp_path / "pred")
    assert sorted(path.stem for path in paths) == [f"val_{i:06d}" for i in range(params["num_val"])]

    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for path in paths:  # the val split's ground truth only
        shutil.copy(tiny_shapes_dataset / "SegmentationClass" / path.name, gt_dir)
    direct = SegmentationMetrics(num_classes=data.num_classes + 1)
    with torch.no_grad():
        for images, masks in loader:
            direct.update(model(images), masks)
    expected = direct.compute()
    scored = semantic_metrics(gt_dir, tmp_path / "pred", data.num_classes + 1)
    assert scored["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-12)
    assert scored["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-12)
