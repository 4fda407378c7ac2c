"""Exact detection and segmentation metrics: the course's evaluator, Pascal VOC, COCO, mIoU."""

from .boxes import box_area, box_iou
from .coco import COCO_STAT_NAMES, coco_evaluate
from .data import FlatDetections
from .latency import measure_latency
from .lecture import calc_precision_recall, get_avg_precision_at_iou, get_single_image_results
from .segmentation import confusion_matrix, segmentation_scores
from .torchmetrics_wrappers import DetectionMetrics, SegmentationMetrics, evaluate_detections
from .voc import voc_ap, voc_evaluate, voc_map

__all__ = [
    "COCO_STAT_NAMES",
    "DetectionMetrics",
    "FlatDetections",
    "SegmentationMetrics",
    "box_area",
    "box_iou",
    "calc_precision_recall",
    "coco_evaluate",
    "confusion_matrix",
    "evaluate_detections",
    "get_avg_precision_at_iou",
    "get_single_image_results",
    "measure_latency",
    "segmentation_scores",
    "voc_ap",
    "voc_evaluate",
    "voc_map",
]
