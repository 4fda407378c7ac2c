"""torchvision's pretrained weights, offline: whole COCO detectors and segmenters, and ImageNet bodies.

``weights: torchvision`` (or the name of a member of the builder's weight enum, e.g. ``COCO_V1``) makes a
model build torchvision's own network, as its builder builds it *with* those weights (FrozenBatchNorm2d,
the frozen first stages, the eps the weights were trained with), and load the weights from torch.hub's
cache (``$TORCH_HOME/hub/checkpoints/<file name of the enum's URL>``). A missing file is downloaded when
the network allows; offline it fails with one line naming the file and where to put it.

Classes: the COCO detectors have 91 outputs (index = COCO category id, 0 background), FCN / DeepLabv3
21 (background and the VOC classes). When every class name of the DataModule is one of the weights'
categories (COCO's names, VOC's, or the COCO spelling of a VOC class) the pretrained classifier is kept and
:class:`ClassMap` translates between our labels 1..K and its indices; otherwise the classifier is replaced
by a new one of K + 1 outputs (fine-tuning on another dataset, as torchvision's tutorials do).

Restoring from a checkpoint (``TaskModule.load_from_checkpoint``, ``scripts/compare.py --checkpoints``)
runs inside :func:`restoring_checkpoint`: networks are built with the same architecture and no pretrained
file is read or downloaded, since the checkpoint holds the weights.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from models.parts.backbones import freeze_batchnorm, freeze_resnet_layers, freeze_vgg_layers

#: registry name -> torchvision builder whose weights ``weights: torchvision`` loads.
PRETRAINED_BUILDERS = {
    "faster_rcnn": "fasterrcnn_resnet50_fpn",
    "retinanet": "retinanet_resnet50_fpn",
    "ssd": "ssd300_vgg16",
    "fcos": "fcos_resnet50_fpn",
    "mask_rcnn": "maskrcnn_resnet50_fpn",
    "fcn": "fcn_resnet50",
    "deeplabv3": "deeplabv3_resnet50",
}
_SEGMENTERS = ("fcn_resnet50", "deeplabv3_resnet50")
# builders that call ``overwrite_eps(model, 0.0)`` after loading their COCO_V1 weights
_EPS_ZERO = ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn")
# COCO's spelling of the VOC classes, so VOC-label weights can be evaluated on COCO's VOC subset
VOC_TO_COCO_NAMES = {
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "tvmonitor": "tv",
}

_state = threading.local()


class WeightsNotFoundError(FileNotFoundError):
    """A pretrained weights file is neither in torch.hub's cache nor downloadable."""


@contextlib.contextmanager
def restoring_checkpoint() -> Iterator[None]:
    """Within this block models are built without reading or downloading pretrained weights."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def is_restoring() -> bool:
    return getattr(_state, "depth", 0) > 0


def weights_path(weights: WeightsEnum) -> Path:
    """Where torch.hub caches ``weights``: ``<torch.hub.get_dir()>/checkpoints/<file name of its URL>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def load_weights_file(weights: WeightsEnum) -> dict[str, Tensor]:
    """The state dict of ``weights`` from torch.hub's cache, downloaded there first if it is missing.

    Raises :class:`WeightsNotFoundError` (one line: the file, ``TORCH_HOME``, how to place it) when the
    file is missing and cannot be downloaded.
    """
    path = weights_path(weights)
    name = f"{type(weights).__name__}.{weights.name}"
    if not path.exists():
        try:
            return weights.get_state_dict(progress=False, check_hash=True, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:  # URLError, timeouts and SSL errors are OSErrors
            home = os.environ.get("TORCH_HOME", "unset, so ~/.cache/torch")
            reason = " ".join(str(exc).split())[:120]
            raise WeightsNotFoundError(
                f"{name}: weights file {path} not found and the download failed ({type(exc).__name__}: {reason}); "
                f"offline, download {weights.url} elsewhere and copy it to {path} "
                f"(torch.hub's cache, $TORCH_HOME/hub/checkpoints; TORCH_HOME is {home})"
            ) from None
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve(builder: str, weights: str | WeightsEnum) -> WeightsEnum:
    """The member of ``builder``'s weight enum named ``weights`` (an enum name, or ``DEFAULT``)."""
    enum = torchvision.models.get_model_weights(builder)
    if isinstance(weights, WeightsEnum):
        return enum.verify(weights)
    try:
        return enum[str(weights)]
    except KeyError:
        raise ValueError(f"{builder} has no weights {weights!r}; expected one of {list(enum.__members__)}") from None


def pretrained_weights(builder: str, weights: str | None) -> WeightsEnum | None:
    """The whole-model weights that ``weights`` names for ``builder``: ``torchvision`` (its default) or an
    enum member other than ``DEFAULT`` (``COCO_V1``); None for anything else (backbone weights)."""
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(builder)
    if weights == "torchvision":
        return enum.DEFAULT
    if weights != "DEFAULT" and weights in enum.__members__:
        return enum[weights]
    return None


def load_body_weights(net: nn.Module, builder: str, weights: str | None) -> nn.Module:
    """Load torchvision ImageNet ``weights`` (``DEFAULT`` or an enum name) into ``net``, a classifier built
    by ``builder`` with ``weights=None``; nothing is read while restoring a checkpoint."""
    if weights is not None and not is_restoring():
        net.load_state_dict(load_weights_file(resolve(builder, weights)))
    return net


# ------------------------------------------------------------------------------------------ classes
def category_index(class_names: Sequence[str], categories: Sequence[str]) -> list[int] | None:
    """For our labels 1..K, the index of each class among the weights' ``categories``; None if any is missing."""
    lookup = {name: i for i, name in enumerate(categories) if name not in ("N/A", "__background__")}
    for voc, coco in VOC_TO_COCO_NAMES.items():
        if voc in lookup:
            lookup.setdefault(coco, lookup[voc])
        if coco in lookup:
            lookup.setdefault(voc, lookup[coco])
    index = [lookup.get(name) for name in class_names]
    return None if any(i is None for i in index) else [int(i) for i in index]  # type: ignore[arg-type]


class ClassMap:
    """Our labels 1..K <-> the pretrained classifier's indices (identity when ``index`` is None)."""

    def __init__(self, index: Sequence[int] | None, num_outputs: int) -> None:
        self.index = list(index) if index is not None else None
        self.num_outputs = num_outputs
        self._to_model = torch.tensor([0] + self.index) if self.index is not None else None
        self._from_model = None
        if self.index is not None:
            self._from_model = torch.full((num_outputs,), -1, dtype=torch.int64)
            self._from_model[torch.tensor(self.index)] = torch.arange(1, len(self.index) + 1)

    def targets(self, targets: list[dict[str, Tensor]] | None) -> list[dict[str, Tensor]] | None:
        if targets is None or self._to_model is None:
            return targets
        return [{**t, "labels": self._to_model.to(t["labels"].device)[t["labels"]]} for t in targets]

    def detections(self, detections: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """Relabel detections; those of classes we do not have are dropped."""
        if self._from_model is None:
            return detections
        out = []
        for d in detections:
            labels = self._from_model.to(d["labels"].device)[d["labels"]]
            keep = labels > 0
            out.append({**{k: v[keep] for k, v in d.items()}, "labels": labels[keep]})
        return out

    def logits(self, logits: Tensor) -> Tensor:
        """Background and our K classes' channels of semantic logits, in our label order."""
        return logits if self._to_model is None else logits[:, self._to_model.to(logits.device)]


def run_detector(detector: nn.Module, classes: ClassMap, images: list[Tensor], targets: Any = None) -> Any:
    """A torchvision detector on our labels: losses in train mode, relabelled detections in eval mode."""
    output = detector(images, classes.targets(targets))
    return output if detector.training else classes.detections(output)


def run_foreground_detector(detector: nn.Module, images: list[Tensor], targets: Any = None) -> Any:
    """A torchvision one-stage detector whose classifier has K sigmoid outputs and no background (RetinaNet,
    FCOS) on our labels 1..K: its labels are 0..K-1."""
    if targets is not None:
        targets = [{**t, "labels": t["labels"] - 1} for t in targets]
    output = detector(images, targets)
    return output if detector.training else [{**d, "labels": d["labels"] + 1} for d in output]


def run_segmenter(
    model: nn.Module, classes: ClassMap, images: Tensor, eval_size: int | None = None
) -> dict[str, Tensor]:
    """torchvision's FCN / DeepLabv3 on normalised ``images``: ``out`` (and ``aux``) logits in our label order.

    In eval mode with ``eval_size`` the input is first resized to that shorter side (its weights' transform:
    520) and the logits are resized back to the input's size.
    """
    size = images.shape[-2:]
    resize = eval_size is not None and not model.training and min(size) != eval_size
    if resize:
        scale = eval_size / min(size)
        target = [max(1, round(size[0] * scale)), max(1, round(size[1] * scale))]
        images = nn.functional.interpolate(images, size=target, mode="bilinear", align_corners=False)
    out = {k: classes.logits(v) for k, v in model(images).items()}
    if resize:
        out = {k: nn.functional.interpolate(v, size=size, mode="bilinear", align_corners=False) for k, v in out.items()}
    return out


def segmenter_losses(
    out: dict[str, Tensor], masks: Tensor, weight: Tensor | None, ignore_index: int, aux_weight: float = 0.5
) -> dict[str, Tensor]:
    """torchvision's segmentation recipe: cross-entropy of ``out`` plus ``aux_weight`` x that of ``aux``."""
    ce = nn.functional.cross_entropy
    losses = {"loss_ce": ce(out["out"], masks, weight=weight, ignore_index=ignore_index)}
    if "aux" in out and aux_weight:
        losses["loss_aux"] = aux_weight * ce(out["aux"], masks, weight=weight, ignore_index=ignore_index)
    return losses


# ------------------------------------------------------------------------------------------- models
def _replace_classifier(model: nn.Module, builder: str, num_outputs: int) -> None:
    """A new classification layer of ``num_outputs`` (torchvision's fine-tuning recipe)."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.fcos import FCOSClassificationHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
    from torchvision.models.detection.retinanet import RetinaNetClassificationHead
    from torchvision.models.detection.ssd import SSDClassificationHead

    if builder in _SEGMENTERS:
        model.classifier[-1] = nn.Conv2d(model.classifier[-1].in_channels, num_outputs, 1)
        if model.aux_classifier is not None:
            model.aux_classifier[-1] = nn.Conv2d(model.aux_classifier[-1].in_channels, num_outputs, 1)
    elif builder in ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"):
        heads = model.roi_heads
        heads.box_predictor = FastRCNNPredictor(heads.box_predictor.cls_score.in_features, num_outputs)
        if heads.mask_predictor is not None:
            heads.mask_predictor = MaskRCNNPredictor(
                heads.mask_predictor.conv5_mask.in_channels, heads.mask_predictor.conv5_mask.out_channels, num_outputs
            )
    elif builder == "retinanet_resnet50_fpn":
        model.head.classification_head = RetinaNetClassificationHead(
            model.backbone.out_channels, model.anchor_generator.num_anchors_per_location()[0], num_outputs
        )
    elif builder == "fcos_resnet50_fpn":
        model.head.classification_head = FCOSClassificationHead(
            model.backbone.out_channels, model.anchor_generator.num_anchors_per_location()[0], num_outputs
        )
    elif builder == "ssd300_vgg16":
        channels = det_utils.retrieve_out_channels(model.backbone, (300, 300))
        model.head.classification_head = SSDClassificationHead(
            channels, model.anchor_generator.num_anchors_per_location(), num_outputs
        )
        model.num_classes = num_outputs
    else:
        raise ValueError(f"no classifier replacement for {builder}")


def build_pretrained(
    builder: str,
    weights: str | WeightsEnum,
    class_names: Sequence[str],
    trainable_backbone_layers: int | None = None,
    builder_kwargs: dict[str, Any] | None = None,
) -> tuple[nn.Module, ClassMap]:
    """torchvision's ``builder`` network as built with ``weights``, the weights loaded, for our classes.

    The architecture is the builder's with ``weights=None`` made identical to its pretrained variant:
    FrozenBatchNorm2d in the ResNet, the first stages frozen (``trainable_backbone_layers``, default 3; 4
    for SSD's VGG16), eps 0 where the builder sets it. ``builder_kwargs`` go to the builder (``min_size``,
    ``box_nms_thresh``, ...; by default torchvision's evaluation settings).
    """
    weights = pretrained_weights(builder, weights) or resolve(builder, weights) if isinstance(weights, str) else weights
    categories = list(weights.meta["categories"])
    kwargs = dict(builder_kwargs or {})
    fn = torchvision.models.get_model_builder(builder)
    if builder in _SEGMENTERS:
        if trainable_backbone_layers is not None:
            raise ValueError(f"{builder}: trainable_backbone_layers is a detector option (it trains every layer)")
        model = fn(weights=None, weights_backbone=None, num_classes=len(categories), aux_loss=True, **kwargs)
    else:
        model = fn(weights=None, weights_backbone=None, num_classes=len(categories), **kwargs)
        if builder == "ssd300_vgg16":
            layers = trainable_backbone_layers if trainable_backbone_layers is not None else 4
            extractor = model.backbone
            freeze_vgg_layers(list(extractor.features) + list(extractor.extra[0])[:-1], layers)
        else:
            freeze_batchnorm(model.backbone.body)
            layers = trainable_backbone_layers if trainable_backbone_layers is not None else 3
            freeze_resnet_layers(model.backbone.body, layers)
    if not is_restoring():
        model.load_state_dict(load_weights_file(weights))
    if builder in _EPS_ZERO and weights.name == "COCO_V1":
        for m in model.modules():
            if isinstance(m, torchvision.ops.FrozenBatchNorm2d):
                m.eps = 0.0
    index = category_index(class_names, categories)
    if index is None:
        _replace_classifier(model, builder, len(class_names) + 1)
        return model, ClassMap(None, len(class_names) + 1)
    return model, ClassMap(index, len(categories))


def adopt_pretrained_detector(
    module: nn.Module,
    name: str,
    weights: str | None,
    trainable_backbone_layers: int | None = None,
    builder_kwargs: dict[str, Any] | None = None,
) -> bool:
    """When ``weights`` names whole-model torchvision weights for the registered detector ``name``: give
    ``module`` torchvision's network (``module.detector``) and its class map and return True. Otherwise return
    False (the model then builds its own network; its ``class_map`` stays the class's None)."""
    if pretrained_weights(PRETRAINED_BUILDERS[name], weights) is None:
        return False
    module.detector, module.class_map = build_pretrained(
        PRETRAINED_BUILDERS[name], weights, module.class_names, trainable_backbone_layers, builder_kwargs
    )
    return True


def adopt_pretrained_segmenter(module: nn.Module, name: str, weights: str | None, stages: tuple[str, str]) -> bool:
    """:func:`adopt_pretrained_detector` for FCN / DeepLabv3: ``module.network`` is torchvision's, its
    backbone and classifier timed as ``stages``."""
    if pretrained_weights(PRETRAINED_BUILDERS[name], weights) is None:
        return False
    module.network, module.class_map = build_pretrained(PRETRAINED_BUILDERS[name], weights, module.class_names)
    module.stage_timer.instrument(module.network.backbone, stages[0])
    module.stage_timer.instrument(module.network.classifier, stages[1])
    return True
