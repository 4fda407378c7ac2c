"""Backbones shared by every detector and segmenter.

A backbone maps a normalised image batch (B x 3 x H x W) to an ordered dict of feature maps named
``c1`` .. ``c5`` by their stage, stage k having stride 2**k (VGG16's ``c5`` is conv5_3 at stride 16,
as Faster R-CNN uses it). :func:`build_backbone` picks the stages a model needs and optionally adds
a Feature Pyramid Network (Lin et al. 2017, torchvision.ops.FeaturePyramidNetwork). The result
follows torchvision's detection contract: a module with an ``out_channels`` attribute returning an
``OrderedDict[str, Tensor]``, so it plugs into torchvision's FasterRCNN / RetinaNet / FCOS / MaskRCNN.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

BACKBONES = ("small_cnn", "resnet18", "resnet50", "vgg16", "mobilenet_v3")


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU: the unit every small network here is made of."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A plain CNN of ``len(channels)`` stages, each a stride-2 conv and a stride-1 conv.

    Small enough to train in minutes on two CPU cores at 128 px, which is what the embedded dataset
    needs; the torchvision networks below are the papers' choices for real data.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128, 128), in_channels: int = 3) -> None:
        super().__init__()
        stages = []
        for out_channels in channels:
            stages.append(
                nn.Sequential(conv_bn_relu(in_channels, out_channels, 2), conv_bn_relu(out_channels, out_channels))
            )
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.stage_channels = {f"c{i + 1}": c for i, c in enumerate(channels)}
        self.stage_strides = {f"c{i + 1}": 2 ** (i + 1) for i in range(len(channels))}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out[f"c{i + 1}"] = x
        return out


class _StagedSequential(nn.Module):
    """Runs named ``nn.Sequential`` stages in order and returns every stage's output."""

    def __init__(
        self, stages: "OrderedDict[str, nn.Module]", channels: dict[str, int], strides: dict[str, int]
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.stage_channels = channels
        self.stage_strides = strides

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, stage in self.stages.items():
            x = stage(x)
            out[name] = x
        return out


def _torchvision_net(builder: str, weights: str | None) -> nn.Module:
    """torchvision's classifier ``builder`` with ImageNet ``weights`` read from torch.hub's cache (see
    :mod:`models.parts.torchvision_weights`: a clear error offline, nothing read when restoring a checkpoint)."""
    from models.parts.torchvision_weights import load_body_weights  # it imports the freezing helpers below

    return load_body_weights(getattr(torchvision.models, builder)(weights=None), builder, weights)


def _resnet(name: str, weights: str | None) -> _StagedSequential:
    net = _torchvision_net(name, weights)
    stages = OrderedDict(
        c2=nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1),
        c3=net.layer2,
        c4=net.layer3,
        c5=net.layer4,
    )
    width = 64 if name == "resnet18" else 256
    channels = {"c2": width, "c3": width * 2, "c4": width * 4, "c5": width * 8}
    return _StagedSequential(stages, channels, {"c2": 4, "c3": 8, "c4": 16, "c5": 32})


def _vgg16(weights: str | None) -> _StagedSequential:
    f = _torchvision_net("vgg16", weights).features
    # Indices of torchvision's VGG16 ``features``: pools at 4, 9, 16, 23, 30. c5 stops before pool5
    # (conv5_3, stride 16), the feature map of Fast and Faster R-CNN.
    stages = OrderedDict(c2=f[:10], c3=f[10:17], c4=f[17:24], c5=f[24:30])
    return _StagedSequential(
        stages, {"c2": 128, "c3": 256, "c4": 512, "c5": 512}, {"c2": 4, "c3": 8, "c4": 16, "c5": 16}
    )


def _mobilenet_v3(weights: str | None) -> _StagedSequential:
    features = _torchvision_net("mobilenet_v3_large", weights).features
    # Group blocks by output stride, found with one dummy pass (robust to torchvision's layout).
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    channels, strides = {}, {}
    x = torch.zeros(1, 3, 64, 64)
    start, current = 0, None
    with torch.no_grad():
        for i, block in enumerate(features):
            was_training = block.training
            block.eval()
            x = block(x)
            block.train(was_training)
            stride = 64 // x.shape[-1]
            level = f"c{stride.bit_length() - 1}"
            if current is not None and level != current:
                stages[current] = features[start:i]
                start = i
            current = level
            channels[level], strides[level] = x.shape[1], stride
    stages[current] = features[start:]
    return _StagedSequential(stages, {k: channels[k] for k in stages}, {k: strides[k] for k in stages})


@dataclass(eq=False)
class PretrainedBody:
    """A body built for ``weights: shapes``: its weights come from the crop-classifier pretraining on the
    embedded dataset (:mod:`models.parts.pretrain`), keyed by ``arch`` and ``channels``. A model lists these in
    :attr:`~models.base.TaskModule.pretrained_bodies`; its ``setup("fit")`` loads each once (``loaded``)."""

    body: nn.Module
    arch: str
    channels: tuple[int, ...] | None = None
    loaded: bool = False


def build_body(
    name: str,
    weights: str | None = None,
    channels: Sequence[int] | None = None,
    pretrained_bodies: list[PretrainedBody] | None = None,
) -> nn.Module:
    """The bare network: ``small_cnn`` (ours) or torchvision's resnet18/50, vgg16, mobilenet_v3.

    ``weights`` is passed to torchvision (``"DEFAULT"`` or an enum name such as ``"IMAGENET1K_V1"``);
    None (the default) trains from scratch, since weights cannot be downloaded offline. ``"shapes"``
    builds the body untrained and appends its :class:`PretrainedBody` to ``pretrained_bodies`` (the
    model's :attr:`~models.base.TaskModule.pretrained_bodies`), for the model to load at ``setup("fit")``,
    once the DataModule has generated the dataset.
    """
    if weights == "shapes":
        if pretrained_bodies is None:
            raise ValueError(
                "weights: shapes: the body is loaded when a model is fit; pass the model's pretrained_bodies list"
            )
        body = build_body(name, None, channels)
        pretrained_bodies.append(PretrainedBody(body, name, tuple(channels) if channels else None))
        return body
    if name == "small_cnn":
        if weights is not None:
            raise ValueError("small_cnn has no torchvision weights; use weights: null")
        return SmallCNN(channels) if channels else SmallCNN()
    if name in ("resnet18", "resnet50"):
        return _resnet(name, weights)
    if name == "vgg16":
        return _vgg16(weights)
    if name == "mobilenet_v3":
        return _mobilenet_v3(weights)
    raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}")


# ------------------------------------------------------------------- reference-style fine-tuning
def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by torchvision's ``FrozenBatchNorm2d`` with the same
    statistics, affine parameters and eps (the detection references' backbones: batch statistics of a few
    large images are too noisy to train on)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            if not (child.affine and child.track_running_stats):
                raise ValueError(f"{name}: only affine batch norm with running statistics can be frozen")
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps).to(child.weight.device)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key))
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def freeze_resnet_layers(net: nn.Module, trainable_layers: int) -> None:
    """torchvision's ``trainable_backbone_layers`` on a ResNet (or its IntermediateLayerGetter): only the
    last ``trainable_layers`` of (conv1, layer1 .. layer4) keep ``requires_grad`` (5: all, bn1 included)."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5] for a ResNet, got {trainable_layers}")
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    train += ["bn1"] if trainable_layers == 5 else []
    for name, parameter in net.named_parameters():
        if not any(name.startswith(layer) for layer in train):
            parameter.requires_grad_(False)


def freeze_vgg_layers(layers: Sequence[nn.Module], trainable_layers: int) -> None:
    """torchvision's ``trainable_backbone_layers`` on VGG's ``features`` layers (SSD's rule): of the five
    stages that start at layer 0 and at the first four max-poolings, only the last ``trainable_layers`` train."""
    starts = [0] + [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)][:4]
    if not 0 <= trainable_layers <= len(starts):
        raise ValueError(f"trainable_layers must be in [0, {len(starts)}] for VGG16, got {trainable_layers}")
    freeze_before = len(layers) if trainable_layers == 0 else starts[len(starts) - trainable_layers]
    for layer in layers[:freeze_before]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)


def configure_body(
    body: nn.Module,
    name: str,
    weights: str | None,
    frozen_bn: bool | None = None,
    trainable_layers: int | None = None,
    detection_defaults: bool = False,
) -> nn.Module:
    """Frozen batch norm and frozen first stages for a torchvision body, as the detection references
    fine-tune an ImageNet network; applied to the body of :func:`build_body` in place.

    ``frozen_bn``: ``FrozenBatchNorm2d`` instead of batch norm (ResNets; VGG16 has none). ``trainable_layers``:
    torchvision's ``trainable_backbone_layers`` (ResNet: of conv1, layer1 .. layer4; VGG16: of its five conv
    stages). None leaves the body as built (everything trains), except with ``detection_defaults`` (the
    detectors that torchvision's references train this way: Faster R-CNN, RetinaNet, SSD, FCOS, Mask R-CNN),
    where None picks torchvision's choice: with ImageNet weights (not None nor ``shapes``) frozen batch norm
    and 3 trainable layers for ``resnet18``/``resnet50``/``vgg16``. The segmenters' references (FCN,
    DeepLabv3) train batch norm and every stage, and so do they here.
    """
    tv = name in ("resnet18", "resnet50", "vgg16")
    imagenet = detection_defaults and weights not in (None, "shapes")
    if frozen_bn is None:
        frozen_bn = tv and imagenet and name != "vgg16"
    if trainable_layers is None:
        trainable_layers = 3 if tv and imagenet else None
    if frozen_bn:
        freeze_batchnorm(body)
    if trainable_layers is None:
        return body
    stages = body.stages
    if name in ("resnet18", "resnet50"):
        c2 = stages["c2"]  # conv1, bn1, relu, maxpool, layer1
        named = nn.ModuleDict(
            {
                "conv1": c2[0],
                "bn1": c2[1],
                "layer1": c2[4],
                "layer2": stages["c3"],
                "layer3": stages["c4"],
                "layer4": stages["c5"],
            }
        )
        freeze_resnet_layers(named, trainable_layers)
    elif name == "vgg16":
        freeze_vgg_layers([m for stage in stages.values() for m in stage], trainable_layers)
    else:
        raise ValueError(f"trainable_layers applies to resnet18, resnet50 and vgg16, not {name}")
    return body


class Backbone(nn.Module):
    """A body restricted to ``return_layers``, optionally followed by an FPN.

    Attributes:
        out_channels: channels of every returned map (torchvision's contract; an FPN makes them equal).
        strides: stride of every returned map, in order (anchor generators need them).
    """

    def __init__(
        self,
        body: nn.Module,
        return_layers: Sequence[str],
        fpn: bool = False,
        fpn_channels: int = 64,
        fpn_extra: Literal["none", "maxpool", "p6p7"] = "none",
    ) -> None:
        super().__init__()
        missing = [n for n in return_layers if n not in body.stage_channels]
        if missing:
            raise ValueError(f"return_layers {missing} not in the backbone's stages {list(body.stage_channels)}")
        self.body = body
        self.return_layers = list(return_layers)
        in_channels = [body.stage_channels[n] for n in self.return_layers]
        self.strides = [body.stage_strides[n] for n in self.return_layers]
        if fpn:
            extra = {"none": None, "maxpool": LastLevelMaxPool(), "p6p7": LastLevelP6P7(fpn_channels, fpn_channels)}[
                fpn_extra
            ]
            self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=extra)
            self.out_channels = fpn_channels
            extra_levels = {"none": 0, "maxpool": 1, "p6p7": 2}[fpn_extra]
            self.strides += [self.strides[-1] * 2 ** (i + 1) for i in range(extra_levels)]
        else:
            if fpn_extra != "none":
                raise ValueError("fpn_extra needs fpn: true")
            if len(set(in_channels)) != 1:
                raise ValueError(
                    f"without an FPN the returned stages {self.return_layers} must have equal channels, "
                    f"got {in_channels}"
                )
            self.fpn = None
            self.out_channels = in_channels[0]

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        stages = self.body(x)
        features = OrderedDict((n, stages[n]) for n in self.return_layers)
        return self.fpn(features) if self.fpn is not None else features


def build_backbone(
    name: str = "small_cnn",
    weights: str | None = None,
    return_layers: Sequence[str] = ("c5",),
    fpn: bool = False,
    fpn_channels: int = 64,
    fpn_extra: Literal["none", "maxpool", "p6p7"] = "none",
    channels: Sequence[int] | None = None,
    frozen_bn: bool | None = None,
    trainable_layers: int | None = None,
    detection_defaults: bool = False,
    pretrained_bodies: list[PretrainedBody] | None = None,
) -> Backbone:
    """Build a :class:`Backbone` by name (see :data:`BACKBONES`).

    ``weights: shapes`` registers the body in ``pretrained_bodies`` for the embedded dataset's pretraining
    (see :func:`build_body`); the model loads the weights when training starts (``TaskModule.setup``), from
    the trainer's DataModule, since the dataset may not exist before then.
    ``frozen_bn``, ``trainable_layers``, ``detection_defaults``: see :func:`configure_body`.
    """
    body = build_body(name, weights, channels, pretrained_bodies)
    configure_body(body, name, weights, frozen_bn, trainable_layers, detection_defaults)
    return Backbone(body, return_layers, fpn, fpn_channels, fpn_extra)
