"""Thin DVC stage scripts; run each from the repository root as ``python -m stages.NAME``."""
import fashion_vae  # noqa: F401  sets TensorFlow's CPU options before dvclive/keras import it
from fashion_vae.stage_handover import hand_over_if_asked

hand_over_if_asked()  # only when FASHION_VAE_STAGE_SERVER names a server (the test suite's)
