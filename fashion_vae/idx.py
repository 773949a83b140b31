"""Reading and writing the IDX format that Fashion-MNIST ships in.

The reader checks the magic number, the dimensions and the byte count, and refuses
anything else with a :class:`PipelineError` naming the file.
"""
from __future__ import annotations

import struct

import numpy as np

from fashion_vae.errors import PipelineError

UBYTE = 0x08
IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, cols)
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)


def parse(data: bytes, name: str, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Parse IDX ``data`` into a uint8 array; ``expected_shape`` pins the dimensions."""
    if len(data) < 4:
        raise PipelineError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    magic = struct.unpack(">I", data[:4])[0]
    if zero != 0 or dtype_code != UBYTE or ndim not in (1, 3):
        raise PipelineError(
            f"{name}: bad IDX magic number 0x{magic:08x}; expected 0x{IMAGE_MAGIC:08x} (images) "
            f"or 0x{LABEL_MAGIC:08x} (labels)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise PipelineError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise PipelineError(f"{name}: IDX dimensions {tuple(shape)}; expected {tuple(expected_shape)}")
    size = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != size:
        raise PipelineError(
            f"{name}: IDX body has {len(data) - header} bytes; dimensions {tuple(shape)} need {size}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def encode(array: np.ndarray) -> bytes:
    """Serialise a uint8 array of 1 or 3 dimensions as IDX (used by tests and tools)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim not in (1, 3):
        raise ValueError("IDX arrays here have 1 (labels) or 3 (images) dimensions")
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()
