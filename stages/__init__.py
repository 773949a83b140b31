"""Thin DVC stage scripts; run each from the repository root as ``python -m stages.NAME``."""
