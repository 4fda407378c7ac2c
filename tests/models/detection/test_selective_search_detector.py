"""What R-CNN and Fast R-CNN share through SelectiveSearchDetector: the search built from the proposal
arguments, where its cache goes, the proposal count, and training on Selective Search proposals."""

import sys
from pathlib import Path

import pytest
import torch

from models.detection.fast_rcnn import FastRCNN
from models.detection.rcnn import RCNN
from models.detection.selective_search_detector import SelectiveSearchDetector

sys.path.insert(0, str(Path(__file__).parent))
from test_fast_rcnn import K, batch  # noqa: E402  (the same in-memory shapes images)

SMALL = {RCNN: dict(crop_size=32, representation_size=64), FastRCNN: dict(representation_size=64)}
MODELS = pytest.mark.parametrize("cls", [RCNN, FastRCNN], ids=["rcnn", "fast_rcnn"])


def small_model(cls, tmp_path, **kwargs) -> SelectiveSearchDetector:
    torch.manual_seed(0)
    return cls(num_classes=K, **{"proposal_cache_dir": str(tmp_path / "ss"), **SMALL[cls], **kwargs})


@MODELS
def test_proposal_arguments_build_the_search(cls, tmp_path):
    model = small_model(
        cls,
        tmp_path,
        proposal_mode="quality",
        max_proposals=300,
        min_proposal_size=8,
        precompute_proposals=False,
        proposal_workers=3,
    )
    search = model.selective_search
    assert (search.mode, search.max_proposals, search.min_size) == ("quality", 300, 8.0)
    assert search.cache_dir == tmp_path / "ss"
    assert (model.precompute_proposals, model.proposal_workers) == (False, 3)
    assert (model.hparams.proposal_mode, model.hparams.max_proposals) == ("quality", 300)  # saved like every argument


@MODELS
def test_the_cache_goes_beside_the_data(cls, tmp_path):
    data = tmp_path / "data"
    trainer = type("Trainer", (), {"datamodule": type("DM", (), {"root": str(data)})()})()
    given = small_model(cls, tmp_path, precompute_proposals=False)
    given._trainer = trainer
    given.setup("fit")
    assert given.selective_search.cache_dir == tmp_path / "ss"  # the given folder wins over the DataModule's
    beside = cls(num_classes=K, precompute_proposals=False, **SMALL[cls])
    assert beside.selective_search.cache_dir != data / ".cache" / "selective_search"  # placed at setup
    beside._trainer = trainer
    beside.setup("fit")
    assert beside.selective_search.cache_dir == data / ".cache" / "selective_search"  # beside the DataModule's root


@MODELS
def test_num_proposals_is_the_mean_over_evaluated_images(cls, tmp_path):
    model, other = small_model(cls, tmp_path), small_model(cls, tmp_path)
    images, targets = batch((1, 2))
    given = [
        torch.tensor([[10.0, 10.0, 60.0, 70.0], [0.0, 0.0, 30.0, 30.0], [5.0, 5.0, 50.0, 50.0]]),
        torch.tensor([[20.0, 20.0, 90.0, 90.0]]),
    ]
    model.train()(images, targets, given)  # training regions are not counted
    model.eval()
    with torch.no_grad():
        model(images, proposals=given)
        model(images[:1], proposals=given[:1])
    assert (model.proposals_seen, model.images_seen) == (7, 3) and model.num_proposals == pytest.approx(7 / 3)
    assert (other.proposals_seen, other.images_seen, other.num_proposals) == (0, 0, 0.0)  # each model's own
    model.reset_proposal_count()  # the comparison's evaluation counts its own images only
    with torch.no_grad():
        model(images[:1], proposals=given[:1])
    assert (model.proposals_seen, model.images_seen) == (3, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls, options",
    [(RCNN, dict(crop_size=32, classifier="svm")), (FastRCNN, dict(min_size=64, max_size=64))],
    ids=["rcnn", "fast_rcnn"],
)
def test_trains_and_validates_through_lightning(cls, options, tiny_shapes_dataset, tiny_shapes_params):
    import pytorch_lightning as pl

    from datamodules import ShapesDataModule

    params = dict(tiny_shapes_params)
    dm = ShapesDataModule(
        root=str(tiny_shapes_dataset), image_size=params.pop("size"), batch_size=4, progress=False, **params
    )
    torch.manual_seed(0)
    model = cls(num_classes=dm.num_classes, class_names=list(dm.class_names), representation_size=64, **options)
    trainer = pl.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, dm)
    # The train and val splits were segmented before training, into the cache beside the data.
    assert model.selective_search.cache_dir == tiny_shapes_dataset / ".cache" / "selective_search"
    assert len(list(model.selective_search.cache_dir.rglob("*.npy"))) == params["num_train"] + params["num_val"]
    assert "voc07/mAP" in model.last_val_metrics
