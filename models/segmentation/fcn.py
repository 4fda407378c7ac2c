"""FCN: a fully convolutional network that downsamples, then upsamples inside the network.

The course's design (slides 133-154; Long, Shelhamer and Darrell, CVPR 2015; Noh et al., ICCV 2015):
an encoder halves the resolution stage by stage (max pooling or strided convolution), a decoder
doubles it back stage by stage with the configured upsampling (nearest or "bed of nails" unpooling,
max unpooling with the encoder's pooling indices as SegNet, learnable transpose convolution, or
bilinear interpolation) followed by a 3x3 convolution, and a 1x1 classifier scores every pixel.

Skip fusion (Long et al. 2015, Sec. 4.2): FCN-16s adds a zero-initialised 1x1 layer on pool4
(stride 16) to the upsampled coarse map, FCN-8s adds pool3 (stride 8) as well, so a net starts as
FCN-32s and learns to use the finer layers. FCN fuses class scores; here the decoder carries
features (max unpooling needs the encoder's channels), so the 1x1 layers project pool3/pool4 to the
decoder's width and the sum is taken before the next upsampling, the same additive fusion.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from models.parts.backbones import PretrainedBody, build_body, conv_bn_relu
from models.parts.upsampling import UpsamplingKind, build_upsampler, pad_to_multiple
from models.registry import register_model
from models.segmentation.torchvision_segmenter import TorchvisionSegmenter

Downsampling = Literal["max_pool", "strided_conv"]
SkipFusion = Literal["32s", "16s", "8s"]
_FUSED_STRIDES = {"32s": (), "16s": (16,), "8s": (16, 8)}


class PoolingEncoder(nn.Module):
    """Stages of ``convs_per_stage`` 3x3 conv-BN-ReLU layers, each stage ending in a 2x downsampling:
    max pooling (whose indices max unpooling reuses) or a stride-2 conv-BN-ReLU.

    ``forward`` returns the stage outputs by stride and, for max pooling, the pooling indices by stride.
    """

    def __init__(
        self, channels: Sequence[int], downsample: Downsampling = "max_pool", convs_per_stage: int = 1
    ) -> None:
        super().__init__()
        if downsample not in ("max_pool", "strided_conv"):
            raise ValueError(f"unknown downsample {downsample!r}; expected max_pool or strided_conv")
        self.downsample = downsample
        self.convs = nn.ModuleList()
        self.strided = nn.ModuleList()
        in_channels = 3
        for width in channels:
            layers = [conv_bn_relu(in_channels if i == 0 else width, width) for i in range(convs_per_stage)]
            self.convs.append(nn.Sequential(*layers))
            self.strided.append(conv_bn_relu(width, width, stride=2) if downsample == "strided_conv" else nn.Identity())
            in_channels = width
        self.stage_channels = {2 ** (i + 1): width for i, width in enumerate(channels)}

    def forward(self, x: Tensor) -> tuple["OrderedDict[int, Tensor]", dict[int, Tensor]]:
        features: OrderedDict[int, Tensor] = OrderedDict()
        indices: dict[int, Tensor] = {}
        for i, (convs, strided) in enumerate(zip(self.convs, self.strided)):
            stride = 2 ** (i + 1)
            x = convs(x)
            if self.downsample == "max_pool":
                x, indices[stride] = F.max_pool2d(x, 2, return_indices=True)
            else:
                x = strided(x)
            features[stride] = x
        return features, indices


class BackboneEncoder(nn.Module):
    """A body of :func:`models.parts.backbones.build_body` returning its stages by stride (the last
    stage of each stride) and no pooling indices. A body that stops at stride 16 (VGG16's conv5_3)
    gets FCN's pool5, a 2x max pooling to stride 32. ``weights: shapes`` registers the body in
    ``pretrained_bodies`` (the model's), loaded at ``setup("fit")`` (see :mod:`models.parts.pretrain`)."""

    def __init__(
        self, name: str, weights: str | None = None, pretrained_bodies: list[PretrainedBody] | None = None
    ) -> None:
        super().__init__()
        self.body = build_body(name, weights, pretrained_bodies=pretrained_bodies)
        self.stage_of_stride = {self.body.stage_strides[n]: n for n in self.body.stage_channels}
        self.stage_channels = {s: self.body.stage_channels[n] for s, n in sorted(self.stage_of_stride.items())}
        coarsest = max(self.stage_channels)
        self.pool5 = coarsest == 16
        if self.pool5:
            self.stage_channels[32] = self.stage_channels[16]

    def forward(self, x: Tensor) -> tuple["OrderedDict[int, Tensor]", dict[int, Tensor]]:
        stages = self.body(x)
        features = OrderedDict((s, stages[n]) for s, n in sorted(self.stage_of_stride.items()))
        if self.pool5:
            features[32] = F.max_pool2d(features[16], 2)
        return features, {}


class UpsamplingDecoder(nn.Module):
    """From the coarsest encoder map back to stride 1 in 2x steps, each an upsampling of the chosen
    ``kind`` then a 3x3 conv-BN-ReLU to the width of the encoder stage at the new stride; at the
    strides in ``fused_strides`` a zero-initialised 1x1 projection of that encoder stage is added
    (FCN-16s / 8s skip fusion)."""

    def __init__(self, stage_channels: dict[int, int], kind: UpsamplingKind, fused_strides: Sequence[int] = ()) -> None:
        super().__init__()
        strides = sorted(stage_channels)
        self.top_stride = strides[-1]
        bad = [s for s in fused_strides if s not in stage_channels or s >= self.top_stride]
        if bad:
            raise ValueError(
                f"skip fusion at strides {bad} needs encoder stages finer than the coarsest {self.top_stride}"
            )
        self.steps = nn.ModuleList()
        self.skips = nn.ModuleDict()
        width, stride = stage_channels[self.top_stride], self.top_stride
        while stride > 1:
            out_width = stage_channels.get(stride // 2, width)
            self.steps.append(
                nn.ModuleDict({"up": build_upsampler(kind, width, 2), "conv": conv_bn_relu(width, out_width)})
            )
            stride, width = stride // 2, out_width
            if stride in fused_strides:
                skip = nn.Conv2d(stage_channels[stride], width, 1)
                nn.init.zeros_(skip.weight)
                nn.init.zeros_(skip.bias)
                self.skips[str(stride)] = skip
        self.out_channels = width

    def forward(self, features: "OrderedDict[int, Tensor]", pool_indices: dict[int, Tensor]) -> Tensor:
        x, stride = features[self.top_stride], self.top_stride
        for step in self.steps:
            x = step["conv"](step["up"](x, pool_indices.get(stride)))
            stride //= 2
            if str(stride) in self.skips:
                x = x + self.skips[str(stride)](features[stride])
        return x


@register_model("fcn", family="semantic_segmentation")
class FCN(TorchvisionSegmenter):
    """Encoder-decoder FCN; every option of the course's slides by config.

    Args:
        upsampling: ``nearest`` | ``bed_of_nails`` | ``max_unpool`` | ``transpose`` | ``bilinear``.
        downsample: ``max_pool`` or ``strided_conv`` (the built-in encoder only).
        skip_fusion: ``32s`` (none), ``16s`` (pool4) or ``8s`` (pool4 and pool3).
        channels: widths of the built-in encoder's stages (stage k at stride 2**k).
        convs_per_stage: 3x3 convolutions per encoder stage before its downsampling.
        backbone, weights: instead of the built-in encoder, a body of ``build_backbone`` (e.g. ``vgg16``
            as the paper) with torchvision weights, or ``weights: shapes`` pretrained as a classifier on the
            embedded dataset of the trainer's DataModule (:mod:`models.parts.pretrain`); a body has no
            pooling indices.
        weights: besides body weights, ``torchvision`` (or ``COCO_WITH_VOC_LABELS_V1``) loads torchvision's
            whole ``fcn_resnet50`` (COCO's 20 VOC classes, :mod:`models.parts.torchvision_weights`), the other
            options unused; ``eval_size``, ``aux_loss_weight``: see
            :class:`~models.segmentation.torchvision_segmenter.TorchvisionSegmenter`.
    """

    def __init__(
        self,
        upsampling: UpsamplingKind = "transpose",
        downsample: Downsampling = "max_pool",
        skip_fusion: SkipFusion = "8s",
        channels: Sequence[int] = (16, 32, 64, 128, 128),
        convs_per_stage: int = 1,
        backbone: str | None = None,
        weights: str | None = None,
        eval_size: int | None = None,
        aux_loss_weight: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(eval_size, aux_loss_weight, **kwargs)
        if self.adopt_pretrained(weights, stages=("encoder", "decoder")):
            return
        if skip_fusion not in _FUSED_STRIDES:
            raise ValueError(f"unknown skip_fusion {skip_fusion!r}; expected one of {list(_FUSED_STRIDES)}")
        if backbone is None:
            self.encoder = PoolingEncoder(channels, downsample, convs_per_stage)
        else:
            self.encoder = BackboneEncoder(backbone, weights, self.pretrained_bodies)
        if upsampling == "max_unpool" and not (backbone is None and downsample == "max_pool"):
            raise ValueError(
                "upsampling: max_unpool needs the pooling indices of the built-in encoder: "
                "use backbone: null and downsample: max_pool"
            )
        self.decoder = UpsamplingDecoder(self.encoder.stage_channels, upsampling, _FUSED_STRIDES[skip_fusion])
        self.classifier = nn.Conv2d(self.decoder.out_channels, self.num_classes + 1, 1)
        self.stage_timer.instrument(self.encoder, "encoder")
        self.stage_timer.instrument(self.decoder, "decoder")

    def segment(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        x = pad_to_multiple(self.normalize(images), self.decoder.top_stride)
        features, pool_indices = self.encoder(x)
        return self.classifier(self.decoder(features, pool_indices))[..., :height, :width]
