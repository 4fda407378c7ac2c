"""Semantic and instance segmentation models (registered on import)."""
