"""Thin DVC stage scripts; run each from the repository root as ``python -m stages.NAME``."""
import fashion_vae  # noqa: F401  sets TensorFlow's CPU options before dvclive/keras import it
