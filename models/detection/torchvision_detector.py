"""The base of the detectors that compose torchvision's detection models: Faster R-CNN, Mask R-CNN, RetinaNet,
SSD and FCOS.

torchvision's ``GeneralizedRCNN`` / ``RetinaNet`` / ``SSD`` / ``FCOS`` is the whole network (resize and
normalisation, backbone, proposals or dense head, decoding). A model builds it from our parts and hands it to
:meth:`TorchvisionDetector.attach`, or takes torchvision's COCO model (``weights: torchvision``,
:meth:`TorchvisionDetector.adopt_pretrained`); this base does the rest: ``forward`` on our labels 1..K, the stage
timer's hooks and the test-time NMS IoU, each declared by the subclass as data.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from models.base import DetectionModule
from models.parts.timing import time_method
from models.parts.torchvision_weights import (
    ClassMap,
    adopt_pretrained_detector,
    run_detector,
    run_foreground_detector,
)


class TorchvisionDetector(DetectionModule):
    """A detector whose network is ``self.detector``, a torchvision detection model.

    Class attributes (each subclass's data):
        timed_modules: (attribute of the detector, stage) for each submodule timed at every call.
        timed_method: (attribute of the detector, ``""`` for the detector itself; method; stage) of the step
            that decodes or post-processes the detections.
        nms_owner: the detector's attribute (``""``: the detector itself) whose ``nms_thresh`` is the test-time
            NMS IoU, read and written as :attr:`nms_thresh` (so :meth:`DetectionModule.set_nms_iou` sets it).
        foreground_classifier: the classifier has K sigmoids and no background output (RetinaNet, FCOS), so
            torchvision sees labels 0..K-1 (:func:`~models.parts.torchvision_weights.run_foreground_detector`).

    Arguments the subclasses share:
        weights: besides backbone weights, ``torchvision`` (or ``COCO_V1``) loads torchvision's whole COCO
            model (the builder in :data:`models.parts.torchvision_weights.PRETRAINED_BUILDERS`): its
            architecture and settings, the model's other options unused; ``builder_kwargs`` go to its
            builder (``min_size``, ...).
        frozen_bn, trainable_backbone_layers: the references' fine-tuning of an ImageNet body
            (:func:`models.parts.backbones.configure_body`; None: frozen batch norm and 3 trainable
            stages for ImageNet ResNets / VGG16, nothing frozen otherwise).
    """

    timed_modules: ClassVar[tuple[tuple[str, str], ...]] = (("backbone", "backbone"), ("head", "head"))
    timed_method: ClassVar[tuple[str, str, str]] = ("", "postprocess_detections", "decode_nms")
    nms_owner: ClassVar[str] = ""
    foreground_classifier: ClassVar[bool] = False
    class_map: ClassMap | None = None  # torchvision's COCO categories -> ours, set when a pretrained model is adopted

    def adopt_pretrained(
        self, weights: str | None, trainable_backbone_layers: int | None, builder_kwargs: dict[str, Any] | None
    ) -> bool:
        """Take torchvision's whole pretrained detector when ``weights`` names its weights and return True;
        otherwise return False and the subclass builds its own network for :meth:`attach`."""
        if not adopt_pretrained_detector(self, self.registry_name, weights, trainable_backbone_layers, builder_kwargs):
            return False
        self._time_stages()
        return True

    @property
    def adopted(self) -> bool:
        """Whether ``self.detector`` is torchvision's pretrained model (it then comes with a class map)."""
        return self.class_map is not None

    def attach(self, detector: nn.Module) -> None:
        """Make ``detector``, built from our parts, the network."""
        self.detector = detector
        self._time_stages()

    def _part(self, attribute: str) -> Any:
        return getattr(self.detector, attribute) if attribute else self.detector

    def _time_stages(self) -> None:
        for attribute, stage in self.timed_modules:
            self.stage_timer.instrument(self._part(attribute), stage)
        owner, method, stage = self.timed_method
        time_method(self.stage_timer, self._part(owner), method, stage)

    @property
    def nms_thresh(self) -> float:
        """The IoU of the test-time NMS of the final detections (an RPN's proposal NMS is a separate setting)."""
        return self._part(self.nms_owner).nms_thresh

    @nms_thresh.setter
    def nms_thresh(self, iou: float) -> None:
        self._part(self.nms_owner).nms_thresh = iou

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        if self.adopted:
            return run_detector(self.detector, self.class_map, images, targets)
        if self.foreground_classifier:
            return run_foreground_detector(self.detector, images, targets)
        return self.detector(images, targets)
