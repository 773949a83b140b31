"""Benchmarks of the pipeline: ``python -m benchmarks.bench`` (see docs/performance.md)."""
from pathlib import Path

# Repository root: the benchmarks read data/prepared and params.yaml from there and
# start their child processes in it.
ROOT = Path(__file__).resolve().parent.parent
