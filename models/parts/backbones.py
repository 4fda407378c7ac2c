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
from typing import Literal, Sequence

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
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
            stages.append(nn.Sequential(conv_bn_relu(in_channels, out_channels, 2), conv_bn_relu(out_channels, out_channels)))
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

    def __init__(self, stages: "OrderedDict[str, nn.Module]", channels: dict[str, int], strides: dict[str, int]) -> None:
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


def _resnet(name: str, weights: str | None) -> _StagedSequential:
    net = getattr(torchvision.models, name)(weights=weights)
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
    f = torchvision.models.vgg16(weights=weights).features
    # Indices of torchvision's VGG16 ``features``: pools at 4, 9, 16, 23, 30. c5 stops before pool5
    # (conv5_3, stride 16), the feature map of Fast and Faster R-CNN.
    stages = OrderedDict(c2=f[:10], c3=f[10:17], c4=f[17:24], c5=f[24:30])
    return _StagedSequential(stages, {"c2": 128, "c3": 256, "c4": 512, "c5": 512}, {"c2": 4, "c3": 8, "c4": 16, "c5": 16})


def _mobilenet_v3(weights: str | None) -> _StagedSequential:
    features = torchvision.models.mobilenet_v3_large(weights=weights).features
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


def build_body(name: str, weights: str | None = None, channels: Sequence[int] | None = None) -> nn.Module:
    """The bare network: ``small_cnn`` (ours) or torchvision's resnet18/50, vgg16, mobilenet_v3.

    ``weights`` is passed to torchvision (``"DEFAULT"`` or an enum name such as ``"IMAGENET1K_V1"``);
    None (the default) trains from scratch, since weights cannot be downloaded offline.
    """
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
            extra = {"none": None, "maxpool": LastLevelMaxPool(), "p6p7": LastLevelP6P7(fpn_channels, fpn_channels)}[fpn_extra]
            self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=extra)
            self.out_channels = fpn_channels
            extra_levels = {"none": 0, "maxpool": 1, "p6p7": 2}[fpn_extra]
            self.strides += [self.strides[-1] * 2 ** (i + 1) for i in range(extra_levels)]
        else:
            if fpn_extra != "none":
                raise ValueError("fpn_extra needs fpn: true")
            if len(set(in_channels)) != 1:
                raise ValueError(
                    f"without an FPN the returned stages {self.return_layers} must have equal channels, got {in_channels}"
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
    data_root: str | None = None,
) -> Backbone:
    """Build a :class:`Backbone` by name (see :data:`BACKBONES`).

    ``weights: shapes`` marks the small CNN for the embedded dataset's pretraining
    (:mod:`models.parts.pretrain`); the weights are loaded when training starts (``TaskModule.setup``),
    from ``data_root`` or else the DataModule's root, since the dataset may not exist before then.
    """
    from models.parts.pretrain import load_pretrained_body  # pretrain imports build_body from here

    body = load_pretrained_body(name, weights, data_root, channels, defer=True)
    return Backbone(body, return_layers, fpn, fpn_channels, fpn_extra)
