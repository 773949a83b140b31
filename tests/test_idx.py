import struct

import numpy as np
import pytest

from fashion_vae import idx
from fashion_vae.errors import PipelineError


def test_round_trip_images_and_labels():
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    labels = np.array([0, 9, 4], dtype=np.uint8)
    assert np.array_equal(idx.parse(idx.encode(images), "img", (3, 28, 28)), images)
    assert np.array_equal(idx.parse(idx.encode(labels), "lab", (3,)), labels)
    header = idx.encode(images)[:16]
    assert struct.unpack(">IIII", header) == (0x803, 3, 28, 28)


def test_bad_magic_is_refused():
    data = bytearray(idx.encode(np.zeros((2, 28, 28), np.uint8)))
    data[2] = 0x0D  # float32 instead of ubyte
    with pytest.raises(PipelineError, match=r"f\.idx: bad IDX magic number 0x00000d03"):
        idx.parse(bytes(data), "f.idx")


def test_truncated_body_is_refused():
    data = idx.encode(np.zeros((2, 28, 28), np.uint8))[:-10]
    with pytest.raises(PipelineError, match=r"body has 1558 bytes; dimensions \(2, 28, 28\) need 1568"):
        idx.parse(data, "f.idx")


def test_truncated_header_is_refused():
    with pytest.raises(PipelineError, match="truncated IDX header"):
        idx.parse(idx.encode(np.zeros((2, 28, 28), np.uint8))[:10], "f.idx")
    with pytest.raises(PipelineError, match="too short"):
        idx.parse(b"\x00\x00", "f.idx")


def test_wrong_count_is_refused():
    data = idx.encode(np.zeros((5,), np.uint8))
    with pytest.raises(PipelineError, match=r"dimensions \(5,\); expected \(6,\)"):
        idx.parse(data, "labels", (6,))


def test_trailing_bytes_are_refused():
    with pytest.raises(PipelineError, match="body has 6 bytes"):
        idx.parse(idx.encode(np.zeros((5,), np.uint8)) + b"\x00", "labels")
