import json

import pytest
import torch

from datamodules.shapes_generator import generate_shapes_dataset
from models.parts import pretrain
from models.parts.pretrain import (
    CropClassifier,
    PretrainRecipe,
    cache_path,
    load_pretrained_body,
    pretrain_on_shapes,
    read_voc_split,
)
from models.parts.backbones import SmallCNN, build_body


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    return generate_shapes_dataset(
        tmp_path_factory.mktemp("shapes"), seed=0, num_train=24, num_val=8, size=128, progress=False
    )


def test_crop_classifier_scores_k_plus_one_classes():
    model = CropClassifier(build_body("small_cnn"), 7)
    assert model(torch.zeros(5, 3, 32, 32)).shape == (5, 7)


def test_read_voc_split_matches_the_coco_annotations(tiny_shapes):
    records = read_voc_split(tiny_shapes, "train")
    assert len(records) == 24 and all(path.is_file() for path, _, _ in records)
    coco = json.loads((tiny_shapes / "annotations" / "instances_train.json").read_text())
    expected = [
        [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
        for a in coco["annotations"]
    ]
    boxes = torch.cat([b for _, b, _ in records])
    labels = torch.cat([label for _, _, label in records])
    assert torch.equal(boxes, torch.tensor(expected, dtype=torch.float32))
    assert labels.tolist() == [a["category_id"] for a in coco["annotations"]]


def test_cache_key_changes_with_architecture_dataset_and_recipe(tiny_shapes, tmp_path):
    base = cache_path(tiny_shapes, "small_cnn")
    assert base == cache_path(tiny_shapes, "small_cnn")  # deterministic
    assert base.parent == tiny_shapes / ".cache" / "pretrained" and base.name.startswith("small_cnn-")
    assert cache_path(tiny_shapes, "small_cnn", channels=(8, 16, 32, 32, 32)) != base
    assert cache_path(tiny_shapes, "resnet18") != base
    assert cache_path(tiny_shapes, "small_cnn", recipe=PretrainRecipe(epochs=2)) != base
    other = tmp_path / "other"
    other.mkdir()
    meta = json.loads((tiny_shapes / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "seed": 1}))
    assert cache_path(other, "small_cnn").name != base.name


def test_second_call_loads_the_cache_without_training(tiny_shapes, monkeypatch):
    state_before = torch.random.get_rng_state()
    first = pretrain_on_shapes(tiny_shapes, epochs=2, channels=(8, 16, 16, 16, 16))
    assert torch.equal(torch.random.get_rng_state(), state_before)  # the caller's RNG is untouched
    assert not first.cached and first.path.is_file() and first.seconds > 0 and 0 <= first.accuracy <= 1

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although a cached result exists")

    monkeypatch.setattr(pretrain, "_train_classifier", no_training)
    second = pretrain_on_shapes(tiny_shapes, epochs=2, channels=(8, 16, 16, 16, 16))
    assert second.cached and second.path == first.path
    assert (second.seconds, second.accuracy) == (first.seconds, first.accuracy)  # the original run's figures


def test_load_pretrained_body_loads_the_cached_weights(tiny_shapes, monkeypatch):
    monkeypatch.setattr(pretrain, "PretrainRecipe", lambda epochs, seed: PretrainRecipe(epochs=1, seed=seed))
    body = load_pretrained_body("small_cnn", "shapes", tiny_shapes, channels=(8, 16, 16, 16, 16))
    saved = torch.load(
        cache_path(tiny_shapes, "small_cnn", (8, 16, 16, 16, 16), PretrainRecipe(epochs=1)), weights_only=True
    )
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in body.state_dict().items())
    assert saved["meta"]["seconds"] > 0


def test_deferred_weights_are_loaded_once(tiny_shapes, monkeypatch):
    monkeypatch.setattr(pretrain, "PretrainRecipe", lambda epochs, seed: PretrainRecipe(epochs=1, seed=seed))
    model = torch.nn.Sequential(
        load_pretrained_body("small_cnn", "shapes", tiny_shapes, channels=(8, 8, 8, 8, 8), defer=True)
    )
    assert model[0].deferred_shapes_weights == ("small_cnn", str(tiny_shapes), (8, 8, 8, 8, 8))
    [result] = pretrain.load_deferred_shapes_weights(model)
    saved = torch.load(result.path, weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in model[0].state_dict().items())
    with torch.no_grad():
        model[0].stages[0][0][0].weight.add_(1.0)  # "training" after the load
    assert pretrain.load_deferred_shapes_weights(model) == []  # a second fit keeps the trained weights
    assert not torch.equal(model[0].stages[0][0][0].weight, saved["stages.0.0.0.weight"])


def test_load_pretrained_body_without_shapes():
    assert isinstance(load_pretrained_body("small_cnn", None), SmallCNN)
    with pytest.raises(ValueError, match="data_root"):
        load_pretrained_body("small_cnn", "shapes")


def test_missing_dataset_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shapes dataset"):
        pretrain_on_shapes(tmp_path)


@pytest.mark.slow
def test_pretraining_learns_clearly_above_chance(tmp_path_factory):
    root = generate_shapes_dataset(
        tmp_path_factory.mktemp("shapes400"), seed=3, num_train=400, num_val=100, size=128, progress=False
    )
    result = pretrain_on_shapes(root)  # the default recipe
    assert result.accuracy > result.chance + 0.2  # measured: 0.78 against 0.42
