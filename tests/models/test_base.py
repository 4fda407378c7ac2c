import types

import pytest
import torch
from torch import nn

from models.base import DetectionModule, SemanticSegmentationModule
from models.detection.selective_search_detector import SelectiveSearchDetector
from models.parts import pretrain
from models.parts.backbones import build_body
from models.parts.pretrain import cache_path


class ConstantLossDetector(DetectionModule):
    """A detector whose loss is a learnable scalar, to exercise the base class alone."""

    def __init__(self, loss_value: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.w = nn.Parameter(torch.tensor(1.0))
        self.loss_value = loss_value

    def forward(self, images, targets=None):
        if self.training:
            return {"loss_a": self.w * self.loss_value}
        return [
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
            for _ in images
        ]


def _batch():
    target = {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([1]), "image_id": 0}
    return [torch.zeros(3, 8, 8)], [target]


def test_nonfinite_loss_raises_naming_the_step_and_terms():
    model = ConstantLossDetector(loss_value=float("nan"), num_classes=2)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at global step 0 .*loss_a=nan"):
        model.training_step(_batch(), 0)


def test_nonfinite_loss_skip_returns_none_and_counts():
    model = ConstantLossDetector(loss_value=float("inf"), num_classes=2, nonfinite_loss="skip")
    assert model.training_step(_batch(), 0) is None
    assert model.skipped_nonfinite_steps == 1


def test_finite_loss_is_the_sum_of_terms():
    model = ConstantLossDetector(loss_value=2.5, num_classes=2)
    assert model.training_step(_batch(), 0).item() == pytest.approx(2.5)


def test_class_names_must_match_num_classes():
    with pytest.raises(ValueError, match="class_names"):
        ConstantLossDetector(num_classes=2, class_names=["a"])
    with pytest.raises(ValueError, match="num_classes"):
        ConstantLossDetector(num_classes=0)


def test_schedule_warms_up_then_decays_to_zero():
    model = ConstantLossDetector(num_classes=1, lr=1.0, warmup_steps=10)

    class FakeTrainer:
        estimated_stepping_batches = 110

    model._trainer = FakeTrainer()
    conf = model.configure_optimizers()
    sched = conf["lr_scheduler"]["scheduler"]
    factors = [sched.lr_lambdas[0](s) for s in (0, 5, 10, 60, 110)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[1] == pytest.approx(0.55)
    assert factors[2] == pytest.approx(1.0)
    assert factors[3] == pytest.approx(0.5)
    assert factors[4] == pytest.approx(0.0)


def test_semantic_base_ignores_255_and_checks_weights():
    class Const(SemanticSegmentationModule):
        def forward(self, images):
            return torch.zeros(images.shape[0], 3, *images.shape[-2:])

    model = Const(num_classes=2)
    masks = torch.full((1, 4, 4), 255, dtype=torch.int64)
    masks[0, 0, 0] = 1
    loss = model.compute_losses((torch.zeros(1, 3, 4, 4), masks))["loss_ce"]
    assert loss.item() == pytest.approx(torch.log(torch.tensor(3.0)).item())  # one pixel, uniform logits
    with pytest.raises(ValueError, match="class_weights"):
        Const(num_classes=2, class_weights=[1.0, 2.0])


# ------------------------------------------------------------------ through a Trainer
class _NaNAtStep(ConstantLossDetector):
    """Loss becomes NaN at one step, as a diverging run would."""

    def __init__(self, bad_step: int, **kwargs):
        super().__init__(**kwargs)
        self.bad_step = bad_step

    def forward(self, images, targets=None):
        out = super().forward(images, targets)
        if self.training and self.global_step == self.bad_step:
            out["loss_a"] = out["loss_a"] * float("nan")
        return out


def _fit_nan(tmp_path, policy):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    model = _NaNAtStep(bad_step=2, num_classes=2, nonfinite_loss=policy, warmup_steps=0, lr=0.1)
    loader = torch.utils.data.DataLoader([_batch()] * 6, batch_size=None)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True, save_top_k=0)
    trainer = pl.Trainer(
        max_steps=5,
        logger=False,
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    return model, trainer, lambda: trainer.fit(model, train_dataloaders=loader)


def test_trainer_stops_on_nan_and_keeps_the_last_good_checkpoint(tmp_path):
    model, trainer, fit = _fit_nan(tmp_path, "raise")
    with pytest.raises(FloatingPointError, match="global step 2"):
        fit()
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 2 and torch.isfinite(saved["state_dict"]["w"])


def test_trainer_skips_the_nan_step_when_configured(tmp_path):
    model, trainer, fit = _fit_nan(tmp_path, "skip")
    fit()
    assert model.skipped_nonfinite_steps == 1 and torch.isfinite(model.w)
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert torch.isfinite(saved["state_dict"]["w"])


@pytest.mark.parametrize(
    "impl, foreach, fused", [("for-loop", False, False), ("foreach", True, False), ("fused", False, True)]
)
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_impl_selects_the_kernel_and_keeps_the_update(optimizer, impl, foreach, fused):
    def one_step(name):
        torch.manual_seed(0)
        model = ConstantLossDetector(num_classes=1, optimizer=optimizer, optimizer_impl=name, lr=0.1, warmup_steps=0)
        opt = model.configure_optimizers()["optimizer"]
        model.training_step(_batch(), 0).backward()
        opt.step()
        return opt, model.w.detach().clone()

    opt, weight = one_step(impl)
    assert opt.defaults["foreach"] is foreach and opt.defaults["fused"] is fused
    torch.testing.assert_close(weight, one_step("for-loop")[1])  # the same rule, up to rounding
    with pytest.raises(ValueError, match="unknown optimizer_impl 'fast'"):
        ConstantLossDetector(num_classes=1, optimizer_impl="fast").configure_optimizers()


class _TinySegmenter(SemanticSegmentationModule):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = nn.Conv2d(3, self.num_classes + 1, 3, padding=1)

    def forward(self, images):
        return self.conv(images)


def test_torch_compile_switch_compiles_forward_with_the_same_output():
    torch.manual_seed(0)
    eager = _TinySegmenter(num_classes=2)
    compiled = _TinySegmenter(num_classes=2, torch_compile={"backend": "eager"})
    compiled.load_state_dict(eager.state_dict())
    compiled.configure_model()
    x = torch.rand(2, 3, 8, 8)
    assert compiled._compiled_forward and compiled.forward is not eager.forward
    torch.testing.assert_close(compiled(x), eager(x))


def test_channels_last_puts_the_weights_in_nhwc_at_fit_and_at_checkpoint_load(tmp_path):
    torch.manual_seed(0)
    plain = _TinySegmenter(num_classes=2)
    nhwc = _TinySegmenter(num_classes=2, channels_last=True)
    nhwc.load_state_dict(plain.state_dict())
    plain.configure_model()
    nhwc.configure_model()  # what the trainer calls before fit, validate and predict
    assert plain.conv.weight.is_contiguous()
    assert nhwc.conv.weight.is_contiguous(memory_format=torch.channels_last) and not nhwc.conv.weight.is_contiguous()
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(nhwc(x), plain(x))
    loaded = _TinySegmenter(num_classes=2, channels_last=True)
    loaded.on_load_checkpoint({})
    loaded.load_state_dict(plain.state_dict())
    assert loaded.conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(loaded.conv.weight, plain.conv.weight)


@pytest.mark.parametrize("precision", ["bf16-mixed"])
def test_mixed_precision_fit_on_cpu(precision, tmp_path):
    import pytorch_lightning as pl

    torch.manual_seed(0)
    model = _TinySegmenter(num_classes=2, warmup_steps=0, lr=0.1)
    images, masks = torch.rand(4, 3, 8, 8), torch.randint(0, 3, (4, 8, 8))
    loader = torch.utils.data.DataLoader([(images, masks)] * 4, batch_size=None)
    trainer = pl.Trainer(
        max_steps=4,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 4 and all(torch.isfinite(p).all() for p in model.parameters())


def _with_datamodule(model, root):
    """``model`` attached to a stand-in trainer whose DataModule has ``root`` (what ``setup`` reads)."""
    model._trainer = types.SimpleNamespace(datamodule=types.SimpleNamespace(root=str(root)))
    return model


def _equal_to(body, path):
    saved = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(torch.equal(v, saved[k]) for k, v in body.state_dict().items())


def test_every_model_with_shapes_weights_loads_them_at_fit_setup(tiny_shapes_dataset):
    """The base's setup("fit") loads ``weights: shapes`` for every model (no model needs its own hook), from
    the trainer's DataModule: each model lists its bodies in ``pretrained_bodies``."""
    import inspect

    import models.detection  # noqa: F401
    import models.segmentation  # noqa: F401
    from models.registry import list_models

    checked = []
    for entry in list_models():
        params = inspect.signature(entry.cls.__init__).parameters
        if "weights" not in params:
            continue
        assert "data_root" not in params, entry.name  # the data comes from the DataModule
        extra = {"backbone": "small_cnn"} if "backbone" in params else {}
        if issubclass(entry.cls, SelectiveSearchDetector):
            extra["precompute_proposals"] = False  # the stand-in DataModule has no splits
        model = _with_datamodule(entry.cls(num_classes=6, weights="shapes", **extra), tiny_shapes_dataset)
        [pretrained] = model.pretrained_bodies
        assert any(module is pretrained.body for module in model.modules()), entry.name  # the model's own body
        assert (pretrained.arch, pretrained.loaded) == ("small_cnn", False), entry.name
        model.setup("fit")
        assert pretrained.loaded, entry.name
        assert _equal_to(pretrained.body, cache_path(tiny_shapes_dataset, "small_cnn", pretrained.channels)), entry.name
        checked.append(entry.name)
    assert {
        "ssd",
        "retinanet",
        "yolo_v1",
        "fcn",
        "deeplabv3",
        "mask_rcnn",
        "unet",
        "faster_rcnn",
        "fcos",
        "rcnn",
        "fast_rcnn",
        "sliding_window",
    } <= set(checked)


TINY_BODY = (4, 8, 8, 8, 8)


class _ShapesBodyDetector(DetectionModule):
    """A detector on a tiny ``weights: shapes`` body whose loss trains the body."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = build_body("small_cnn", "shapes", TINY_BODY, pretrained_bodies=self.pretrained_bodies)

    def forward(self, images, targets=None):
        if self.training:
            return {"loss_a": self.body(torch.stack(images))["c5"].square().mean()}
        return [
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
            for _ in images
        ]


def test_shapes_weights_load_once_per_model(tiny_shapes_dataset, monkeypatch):
    """Each model has its own list; a second ``setup("fit")`` (a second fit) keeps the trained weights."""
    loads = []
    load = pretrain.load_shapes_weights
    monkeypatch.setattr(pretrain, "load_shapes_weights", lambda *args: loads.append(args[1:]) or load(*args))
    first, second = _ShapesBodyDetector(num_classes=6), _ShapesBodyDetector(num_classes=6)
    assert first.pretrained_bodies is not second.pretrained_bodies
    assert [entry.body for entry in first.pretrained_bodies] == [first.body]
    _with_datamodule(first, tiny_shapes_dataset).setup("fit")
    assert loads == [("small_cnn", str(tiny_shapes_dataset), TINY_BODY)]
    assert _equal_to(first.body, cache_path(tiny_shapes_dataset, "small_cnn", TINY_BODY))
    assert not second.pretrained_bodies[0].loaded  # built twice: the other model is not touched
    with torch.no_grad():
        first.body.stages[0][0][0].weight.add_(1.0)  # "training" after the load
    first.setup("fit")
    first.setup("test")
    assert len(loads) == 1 and not _equal_to(first.body, cache_path(tiny_shapes_dataset, "small_cnn", TINY_BODY))
    _with_datamodule(second, tiny_shapes_dataset).setup("fit")
    assert len(loads) == 2 and _equal_to(second.body, cache_path(tiny_shapes_dataset, "small_cnn", TINY_BODY))


def test_shapes_weights_without_a_datamodule_root_name_what_to_set():
    import pytorch_lightning as pl

    model = _ShapesBodyDetector(num_classes=2)
    loader = torch.utils.data.DataLoader([_batch()] * 2, batch_size=None)
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    with pytest.raises(ValueError, match=r"weights: shapes \(small_cnn\).*datamodule=ShapesDataModule\(root=\.\.\.\)"):
        trainer.fit(model, train_dataloaders=loader)
    assert not model.pretrained_bodies[0].loaded
    model.setup("test")  # only fitting needs the data


def test_resuming_keeps_the_trained_weights(tiny_shapes_dataset, tiny_shapes_params, tmp_path):
    """Lightning restores a checkpoint after ``setup("fit")``: the trained body wins over the pretrained one,
    also for a model restored by ``load_from_checkpoint`` and fit again."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from datamodules import ShapesDataModule

    params = dict(tiny_shapes_params)
    data = ShapesDataModule(
        root=str(tiny_shapes_dataset), image_size=params.pop("size"), batch_size=4, progress=False, **params
    )
    options = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trained = _ShapesBodyDetector(num_classes=6, warmup_steps=0, lr=0.1)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    pl.Trainer(max_steps=2, callbacks=[ckpt], accelerator="cpu", **options).fit(trained, datamodule=data)
    pretrained = cache_path(tiny_shapes_dataset, "small_cnn", TINY_BODY)
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert not _equal_to(trained.body, pretrained)  # it trained

    resumed = _ShapesBodyDetector(num_classes=6, warmup_steps=0, lr=0.1)
    trainer = pl.Trainer(max_steps=2, enable_checkpointing=False, accelerator="cpu", **options)
    trainer.fit(resumed, datamodule=data, ckpt_path=tmp_path / "last.ckpt")  # at max_steps: restores only
    assert trainer.global_step == 2
    assert all(torch.equal(v, saved[k]) for k, v in resumed.state_dict().items())

    restored = _ShapesBodyDetector.load_from_checkpoint(tmp_path / "last.ckpt")
    assert all(entry.loaded for entry in restored.pretrained_bodies)
    _with_datamodule(restored, tiny_shapes_dataset).setup("fit")  # a later fit starts from the checkpoint
    assert all(torch.equal(v, saved[k]) for k, v in restored.state_dict().items())


def test_a_checkpoint_saved_with_old_argument_names_loads_with_a_warning(tmp_path):
    """Checkpoints of earlier versions: Mask R-CNN's pre-rename arguments and the removed data_root."""
    import pytorch_lightning as pl

    from models.segmentation.mask_rcnn import MaskRCNN

    model = MaskRCNN(num_classes=2, anchor_ratios=(0.5, 1.0), rpn_batch_size=64)
    saved = dict(model.hparams)
    saved["aspect_ratios"] = saved.pop("anchor_ratios")
    saved["rpn_batch_size_per_image"] = saved.pop("rpn_batch_size")
    saved["data_root"] = "data/shapes"
    path = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": saved, "pytorch-lightning_version": pl.__version__}, path
    )
    with pytest.warns(UserWarning, match=r"old\.ckpt: .*aspect_ratios -> anchor_ratios.*data_root \(dropped\)"):
        restored = MaskRCNN.load_from_checkpoint(path)
    assert tuple(restored.hparams.anchor_ratios) == (0.5, 1.0) and restored.hparams.rpn_batch_size == 64
    assert "data_root" not in restored.hparams
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in model.state_dict().items())
    current = tmp_path / "current.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": pl.__version__,
        },
        current,
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert MaskRCNN.load_from_checkpoint(current).hparams.rpn_batch_size == 64  # no migration, no warning
