"""The machine a benchmark ran on: CPU model and SIMD flags, library versions, matmul ceiling.

The numpy float32 matmul rate is the ceiling the training throughput is compared with
(``fraction_of_matmul_peak``); bench.py measures it at the start, middle and end of a run.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np


def machine_info() -> dict:
    cpu_model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu_model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "simd": sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"}),
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
    }


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def matmul_gflops(n: int, repeats: int) -> float:
    """Best-of-``repeats`` numpy float32 ``n x n`` matmul rate (GFLOP/s)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool, page faults
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def timed(fn) -> float:
    """Wall seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
