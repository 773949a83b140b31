"""The prepared ``.npz`` splits: building them from raw arrays, saving and loading.

Each file holds ``x`` (float32, shape (N, 28, 28, 1), values in [0, 1]), ``y`` (uint8
labels 0..9) and ``class_names``. Loading never unpickles and checks every array.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from fashion_vae import atomic, files
from fashion_vae.dataset import CLASS_NAMES
from fashion_vae.errors import PipelineError

SPLITS = ("train", "val", "test")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # first bytes of a zip archive (the second: empty)
IMAGE_SHAPE = (28, 28, 1)


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype(np.float32) / np.float32(255.0))[..., np.newaxis]


def _stratified_subset(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified random subset of ``size`` (sorted, so order is stable)."""
    if size >= len(y):
        return np.arange(len(y))
    keep, _ = train_test_split(np.arange(len(y)), train_size=size, stratify=y, random_state=seed)
    return np.sort(keep)


def build_splits(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    val_size: int,
    seed: int,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Normalise, hold a stratified validation split out of train, optionally subsample."""
    if limit_train is not None:
        keep = _stratified_subset(train_labels, limit_train, seed)
        train_images, train_labels = train_images[keep], train_labels[keep]
    if limit_test is not None:
        keep = _stratified_subset(test_labels, limit_test, seed)
        test_images, test_labels = test_images[keep], test_labels[keep]
    n_classes = len(np.unique(train_labels))
    if not n_classes <= val_size <= len(train_labels) - n_classes:
        raise PipelineError(
            f"prepare.val_size = {val_size} must be between {n_classes} and "
            f"{len(train_labels) - n_classes} for {len(train_labels)} training images"
        )
    train_idx, val_idx = train_test_split(
        np.arange(len(train_labels)), test_size=val_size, stratify=train_labels, random_state=seed
    )
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    return {
        "train": (normalise(train_images[train_idx]), train_labels[train_idx].astype(np.uint8)),
        "val": (normalise(train_images[val_idx]), train_labels[val_idx].astype(np.uint8)),
        "test": (normalise(test_images), test_labels.astype(np.uint8)),
    }


def save_split(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    with atomic.atomic_open(path, "wb") as handle:
        np.savez(handle, x=x, y=y, class_names=np.array(CLASS_NAMES))


def load_split(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load and check one prepared split; any defect is a one-line error naming the file."""
    hint = "run the prepare stage (dvc repro prepare)"
    path = files.require_regular_file(path, files.NPZ_MAX_BYTES, hint)
    try:
        with path.open("rb") as handle:
            # np.load takes any non-zip bytes for a pickle (and suggests unpickling them).
            if handle.read(4) not in ZIP_MAGIC:
                raise PipelineError(
                    f"{path}: not a readable .npz file (no zip header); re-run the prepare stage "
                    "(dvc repro prepare)"
                )
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run the prepare stage (dvc repro prepare)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # truncated, corrupt
        raise PipelineError(
            f"{path}: not a readable .npz file ({' '.join(str(err).split())}); re-run the prepare stage "
            "(dvc repro prepare)"
        ) from None
    for key in ("x", "y"):
        if key not in arrays:
            raise PipelineError(f"{path}: array {key!r} missing; expected arrays x, y, class_names")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise PipelineError(
            f"{path}: x has dtype {x.dtype} and shape {x.shape}; expected float32 (N, 28, 28, 1)"
        )
    if y.dtype != np.uint8 or y.shape != (x.shape[0],):
        raise PipelineError(f"{path}: y has dtype {y.dtype} and shape {y.shape}; expected uint8 ({x.shape[0]},)")
    if len(x) == 0:
        raise PipelineError(f"{path}: holds no images")
    if y.max() >= len(CLASS_NAMES):
        raise PipelineError(f"{path}: label {int(y.max())} outside 0..{len(CLASS_NAMES) - 1}")
    if not np.isfinite(x).all():
        raise PipelineError(f"{path}: x holds NaN or infinite pixel values; expected values within [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise PipelineError(f"{path}: pixel values span [{lo}, {hi}]; expected within [0, 1]")
    return x, y
