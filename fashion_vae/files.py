"""Input files are checked before they are read: a regular file of a sane size.

A symlink to /dev/zero, a FIFO or a directory in place of an input would otherwise
make a stage read without end (or block, or print a traceback); a huge file would use
memory without bound. Symlinks to regular files are fine (DVC may link its cache).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from fashion_vae.errors import PipelineError

MiB = 1 << 20
GiB = 1 << 30

# Limits per kind of input, each several times what the full data set needs.
RAW_GZ_MAX_BYTES = 256 * MiB  # largest official file: 47 MB decompressed, 26 MB gzipped
NPZ_MAX_BYTES = 2 * GiB  # full train split: 55,000 float32 images, ~173 MB
MODEL_MAX_BYTES = 2 * GiB  # the default model: 10 MB (weights and optimizer state, stored uncompressed); room for far wider
LATENT_CSV_MAX_BYTES = 512 * MiB  # 10,000 rows; ~0.5 MB at latent_dim 2, ~30 MB at 128

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def describe_size(n_bytes: int) -> str:
    """``1073741824`` -> ``"1 GiB"``; sizes that are not whole MiB/GiB stay in bytes."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB")):
        if n_bytes >= unit and n_bytes % unit == 0:
            return f"{n_bytes // unit} {name}"
    return f"{n_bytes} bytes"


def require_regular_file(path: str | os.PathLike, max_bytes: int, hint: str) -> Path:
    """Check ``path`` (symlinks followed) is a regular file of at most ``max_bytes``.

    ``hint`` says how to get a good file, e.g. "run the train stage (dvc repro train)";
    every failure is one :class:`PipelineError` line naming the file.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; {hint}") from None
    except OSError as err:  # permission denied on a parent, a symlink loop, ...
        raise PipelineError(f"{path}: unreadable ({err.strerror}); {hint}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "a special file")
        raise PipelineError(f"{path}: is {kind}, not a regular file; {hint}")
    if info.st_size > max_bytes:
        raise PipelineError(
            f"{path}: {info.st_size} bytes is larger than the {describe_size(max_bytes)} limit for this "
            f"file; {hint}"
        )
    return path
