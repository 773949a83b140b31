"""The latent CSV: one row per test image with its z_mean, z_log_var and class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fashion_vae import atomic
from fashion_vae.dataset import CLASS_NAMES
from fashion_vae.errors import PipelineError


def to_frame(z_mean: np.ndarray, z_log_var: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Columns: index, z0..z{d-1}, log_var0..log_var{d-1}, label, class_name.

    (DVC adds rev, filename, field and step to plot data, so none of those is used.)
    """
    d = z_mean.shape[1]
    frame = pd.DataFrame({"index": np.arange(len(labels))})
    for i in range(d):
        frame[f"z{i}"] = z_mean[:, i]
    for i in range(d):
        frame[f"log_var{i}"] = z_log_var[:, i]
    frame["label"] = labels.astype(int)
    frame["class_name"] = [CLASS_NAMES[c] for c in labels]
    return frame


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic.atomic_open(path, "w") as handle:
        frame.to_csv(handle, index=False, float_format="%.6g")


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read and check a latent CSV; returns the frame."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run the encode stage (dvc repro encode)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: not a readable CSV ({' '.join(str(err).split())})") from None
    if "z0" not in frame or "label" not in frame or "class_name" not in frame:
        raise PipelineError(f"{path}: expected columns index, z0.., log_var0.., label, class_name")
    if frame.empty:
        raise PipelineError(f"{path}: holds no rows; re-run the encode stage (dvc repro encode)")
    z_columns = [c for c in frame.columns if c.startswith("z") and c[1:].isdigit()]
    for column in z_columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise PipelineError(
                f"{path}: column {column} data row {row + 1} is {str(frame[column].iloc[row])!r}; "
                "expected a finite number"
            )
    labels = pd.to_numeric(frame["label"], errors="coerce")
    valid = labels.isin(range(len(CLASS_NAMES)))
    if not valid.all():
        row = int(np.flatnonzero(~valid.to_numpy())[0])
        raise PipelineError(
            f"{path}: column label data row {row + 1} is {str(frame['label'].iloc[row])!r}; "
            f"expected a class 0..{len(CLASS_NAMES) - 1}"
        )
    return frame


def latent_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The z_mean columns z0..z{d-1} as a float array."""
    d = sum(1 for c in frame.columns if c.startswith("z") and c[1:].isdigit())
    return frame[[f"z{i}" for i in range(d)]].to_numpy(dtype=np.float64)
