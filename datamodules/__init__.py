"""LightningDataModules for Pascal VOC, COCO and the embedded synthetic shapes dataset.

See ``docs/data.md`` for the formats, conventions and the bad-input policy.
"""

from datamodules.base import AnnotatedDataset, BaseDataModule, ImageRecord, collate_detection, collate_semantic
from datamodules.checks import DatasetError, DatasetWarning
from datamodules.coco import COCODataModule, COCODataset
from datamodules.shapes import ShapesDataModule
from datamodules.transforms import build_transform
from datamodules.voc import VOC_CLASSES, VOCDataModule, VOCDataset

__all__ = [
    "AnnotatedDataset",
    "BaseDataModule",
    "COCODataModule",
    "COCODataset",
    "DatasetError",
    "DatasetWarning",
    "ImageRecord",
    "ShapesDataModule",
    "VOCDataModule",
    "VOCDataset",
    "VOC_CLASSES",
    "build_transform",
    "collate_detection",
    "collate_semantic",
]
