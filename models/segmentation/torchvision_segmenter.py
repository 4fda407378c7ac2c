"""The base of the semantic segmenters that can take torchvision's whole pretrained model: FCN and DeepLabv3.

With ``weights: torchvision`` (:func:`models.parts.torchvision_weights.adopt_pretrained_segmenter`) the network
is torchvision's ``fcn_resnet50`` / ``deeplabv3_resnet50`` (COCO's 20 VOC classes mapped to ours) and this base
runs it: its losses (with the auxiliary head's) and its logits, resized around ``eval_size``. Otherwise the
subclass builds its own network and supplies :meth:`TorchvisionSegmenter.segment`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchvision.transforms import Normalize

from models.base import SemanticSegmentationModule
from models.parts.image_ops import IMAGE_MEAN, IMAGE_STD
from models.parts.torchvision_weights import ClassMap, adopt_pretrained_segmenter, run_segmenter, segmenter_losses


class TorchvisionSegmenter(SemanticSegmentationModule):
    """A semantic segmenter that is either its own network (:meth:`segment`) or torchvision's pretrained one.

    Args:
        eval_size: with torchvision's model, eval inputs are resized to this shorter side and the logits back
            (its weights' transform: 520); None keeps the input size.
        aux_loss_weight: the loss weight of torchvision's auxiliary head (0.5, as its reference training).
    """

    class_map: ClassMap | None = None  # torchvision's categories -> ours, set when its model is adopted

    def __init__(self, eval_size: int | None = None, aux_loss_weight: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eval_size, self.aux_loss_weight = eval_size, aux_loss_weight
        self.normalize = Normalize(IMAGE_MEAN, IMAGE_STD)

    def adopt_pretrained(self, weights: str | None, stages: tuple[str, str]) -> bool:
        """Take torchvision's whole pretrained model when ``weights`` names its weights (its backbone and
        classifier timed as ``stages``) and return True; otherwise return False."""
        return adopt_pretrained_segmenter(self, self.registry_name, weights, stages)

    def segment(self, images: Tensor) -> Tensor:
        """The subclass's own network: B x 3 x H x W images in [0, 1] -> B x (K+1) x H x W logits."""
        raise NotImplementedError

    def compute_losses(self, batch: Any) -> dict[str, Tensor]:
        if self.class_map is None:
            return super().compute_losses(batch)
        images, masks = batch
        out = run_segmenter(self.network, self.class_map, self.normalize(images))
        return segmenter_losses(out, masks, self.class_weights, self.ignore_index, self.aux_loss_weight)

    def forward(self, images: Tensor) -> Tensor:
        if self.class_map is not None:
            return run_segmenter(self.network, self.class_map, self.normalize(images), self.eval_size)["out"]
        return self.segment(images)
