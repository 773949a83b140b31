"""The latent CSV: one row per test image with its z_mean, z_log_var and class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fashion_vae import atomic, files
from fashion_vae.dataset import CLASS_NAMES
from fashion_vae.errors import PipelineError


def to_frame(z_mean: np.ndarray, z_log_var: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Columns: index, z0..z{d-1}, log_var0..log_var{d-1}, label, class_name.

    (DVC adds rev, filename, field and step to plot data, so none of those is used.)
    """
    d = z_mean.shape[1]
    # All columns at once: inserting hundreds one by one fragments the frame (pandas warns).
    columns = {"index": np.arange(len(labels))}
    columns.update({f"z{i}": z_mean[:, i] for i in range(d)})
    columns.update({f"log_var{i}": z_log_var[:, i] for i in range(d)})
    columns["label"] = labels.astype(int)
    columns["class_name"] = [CLASS_NAMES[c] for c in labels]
    return pd.DataFrame(columns)


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic.atomic_open(path, "w") as handle:
        frame.to_csv(handle, index=False, float_format="%.6g")


ENCODE_HINT = "re-run the encode stage (dvc repro encode)"


def columns(latent_dim: int) -> list[str]:
    """The exact header of a latent CSV for ``latent_dim``."""
    return [
        "index", *(f"z{i}" for i in range(latent_dim)), *(f"log_var{i}" for i in range(latent_dim)),
        "label", "class_name",
    ]


def _describe_columns(latent_dim: int) -> str:
    if latent_dim == 1:
        return "index, z0, log_var0, label, class_name"
    last = latent_dim - 1
    return f"index, z0..z{last}, log_var0..log_var{last}, label, class_name"


def _check_columns(frame: pd.DataFrame, path: Path, latent_dim: int | None) -> None:
    found = [str(c) for c in frame.columns]
    if latent_dim is None:  # no model to compare with: as many z columns as the file has
        latent_dim = sum(1 for c in found if c.startswith("z") and c[1:].isdigit())
        if latent_dim == 0:
            raise PipelineError(
                f"{path}: no column z0; expected columns index, z0..z(d-1), log_var0..log_var(d-1), label, "
                f"class_name; {ENCODE_HINT}"
            )
        source = f"latent_dim = {latent_dim}"
    else:
        source = f"the model's latent_dim = {latent_dim}"
    expected = columns(latent_dim)
    if found == expected:
        return
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    problems = [f"missing column {', '.join(missing)}"] if missing else []
    problems += [f"unexpected column {', '.join(extra)}"] if extra else []
    problem = "; ".join(problems) or f"columns in the order {', '.join(found)}"
    raise PipelineError(
        f"{path}: {problem}; expected columns {_describe_columns(latent_dim)} for {source}; {ENCODE_HINT}"
    )


def _check_finite(frame: pd.DataFrame, path: Path, column: str) -> None:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise PipelineError(
            f"{path}: column {column} data row {row + 1} is {str(frame[column].iloc[row])!r}; "
            "expected a finite number"
        )


def read_csv(
    path: str | Path,
    latent_dim: int | None = None,
    expected_labels: np.ndarray | None = None,
    labels_source: str = "the test split",
) -> pd.DataFrame:
    """Read and check a latent CSV; returns the frame.

    Checked: a regular file of sane size; exactly the columns of ``columns(latent_dim)``;
    finite numbers; labels 0..9; and, given ``expected_labels`` (the test split's, read
    from ``labels_source``), one row per test image with the same labels in the same order,
    so a stale or foreign CSV is refused instead of plotted.
    """
    hint = "run the encode stage (dvc repro encode)"
    path = files.require_regular_file(path, files.LATENT_CSV_MAX_BYTES, hint)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: not a readable CSV ({' '.join(str(err).split())})") from None
    except OSError as err:
        raise PipelineError(f"{path}: unreadable ({err.strerror}); {ENCODE_HINT}") from None
    _check_columns(frame, path, latent_dim)
    if frame.empty:
        raise PipelineError(f"{path}: holds no rows; {ENCODE_HINT}")
    if expected_labels is not None and len(frame) != len(expected_labels):
        raise PipelineError(
            f"{path}: {len(frame)} data rows but {labels_source} has {len(expected_labels)} images; "
            + ENCODE_HINT
        )
    for column in frame.columns[1:-2]:  # z0.., log_var0..
        _check_finite(frame, path, column)
    labels = pd.to_numeric(frame["label"], errors="coerce")
    valid = labels.isin(range(len(CLASS_NAMES)))
    if not valid.all():
        row = int(np.flatnonzero(~valid.to_numpy())[0])
        raise PipelineError(
            f"{path}: column label data row {row + 1} is {str(frame['label'].iloc[row])!r}; "
            f"expected a class 0..{len(CLASS_NAMES) - 1}"
        )
    index = pd.to_numeric(frame["index"], errors="coerce").to_numpy()
    wrong = np.flatnonzero(index != np.arange(len(frame)))
    if len(wrong):
        row = int(wrong[0])
        raise PipelineError(
            f"{path}: column index data row {row + 1} is {str(frame['index'].iloc[row])!r}; expected {row}"
        )
    if expected_labels is not None:
        differ = np.flatnonzero(labels.to_numpy() != np.asarray(expected_labels))
        if len(differ):
            row = int(differ[0])
            raise PipelineError(
                f"{path}: data row {row + 1} has label {int(labels.iloc[row])} but image {row} of "
                f"{labels_source} has label {int(expected_labels[row])} ({len(differ)} rows differ); "
                + ENCODE_HINT
            )
    return frame


def latent_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The z_mean columns z0..z{d-1} as a float array."""
    d = sum(1 for c in frame.columns if c.startswith("z") and c[1:].isdigit())
    return frame[[f"z{i}" for i in range(d)]].to_numpy(dtype=np.float64)
