"""Fault injection (issue 14): hostile or stale *input files* of the stages.

Same machinery and the same three assertions as tests/test_faults.py (non-zero exit, one
``error: ...`` line and no traceback, every output byte-identical), for inputs the probe
found unchecked: a latent CSV that does not match the model or test.npz, a PNG target that
is a directory, and inputs that are symlinks to /dev/zero (read without end before).

Every stage runs under a memory limit and a timeout, so a regression that reads
/dev/zero again fails the test instead of eating the machine's memory.
"""
from __future__ import annotations

import re

import pytest

from fashion_vae import dataset
from tests.conftest import SMALL_PARAMS, project_env
from tests.test_faults import (  # noqa: F401  (fixtures imported here are registered for this module)
    MODEL,
    PREPARED,
    Case,
    Workspace,
    assert_clear_failure,
    assert_unchanged,
    workspace,
    ws,
)

pytestmark = pytest.mark.e2e

CSV = "data/latent/test_latent.csv"
TEST_NPZ = f"{PREPARED}/test.npz"
TEST_IMAGES = SMALL_PARAMS["prepare"]["limit_test"]
MEMORY_LIMIT = 6 << 30  # address space: TensorFlow's start-up maps ~2.2 GiB; the stages need < 4
TIMEOUT_S = 240  # a stage here fails in seconds; a regression reading /dev/zero would not
ENCODE_HINT = r"re-run the encode stage \(dvc repro encode\)$"
COLUMNS_2D = (r"expected columns index, z0\.\.z1, log_var0\.\.log_var1, label, class_name for the model's "
              r"latent_dim = 2; ")


def identities(ws: Workspace) -> dict[str, tuple[int, int]]:
    """Inode and mtime of every output: a file rewritten with the same bytes still shows up."""
    return {rel: ((ws.root / rel).stat().st_ino, (ws.root / rel).stat().st_mtime_ns) for rel in ws.files()}


def stage(ws: Workspace, name: str):
    return ws.server.run(name, ws.root, project_env(), timeout=TIMEOUT_S, rlimits={"RLIMIT_AS": MEMORY_LIMIT})


# -- faults ----------------------------------------------------------------------------------


def csv_lines(ws: Workspace) -> tuple[list[str], list[list[str]]]:
    header, *rows = ws.pristine[CSV].decode().splitlines()
    return header.split(","), [row.split(",") for row in rows]


def write_csv(ws: Workspace, header: list[str], rows: list[list[str]]) -> None:
    ws.write(CSV, "\n".join(",".join(fields) for fields in [header, *rows]).encode() + b"\n")


def csv_without(column: str):
    def fault(ws: Workspace) -> None:
        header, rows = csv_lines(ws)
        keep = [i for i, name in enumerate(header) if name != column]
        write_csv(ws, [header[i] for i in keep], [[row[i] for i in keep] for row in rows])

    return fault


def csv_with_extra_z2(ws: Workspace) -> None:
    """A third latent coordinate, as from a model with latent_dim 3 (right after z1)."""
    header, rows = csv_lines(ws)
    at = header.index("z1") + 1
    write_csv(ws, header[:at] + ["z2"] + header[at:], [row[:at] + ["0.25"] + row[at:] for row in rows])


def csv_twice_the_rows(ws: Workspace) -> None:
    """The probe's case: twice as many rows as test images (index renumbered, so only the count is off)."""
    header, rows = csv_lines(ws)
    doubled = [row.copy() for row in rows + rows]
    for i, row in enumerate(doubled):
        row[header.index("index")] = str(i)
    write_csv(ws, header, doubled)


def first_two_different_labels(ws: Workspace) -> tuple[int, int, str, str]:
    header, rows = csv_lines(ws)
    label = header.index("label")
    other = next(j for j, row in enumerate(rows) if row[label] != rows[0][label])
    return 0, other, rows[0][label], rows[other][label]


def csv_labels_swapped(ws: Workspace) -> None:
    """Two rows' labels (and class names) swapped: a CSV of some other ordering of the test set."""
    header, rows = csv_lines(ws)
    i, j, _, _ = first_two_different_labels(ws)
    for column in ("label", "class_name"):
        k = header.index(column)
        rows[i][k], rows[j][k] = rows[j][k], rows[i][k]
    write_csv(ws, header, rows)


def directory_at(rel: str):
    def fault(ws: Workspace) -> None:
        (ws.root / rel).unlink()
        (ws.root / rel).mkdir()

    return fault


def symlink_to_dev_zero(rel: str):
    def fault(ws: Workspace) -> None:
        (ws.root / rel).unlink()
        (ws.root / rel).symlink_to("/dev/zero")

    return fault


NOT_REGULAR = "is a character device, not a regular file; "
RAW_LABELS = dataset.RAW_FILES["test_labels"].name
STILL_DIRECTORY = {"csv-is-directory": CSV, "samples-png-is-directory": "plots/samples.png"}

CASES = [
    Case("csv-missing-z1", "plot", csv_without("z1"),
         rf"^error: data/latent/test_latent\.csv: missing column z1; {COLUMNS_2D}{ENCODE_HINT}"),
    Case("csv-extra-z2", "plot", csv_with_extra_z2,
         rf"^error: data/latent/test_latent\.csv: unexpected column z2; {COLUMNS_2D}{ENCODE_HINT}"),
    Case("csv-is-directory", "plot", directory_at(CSV),
         r"^error: data/latent/test_latent\.csv: is a directory, not a regular file; "
         r"run the encode stage \(dvc repro encode\)$"),
    Case("csv-twice-the-rows", "plot", csv_twice_the_rows,
         rf"^error: data/latent/test_latent\.csv: {2 * TEST_IMAGES} data rows but data/prepared/test\.npz "
         rf"has {TEST_IMAGES} images; {ENCODE_HINT}"),
    Case("csv-symlink-to-dev-zero", "plot", symlink_to_dev_zero(CSV),
         rf"^error: data/latent/test_latent\.csv: {NOT_REGULAR}run the encode stage \(dvc repro encode\)$"),
    Case("samples-png-is-directory", "plot", directory_at("plots/samples.png"),
         r"^error: plots/samples\.png: is a directory, not a file; remove it, then re-run the stage$"),
    Case("model-symlink-to-dev-zero", "encode", symlink_to_dev_zero(MODEL),
         rf"^error: models/vae\.keras: {NOT_REGULAR}run the train stage \(dvc repro train\)$"),
    Case("npz-symlink-to-dev-zero", "encode", symlink_to_dev_zero(TEST_NPZ),
         rf"^error: data/prepared/test\.npz: {NOT_REGULAR}run the prepare stage \(dvc repro prepare\)$"),
    Case("raw-gz-symlink-to-dev-zero", "prepare", symlink_to_dev_zero(f"data/raw/{RAW_LABELS}"),
         rf"^error: data/raw/{re.escape(RAW_LABELS)}: {NOT_REGULAR}"
         r"run the fetch stage \(dvc repro fetch\)$"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_input_fault(ws, case):
    """`python -m stages.X` on one hostile input: exit 1, one clear line, every output unchanged."""
    case.fault(ws)
    before, files_before = ws.snapshot(), identities(ws)
    result = stage(ws, case.command)
    assert_clear_failure(result, case.expect)
    assert result.returncode == 1
    assert_unchanged(ws, before)
    # Not even replaced by identical bytes (the plot stage renders deterministically): for
    # samples-png-is-directory, the other three PNGs are the very same files.
    assert identities(ws) == files_before
    if case.id in STILL_DIRECTORY:  # nothing was written in its place
        directory = ws.root / STILL_DIRECTORY[case.id]
        assert directory.is_dir() and not any(directory.iterdir())


def test_csv_labels_differ_from_test_npz(ws):
    """A CSV of another ordering of the test set (two labels swapped) is refused, not plotted."""
    i, j, label_i, label_j = first_two_different_labels(ws)
    csv_labels_swapped(ws)
    before, files_before = ws.snapshot(), identities(ws)
    result = stage(ws, "plot")
    assert_clear_failure(
        result,
        rf"^error: data/latent/test_latent\.csv: data row {i + 1} has label {label_j} but image {i} of "
        rf"data/prepared/test\.npz has label {label_i} \(2 rows differ\); {ENCODE_HINT}",
    )
    assert result.returncode == 1
    assert_unchanged(ws, before)
    assert identities(ws) == files_before
