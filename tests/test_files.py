"""Input files must be regular files of a sane size: one clear line otherwise, read nothing."""
import os
import re

import pytest

from fashion_vae import files
from fashion_vae.errors import PipelineError

HINT = "run the x stage (dvc repro x)"


def check(path, max_bytes=files.MiB):
    return files.require_regular_file(path, max_bytes, HINT)


def test_regular_file_and_symlink_to_one_pass(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"12345")
    (tmp_path / "link.bin").symlink_to(tmp_path / "a.bin")  # DVC may link outputs to its cache
    assert check(tmp_path / "a.bin", 5) == tmp_path / "a.bin"
    assert check(str(tmp_path / "link.bin"), 5) == tmp_path / "link.bin"


@pytest.mark.parametrize("make, kind", [
    (lambda p: p.mkdir(), "a directory"),
    (lambda p: p.symlink_to("/dev/zero"), "a character device"),
    (lambda p: os.mkfifo(p), r"a FIFO \(named pipe\)"),
])
def test_not_a_regular_file(tmp_path, make, kind):
    path = tmp_path / "input.bin"
    make(path)
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(path))}: is {kind}, not a regular file; "
                                            rf"{re.escape(HINT)}$"):
        check(path)


def test_missing_and_dangling_symlink(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("absent", "dangling"):
        with pytest.raises(PipelineError, match=rf"{name}: missing; {re.escape(HINT)}$"):
            check(tmp_path / name)


def test_too_large_names_the_limit(tmp_path):
    path = tmp_path / "huge.bin"
    with path.open("wb") as handle:
        handle.truncate(files.MiB + 1)  # sparse: no disk used
    assert check(tmp_path / "huge.bin", files.MiB + 1) == path
    with pytest.raises(PipelineError, match=rf"huge\.bin: 1048577 bytes is larger than the 1 MiB limit for "
                                            rf"this file; {re.escape(HINT)}$"):
        check(path, files.MiB)


def test_describe_size():
    assert files.describe_size(2 * files.GiB) == "2 GiB"
    assert files.describe_size(512 * files.MiB) == "512 MiB"
    assert files.describe_size(1000) == "1000 bytes"


def test_limits_fit_the_full_data_set():
    from fashion_vae import dataset

    largest_raw = max(spec.size for spec in dataset.RAW_FILES.values())  # decompressed; gzip is smaller
    assert files.RAW_GZ_MAX_BYTES > 2 * largest_raw
    assert files.NPZ_MAX_BYTES > 2 * 60_000 * 28 * 28 * 4  # every image as float32, twice over
    assert files.LATENT_CSV_MAX_BYTES > 10_000 * (2 * 128 * 16 + 40)  # latent_dim 128, 16 chars a number


def _readers():
    from fashion_vae import dataset, latents, prepared, training

    return {
        "model": (lambda p: training.load_model(p), "vae.keras", "run the train stage"),
        "npz": (prepared.load_split, "test.npz", "run the prepare stage"),
        "latent-csv": (latents.read_csv, "test_latent.csv", "run the encode stage"),
        "raw-gz": (lambda p: dataset.load_raw(p.parent, "test_labels"), dataset.RAW_FILES["test_labels"].name,
                   "run the fetch stage"),
    }


@pytest.mark.parametrize("reader", ["model", "npz", "latent-csv", "raw-gz"])
@pytest.mark.parametrize("make, kind", [
    (lambda p: p.symlink_to("/dev/zero"), "a character device"),
    (lambda p: p.mkdir(), "a directory"),
])
def test_every_input_reader_checks_first(tmp_path, reader, make, kind):
    """A symlink to /dev/zero would make any of these read without end; a directory gave a traceback."""
    read, name, hint = _readers()[reader]
    path = tmp_path / name
    make(path)
    with pytest.raises(PipelineError, match=rf"{re.escape(name)}: is {kind}, not a regular file; {hint}"):
        read(path)
