"""Benchmarks of the pipeline: ``python -m benchmarks.bench`` (see docs/performance.md)."""
from pathlib import Path

# Repository root: the benchmarks read data/prepared and params.yaml from there and
# start their child processes in it.
ROOT = Path(__file__).resolve().parent.parent


def load_tensorflow_quietly() -> None:
    """Import TensorFlow as the stages do, its start-up lines filtered out, but under its defaults.

    For the plain keras.io example's children, which must not get the project's TensorFlow
    settings: fashion_vae/quiet_tensorflow.py is run from its file, so fashion_vae/__init__.py
    (which sets TF_ENABLE_ONEDNN_OPTS) does not run.
    """
    import importlib.util
    import sys

    if "tensorflow" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("_quiet_tensorflow", ROOT / "fashion_vae" / "quiet_tensorflow.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
