import pytest
import torch
from torch import nn

from models.base import DetectionModule, SemanticSegmentationModule


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


def test_every_registered_detector_exposes_its_nms_threshold():
    """The comparison's NMS sweep calls set_nms_iou on every detector it sweeps."""
    import models.detection  # noqa: F401  (registers the detectors)
    import models.segmentation  # noqa: F401
    from models.registry import list_models

    for entry in list_models():
        if entry.task == "semantic":
            continue
        model = entry.cls(num_classes=2)
        model.set_nms_iou(0.42)
        assert model.nms_thresh == 0.42, entry.name


def test_every_model_with_shapes_weights_loads_them_at_fit_setup(tiny_shapes_dataset):
    """The base's setup("fit") loads ``weights: shapes`` for every model (no model needs its own hook)."""
    import inspect

    import models.detection  # noqa: F401
    import models.segmentation  # noqa: F401
    from models.registry import list_models

    checked = []
    for entry in list_models():
        params = inspect.signature(entry.cls.__init__).parameters
        if "weights" not in params or "data_root" not in params:
            continue
        extra = {"backbone": "small_cnn"} if "backbone" in params else {}
        if entry.name == "fcn_max_unpool":
            continue  # max unpooling needs the built-in encoder's indices: no pretrained body
        model = entry.cls(num_classes=6, weights="shapes", data_root=str(tiny_shapes_dataset), **extra)
        marked = [m for m in model.modules() if getattr(m, "deferred_shapes_weights", None) is not None]
        assert marked, entry.name
        model.setup("fit")
        assert all(m.deferred_shapes_weights is None for m in marked), entry.name
        checked.append(entry.name)
    assert {"ssd", "retinanet", "yolo_v1", "fcn", "deeplabv3", "mask_rcnn", "unet", "faster_rcnn"} <= set(checked)
