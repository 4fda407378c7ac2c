import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datamodules.shapes_generator import generate_shapes_dataset
from models.parts import pretrain
from models.parts.pretrain import (
    CropClassifier,
    PretrainRecipe,
    cache_path,
    load_pretrained_bodies,
    pretrain_on_shapes,
    read_split,
)
from models.parts.backbones import PretrainedBody, SmallCNN, build_body


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    return generate_shapes_dataset(
        tmp_path_factory.mktemp("shapes"), seed=0, num_train=24, num_val=8, size=128, progress=False
    )


def test_crop_classifier_scores_k_plus_one_classes():
    model = CropClassifier(build_body("small_cnn"), 7)
    assert model(torch.zeros(5, 3, 32, 32)).shape == (5, 7)


def test_read_split_matches_the_coco_annotations(tiny_shapes):
    records = read_split(tiny_shapes, "train")
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


def test_read_split_gives_the_records_of_the_xml(tiny_shapes_dataset):
    """The DataModules' VOC reader keeps the pretraining's convention: VOC's 1-based inclusive pixels ->
    0-based continuous, labels 1..K in meta.json's order, difficult objects kept, nothing clipped at the border.
    Expected values written out from the XMLs of the fixture (seed 3, 64 px)."""
    train, val = read_split(tiny_shapes_dataset, "train"), read_split(tiny_shapes_dataset, "val")
    assert (len(train), len(val)) == (24, 8)
    path, boxes, labels = train[3]
    # train_000003.xml: circle (difficult) 6 29 10 36, circle 26 9 44 27, rectangle 9 59 20 64, star 15 35 30 51
    assert path == Path(tiny_shapes_dataset) / "JPEGImages" / "train_000003.jpg"
    assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
    assert boxes.tolist() == [[5, 28, 10, 36], [25, 8, 44, 27], [8, 58, 20, 64], [14, 34, 30, 51]]
    assert labels.tolist() == [1, 1, 2, 4]
    path, boxes, labels = val[7]
    # val_000007.xml: circle (difficult) 32 31 38 34, triangle (difficult, truncated) 37 1 43 6
    assert path.name == "val_000007.jpg"
    assert boxes.tolist() == [[31, 30, 38, 34], [36, 0, 43, 6]] and labels.tolist() == [1, 3]
    empty = [labels for _, _, labels in train if len(labels) == 0]
    assert empty and all(b.shape == (0, 4) for _, b, labels in train if len(labels) == 0)  # images without objects


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


def test_load_pretrained_bodies_loads_the_cached_weights(tiny_shapes, monkeypatch):
    monkeypatch.setattr(pretrain, "PretrainRecipe", lambda epochs, seed: PretrainRecipe(epochs=1, seed=seed))
    bodies: list[PretrainedBody] = []
    body = build_body("small_cnn", "shapes", (8, 16, 16, 16, 16), pretrained_bodies=bodies)
    assert [(entry.body, entry.arch, entry.channels, entry.loaded) for entry in bodies] == [
        (body, "small_cnn", (8, 16, 16, 16, 16), False)
    ]
    [result] = load_pretrained_bodies(bodies, tiny_shapes)
    assert result.path == cache_path(tiny_shapes, "small_cnn", (8, 16, 16, 16, 16), PretrainRecipe(epochs=1))
    saved = torch.load(result.path, weights_only=True)
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in body.state_dict().items())
    assert saved["meta"]["seconds"] > 0 and bodies[0].loaded


def test_pretrained_bodies_are_loaded_once(tiny_shapes, monkeypatch):
    monkeypatch.setattr(pretrain, "PretrainRecipe", lambda epochs, seed: PretrainRecipe(epochs=1, seed=seed))
    bodies: list[PretrainedBody] = []
    body = build_body("small_cnn", "shapes", (8, 8, 8, 8, 8), pretrained_bodies=bodies)
    [result] = load_pretrained_bodies(bodies, tiny_shapes)
    saved = torch.load(result.path, weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in body.state_dict().items())
    with torch.no_grad():
        body.stages[0][0][0].weight.add_(1.0)  # "training" after the load
    assert load_pretrained_bodies(bodies, tiny_shapes) == []  # a second fit keeps the trained weights
    assert not torch.equal(body.stages[0][0][0].weight, saved["stages.0.0.0.weight"])


def test_shapes_bodies_need_a_list_to_be_registered_in():
    assert isinstance(build_body("small_cnn", None), SmallCNN)
    with pytest.raises(ValueError, match="pretrained_bodies"):
        build_body("small_cnn", "shapes")


def test_the_backbones_do_not_import_the_pretraining():
    """No import cycle: the pretraining imports the backbones, never the reverse (not even lazily)."""
    code = (
        "import sys, models.parts.backbones as b\n"
        "b.build_backbone('small_cnn', 'shapes', pretrained_bodies=[])\n"
        "assert 'models.parts.pretrain' not in sys.modules, 'backbones imported pretrain'\n"
        "import models.parts.pretrain\n"
    )
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


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
