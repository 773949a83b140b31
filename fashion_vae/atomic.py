"""Atomic file writes: write to a temporary file beside the target, then rename.

A failed or killed stage therefore never leaves a half-written output, and an
existing good file is only replaced by a complete new one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, Mapping

from fashion_vae.errors import PipelineError

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_error(path: str | os.PathLike, err: OSError) -> PipelineError:
    """A full disk, a file-size limit or a read-only directory, as one line naming ``path``."""
    reason = err.strerror or str(err) or type(err).__name__
    return PipelineError(
        f"{path}: cannot write ({reason}); free disk space or fix the permissions, then re-run the stage"
    )


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it over ``path`` on success.

    Any OS error while writing becomes a one-line :class:`PipelineError` naming ``path``,
    and the temporary file is removed: the previous ``path`` is left as it was.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
    except OSError as err:
        raise write_error(target, err) from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(err, OSError):
            raise write_error(target, err) from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def replace_dir(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move a fully written ``staging`` directory to ``target``, replacing it."""
    staging, target = Path(staging), Path(target)
    try:
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except OSError as err:
        raise write_error(target, err) from None


def probe_writable(directory: str | os.PathLike, size_bytes: int) -> None:
    """Write and delete a ``size_bytes`` scratch file in ``directory``, or fail with one line.

    Called before a long job so that a read-only directory, a full disk or a file-size
    limit stops it at the start rather than after hours of work.
    """
    directory = Path(directory)
    chunk = b"\0" * (1 << 20)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe.", suffix=".tmp") as handle:
            for start in range(0, size_bytes, len(chunk)):
                handle.write(chunk[: min(len(chunk), size_bytes - start)])
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise PipelineError(
            f"{directory}/: cannot write a {size_bytes / 1e6:.1f} MB file ({reason}); free disk space or fix "
            "the permissions before training"
        ) from None


@contextlib.contextmanager
def exclusive_lock(directory: str | os.PathLike, holder: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``directory`` (no lock file to leave behind).

    The kernel releases it when the process ends, however it ends. A second process
    asking for it fails at once with one line instead of interleaving its writes.
    """
    import fcntl

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY)
    except OSError as err:
        raise PipelineError(f"{directory}/: cannot open ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(
                f"{directory}/: {holder} is already running in this workspace; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def remove_path(path: str | os.PathLike) -> None:
    """Remove a scratch file or directory if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_all(contents: Mapping[str | os.PathLike, bytes]) -> None:
    """Replace several files as a set: all of them, or (on any failure) none.

    Every target is checked first (a directory cannot be replaced by a file), then every
    temporary file is written beside its target, and only when all are complete are they
    renamed over the targets, so a failure before the renames leaves every target as it was.
    """
    targets = {Path(path): data for path, data in contents.items()}
    for target in targets:
        if target.is_dir():
            raise PipelineError(f"{target}: is a directory, not a file; remove it, then re-run the stage")
    staged: list[tuple[str, Path]] = []
    try:
        for target, data in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged.append((tmp_name, target))
            os.chmod(tmp_name, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        while staged:
            tmp_name, target = staged[0]
            os.replace(tmp_name, target)
            staged.pop(0)
    except OSError as err:
        raise write_error(target, err) from None
    finally:
        for tmp_name, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
