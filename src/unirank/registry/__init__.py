"""Versioned model artefacts under names, with aliases (``prod``) that can be promoted and rolled back."""

from unirank.registry.store import ModelRegistry, ModelVersion, parse_reference

__all__ = ["ModelRegistry", "ModelVersion", "parse_reference"]
