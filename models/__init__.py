"""Detectors and segmenters of the course, one LightningModule each, found by short name."""

from models.registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
