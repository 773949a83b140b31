"""TensorFlow, imported with its start-up noise filtered out of the process's stderr.

On a machine without CUDA, ``import tensorflow`` and its first device probe print lines
such as ``All log messages before absl::InitializeLog()``, ``oneDNN custom operations
are on``, ``Could not find cuda drivers`` and ``failed call to cuInit``. They come from
C++ before absl's logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them. Here
file descriptor 2 is captured while TensorFlow loads and probes its devices, and every
captured line except those known start-up messages is written back, so real errors
still reach the user. Import this module before anything that imports TensorFlow or
Keras (dvclive's Keras callback included).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|\] oneDNN custom operations are on\."
    r"|\] Could not find cuda drivers on your machine"
    r"|\] failed call to cuInit: "
    r"|\] Unable to register cu(DNN|FFT|BLAS) factory"
    r"|\] TF-TRT Warning: Could not find TensorRT"
    r"|\] This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
)


def is_noise(line: str) -> bool:
    return bool(NOISE.search(line))


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Capture fd 2 (C++ and Python writes alike); afterwards replay all but the noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    # An anonymous in-memory file where Linux has one: no temporary directory needed (a stage
    # without a writable one then says so in its own line instead of a traceback here).
    opened = (os.fdopen(os.memfd_create("tensorflow-start-up"), "w+b") if hasattr(os, "memfd_create")
              else tempfile.TemporaryFile(mode="w+b"))
    with opened as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


with filtered_stderr():
    import tensorflow as tf

    tf.config.list_physical_devices()  # the CUDA probe (cuInit) happens here, inside the filter
