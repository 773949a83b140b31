"""Fashion-MNIST: the four official files, their checksums, and fetching them.

Sources are tried in order: local directories (Debian's ``dataset-fashion-mnist``
package by default) and URL bases (the official download locations). Each file is
verified by the SHA-256 of its *decompressed* bytes, because Debian recompressed the
``.gz`` files, so their compressed hashes differ from upstream's.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_vae import atomic, files, idx
from fashion_vae.errors import PipelineError

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class RawFile:
    name: str  # file name in every source, e.g. train-images-idx3-ubyte.gz
    size: int  # decompressed bytes
    sha256: str  # of the decompressed bytes
    shape: tuple[int, ...]


RAW_FILES = {
    "train_images": RawFile(
        "train-images-idx3-ubyte.gz", 47_040_016,
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", (60_000, 28, 28),
    ),
    "train_labels": RawFile(
        "train-labels-idx1-ubyte.gz", 60_008,
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", (60_000,),
    ),
    "test_images": RawFile(
        "t10k-images-idx3-ubyte.gz", 7_840_016,
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", (10_000, 28, 28),
    ),
    "test_labels": RawFile(
        "t10k-labels-idx1-ubyte.gz", 10_008,
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", (10_000,),
    ),
}

HOW_TO_GET_DATA = (
    "install Debian's package (sudo apt-get install dataset-fashion-mnist) or, when online, "
    "list an official URL base in fetch.sources"
)


def decompress_verified(blob: bytes, spec: RawFile, origin: str) -> bytes:
    """Decompress ``blob`` and check size and SHA-256; return the IDX bytes.

    At most one byte more than the official size is decompressed, so a small
    "decompression bomb" cannot use memory without bound.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as stream:
            data = stream.read(spec.size + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise PipelineError(f"{origin}: not a complete gzip file ({err})") from None
    if len(data) > spec.size:
        raise PipelineError(f"{origin}: decompresses to more than {spec.size} bytes; expected {spec.size}")
    if len(data) != spec.size:
        raise PipelineError(f"{origin}: decompressed size {len(data)} bytes; expected {spec.size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise PipelineError(f"{origin}: SHA-256 {digest} does not match the official {spec.sha256}")
    return data


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def read_source(source: str, file_name: str, timeout_s: float) -> bytes:
    """Raw bytes of ``file_name`` from a directory or URL base; errors are one line."""
    if _is_url(source):
        url = source.rstrip("/") + "/" + file_name
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.read()
        except (OSError, ValueError) as err:
            raise PipelineError(f"{url}: download failed ({err})") from None
    path = Path(source) / file_name
    if path.exists():  # a FIFO or /dev/zero in a source directory would be read without end
        files.require_regular_file(path, files.RAW_GZ_MAX_BYTES, "fix or remove it")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing") from None
    except OSError as err:
        raise PipelineError(f"{path}: unreadable ({err.strerror})") from None


def fetch_one(spec: RawFile, sources: list[str], timeout_s: float, log=print) -> bytes:
    """The first source's verified compressed bytes for ``spec``; else one clear error."""
    failures = []
    for source in sources:
        origin = (source.rstrip("/") + "/" if _is_url(source) else str(Path(source)) + "/") + spec.name
        try:
            blob = read_source(source, spec.name, timeout_s)
            decompress_verified(blob, spec, origin)
        except PipelineError as err:
            log(f"fetch: skipped {err}")
            failures.append(str(err))
            continue
        log(f"fetch: {origin} verified")
        return blob
    raise PipelineError(
        f"no source served a verified {spec.name} (tried: {'; '.join(failures)}); {HOW_TO_GET_DATA}"
    )


def fetch_all(sources: list[str], out_dir: str | Path, timeout_s: float) -> dict[str, Path]:
    """Fetch and verify all four files, then write them; nothing is written on failure.

    Which source served each file goes to stdout; stderr gets only a failure's one line
    (which names every source tried and why it was skipped).
    """
    blobs = {key: fetch_one(spec, sources, timeout_s) for key, spec in RAW_FILES.items()}
    written = {}
    for key, blob in blobs.items():
        path = Path(out_dir) / RAW_FILES[key].name
        atomic.write_bytes(path, blob)
        written[key] = path
    return written


def load_raw(raw_dir: str | Path, key: str) -> np.ndarray:
    """Read one verified raw file from ``raw_dir`` as a uint8 array."""
    spec = RAW_FILES[key]
    path = Path(raw_dir) / spec.name
    hint = "run the fetch stage (dvc repro fetch)"
    try:
        blob = files.require_regular_file(path, files.RAW_GZ_MAX_BYTES, hint).read_bytes()
    except OSError as err:  # removed since the check, or not readable
        raise PipelineError(f"{path}: unreadable ({err.strerror}); {hint}") from None
    data = decompress_verified(blob, spec, str(path))
    return idx.parse(data, str(path), spec.shape)
