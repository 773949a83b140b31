"""Fault injection (issue 7): the real stage commands and the real DVC CLI against bad inputs.

Every case runs a stage -- its ``main()``, as ``python -m stages.NAME`` runs it, in a child forked
from tests/stage_server.py, which skips TensorFlow's start-up -- or the real ``dvc repro``, in a copy of
the small real pipeline (the session fixture ``small_pipeline``, its results committed to git
as in the real repository) after injecting one fault, and asserts three things:

1. the command exits non-zero;
2. it explains itself in one line naming the file, key or value at fault and what was
   expected (``error: ...`` from a stage, ``ERROR: ...`` from DVC), and prints no traceback;
3. every file under data/, models/, metrics/ and plots/ (and dvc.lock) is byte-for-byte
   what it was before the command -- or, where DVC itself deleted a stage's outputs before
   running it, ``dvc checkout`` brings the cached ones back byte-for-byte (the uncached
   metrics are committed to git, so ``git checkout`` restores those).

The cases share one project: each injects its fault, runs, checks, and the pristine files
are put back. Count them with ``python -m pytest tests/test_faults.py --collect-only -q``
(every test here is one fault case, except the two marked "not a fault case" at the end).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from fashion_vae import dataset, idx
from tests.conftest import REPO_ROOT, SMALL_PARAMS, dvc, project_env, run

pytestmark = pytest.mark.e2e

TREES = ("data", "models", "metrics", "plots")  # every pipeline output lives under these
TRACKED = ("params.yaml", "dvc.lock")
STAGING = "metrics/.training.partial"  # the train stage's documented scratch directory
MODEL = "models/vae.keras"
LIMIT_TRAIN, VAL_IMAGES = SMALL_PARAMS["prepare"]["limit_train"], SMALL_PARAMS["prepare"]["val_size"]
TRAIN_IMAGES = LIMIT_TRAIN - VAL_IMAGES


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Workspace:
    """The shared project copy and its pristine files: fault it, run, check, put it back."""

    def __init__(self, root: Path, scratch: Path, server=None):
        self.root = root
        self.scratch = scratch
        self.server = server  # tests/stage_server.py: runs a stage's main() without TensorFlow's start-up
        scratch.mkdir(parents=True, exist_ok=True)
        self._hash_cache: dict[tuple, str] = {}
        self.pristine = {rel: (root / rel).read_bytes() for rel in self.files()}
        self.pristine_hashes = {rel: sha256(data) for rel, data in self.pristine.items()}

    def files(self) -> list[str]:
        """Every file (hidden ones too) under the output trees, plus params.yaml and dvc.lock."""
        found = [rel for rel in TRACKED if (self.root / rel).is_file()]
        for tree in TREES:
            found += [
                p.relative_to(self.root).as_posix() for p in (self.root / tree).rglob("*") if p.is_file()
            ]
        return sorted(found)

    def hash(self, rel: str) -> str:
        stat = (self.root / rel).stat()
        key = (rel, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in self._hash_cache:
            self._hash_cache[key] = sha256((self.root / rel).read_bytes())
        return self._hash_cache[key]

    def snapshot(self) -> dict[str, str]:
        return {rel: self.hash(rel) for rel in self.files()}

    def write(self, rel: str, data: bytes) -> None:
        """Replace a file (never write through it: it may share storage with DVC's cache)."""
        path = self.root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def restore(self) -> None:
        """Put every pristine file back and remove everything else under the output trees."""
        for rel in TRACKED:
            if (self.root / rel).is_dir():
                shutil.rmtree(self.root / rel)
        for rel in set(self.files()) - set(self.pristine):
            (self.root / rel).unlink()
        for rel, data in self.pristine.items():
            if not (self.root / rel).is_file() or self.hash(rel) != self.pristine_hashes[rel]:
                self.write(rel, data)
        keep = {parent for rel in self.pristine for parent in Path(rel).parents}
        for tree in TREES:
            for path in sorted((self.root / tree).rglob("*"), reverse=True):
                if path.is_dir() and path.relative_to(self.root) not in keep:
                    shutil.rmtree(path)
        assert self.snapshot() == self.pristine_hashes

    # -- building faults ----------------------------------------------------------------

    def params(self) -> dict:
        return yaml.safe_load(self.pristine["params.yaml"])

    def write_params(self, params: dict) -> None:
        self.write("params.yaml", yaml.safe_dump(params, sort_keys=False).encode())

    def arrays(self, rel: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self.pristine[rel]), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}

    def write_npz(self, rel: str, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.write(rel, buffer.getvalue())

    def raw(self, name: str) -> bytes:
        """The decompressed bytes of one official file, from the project's data/raw."""
        return gzip.decompress(self.pristine[f"data/raw/{name}"])


@pytest.fixture(scope="module")
def workspace(small_pipeline, stage_server, tmp_path_factory) -> Workspace:
    base = tmp_path_factory.mktemp("faults")
    root = base / "project"
    shutil.copytree(
        small_pipeline, root, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else []
    )
    # As in the real repository: dvc.lock and the uncached metrics are committed.
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "results"], root)
    assert "Data and pipelines are up to date" in dvc(root, "status").stdout
    return Workspace(root, base / "scratch", stage_server)


@pytest.fixture
def ws(workspace):
    yield workspace
    workspace.restore()


# -- running and checking ------------------------------------------------------------------


def stage(ws: Workspace, name: str, timeout: float = 300, tempdir: str | None = None):
    """The stage's ``main()`` as ``python -m stages.NAME`` calls it, in a child of the stage server."""
    return ws.server.run(name, ws.root, project_env(), timeout=timeout, tempdir=tempdir)


def output(result: subprocess.CompletedProcess) -> str:
    return f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def one_error_line(result: subprocess.CompletedProcess, prefix: str = "error: ") -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one line starting {prefix!r} on stderr, got {lines}\n{output(result)}"
    return lines[0]


def assert_clear_failure(result: subprocess.CompletedProcess, expect: str, prefix: str = "error: ") -> str:
    assert result.returncode != 0, f"exited 0 despite the fault\n{output(result)}"
    assert "Traceback" not in result.stderr + result.stdout, f"printed a traceback\n{output(result)}"
    line = one_error_line(result, prefix)
    assert re.search(expect, line), f"error line {line!r} does not match {expect!r}"
    return line


def assert_unchanged(ws: Workspace, before: dict[str, str], ignore: tuple[str, ...] = ()) -> None:
    after = {rel: h for rel, h in ws.snapshot().items() if not rel.startswith(ignore)}
    changed = sorted(rel for rel in before.keys() | after.keys() if before.get(rel) != after.get(rel))
    assert not changed, f"outputs changed, appeared or vanished: {changed}"


def restore_with_dvc_checkout(ws: Workspace) -> None:
    """What a user does after a failed `dvc repro`: cached outs from DVC, uncached metrics from git."""
    dvc(ws.root, "checkout", "--force")
    run(["git", "checkout", "--", "metrics"], ws.root)


# -- faults ----------------------------------------------------------------------------------

Fault = Callable[[Workspace], None]


@dataclass(frozen=True)
class Case:
    id: str
    command: str | None  # the stage run (`python -m stages.NAME`, or the one `dvc repro` fails in)
    fault: Fault
    expect: str  # regex the one error line must match
    tempdir: str | None = None  # the temporary directory the stage is given (None: the usual one)


def set_params(values: dict) -> Fault:
    def fault(ws: Workspace) -> None:
        params = ws.params()  # the pristine params, changed in several keys at once
        for key, value in values.items():
            section, name = key.split(".")
            params[section][name] = value
        ws.write_params(params)

    return fault


def set_param(key: str, value) -> Fault:
    return set_params({key: value})


def drop_param(key: str) -> Fault:
    def fault(ws: Workspace) -> None:
        params = ws.params()
        section, name = key.split(".")
        del params[section][name]
        ws.write_params(params)

    return fault


def add_section(name: str, values: dict) -> Fault:
    def fault(ws: Workspace) -> None:
        ws.write_params({**ws.params(), name: values})

    return fault


def params_bytes(data: bytes) -> Fault:
    return lambda ws: ws.write("params.yaml", data)


def params_text(change: Callable[[str], str]) -> Fault:
    """Edit the pristine params.yaml as text (for what a YAML round trip cannot express)."""
    def fault(ws: Workspace) -> None:
        text = ws.pristine["params.yaml"].decode()
        changed = change(text)
        assert changed != text, "the fault did not change params.yaml"
        ws.write("params.yaml", changed.encode())

    return fault


def billion_laughs(levels: int = 9) -> bytes:
    """2 KB of nested aliases that would expand to 9**levels strings."""
    text = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level in range(1, levels):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        text += f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
    return text.encode()


def params_is_dev_zero(ws: Workspace) -> None:
    (ws.root / "params.yaml").unlink()
    (ws.root / "params.yaml").symlink_to("/dev/zero")


def source_is_dev_zero(ws: Workspace) -> None:
    directory = ws.scratch / "sources" / "dev-zero"
    if not directory.exists():
        directory.mkdir(parents=True)
        for spec in dataset.RAW_FILES.values():
            (directory / spec.name).symlink_to("/dev/zero")
    sources(str(directory))(ws)


def params_is_directory(ws: Workspace) -> None:
    (ws.root / "params.yaml").unlink()
    (ws.root / "params.yaml").mkdir()


def params_removed(ws: Workspace) -> None:
    (ws.root / "params.yaml").unlink()


def delete(rel: str) -> Fault:
    return lambda ws: (ws.root / rel).unlink()


def sources(*entries: str) -> Fault:
    return set_param("fetch.sources", list(entries))


def source_dir(variant: str, name: str, make: Callable[[Workspace, bytes], bytes | None]) -> Fault:
    """A source directory with the official files, ``name`` replaced by ``make`` (None: absent)."""

    def fault(ws: Workspace) -> None:
        directory = ws.scratch / "sources" / variant
        if not directory.exists():
            directory.mkdir(parents=True)
            for spec in dataset.RAW_FILES.values():
                blob = ws.pristine[f"data/raw/{spec.name}"]
                if spec.name == name:
                    blob = make(ws, gzip.decompress(blob))
                if blob is not None:
                    (directory / spec.name).write_bytes(blob)
        sources(str(directory))(ws)

    return fault


def truncated_gzip(ws: Workspace, data: bytes) -> bytes:
    blob = gzip.compress(data, compresslevel=1)
    return blob[: len(blob) // 2]


def wrong_magic(ws: Workspace, data: bytes) -> bytes:
    images = idx.parse(data, "t10k-images")
    blob = bytearray(idx.encode(images))
    blob[2] = 0x0D  # data type 0x0D (float32) instead of 0x08 (unsigned byte): magic 0x00000d03
    return gzip.compress(bytes(blob), compresslevel=1)


def one_image_short(ws: Workspace, data: bytes) -> bytes:
    images = idx.parse(data, "t10k-images")
    return gzip.compress(idx.encode(images[:-1]), compresslevel=1)


def not_gzipped(ws: Workspace, data: bytes) -> bytes:
    return data  # the plain IDX bytes under a .gz name


def labels_out_of_range(ws: Workspace) -> None:
    name = dataset.RAW_FILES["test_labels"].name
    labels = idx.parse(ws.raw(name), name).copy()
    labels[0] = 10
    ws.write(f"data/raw/{name}", gzip.compress(idx.encode(labels)))


def npz(rel: str, change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Fault:
    return lambda ws: ws.write_npz(rel, change(ws.arrays(rel)))


def without_x(a):
    return {k: v for k, v in a.items() if k != "x"}


def x_float64(a):
    return {**a, "x": a["x"].astype(np.float64)}


def label_12(a):
    y = a["y"].copy()
    y[5] = 12
    return {**a, "y": y}


def nan_pixel(a):
    x = a["x"].copy()
    x[3, 14, 14, 0] = np.nan
    return {**a, "x": x}


def pickled_object_array(a):
    return {**a, "class_names": np.array([{"name": "T-shirt/top"}], dtype=object)}


def truncated(rel: str) -> Fault:
    return lambda ws: ws.write(rel, ws.pristine[rel][: len(ws.pristine[rel]) // 2])


def corrupted(rel: str) -> Fault:
    def fault(ws: Workspace) -> None:
        data = bytearray(ws.pristine[rel])
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
        ws.write(rel, bytes(data))

    return fault


def model_file(build: Callable[[Workspace], object], plain_save: bool = False) -> Fault:
    """Replace models/vae.keras with a model built here (TensorFlow is imported lazily)."""

    def fault(ws: Workspace) -> None:
        from fashion_vae import training

        path = ws.scratch / "model.keras"
        model = build(ws)
        if plain_save:
            model.save(path)
        else:
            training.save_model(model, path)
        ws.write(MODEL, path.read_bytes())

    return fault


def vae(**changes):
    def build(ws: Workspace):
        from fashion_vae.model import build_vae

        return build_vae({**ws.params()["model"], **changes}, seed=1)

    return build


def nan_weights_vae(ws: Workspace):
    model = vae()(ws)
    for weight in model.weights:
        weight.assign(np.full(weight.shape, np.nan, dtype=weight.dtype))
    return model


def plain_sequential(ws: Workspace):
    import keras

    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])


def lambda_layer_model(ws: Workspace):
    import keras

    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x * 2.0)])


def odd_member_names(ws: Workspace) -> Path:
    """The pristine model with a member named ``../evil.txt`` added (zipfile warns and skips it)."""
    import zipfile

    path = ws.scratch / "odd.keras"
    with zipfile.ZipFile(io.BytesIO(ws.pristine[MODEL])) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("../evil.txt", b"not part of a Keras model")
    return path


def latent_text(ws: Workspace) -> None:
    rel = "data/latent/test_latent.csv"
    lines = ws.pristine[rel].decode().splitlines()
    header, row = lines[0].split(","), lines[5].split(",")
    row[header.index("z0")] = "abc"
    lines[5] = ",".join(row)
    ws.write(rel, ("\n".join(lines) + "\n").encode())


PRE = r"^error: params\.yaml: "
PREPARED = "data/prepared"
IMAGES = dataset.RAW_FILES["test_images"]

STAGE_CASES = [
    # params.yaml: every stage validates the whole file before it works (fetch starts fastest).
    Case("params-unknown-key", "fetch", set_param("train.epoch", 3),
         PRE + r"unknown key train\.epoch; allowed keys in 'train': seed, epochs, "),
    Case("params-unknown-section", "fetch", add_section("optimiser", {"name": "adam"}),
         PRE + r"unknown section 'optimiser'; allowed sections: fetch, prepare, model, train, evaluate, "
         r"plot$"),
    Case("params-missing-key", "fetch", drop_param("model.beta"),
         PRE + r"missing key model\.beta \(expected a number in \[0, 1000\] \(weight of the KL term"),
    Case("params-wrong-type", "prepare", set_param("train.epochs", "ten"),
         PRE + r"train\.epochs = 'ten' is invalid; expected an integer in \[1, 500\]$"),
    Case("params-epochs-0", "prepare", set_param("train.epochs", 0),
         PRE + r"train\.epochs = 0 is invalid; expected an integer in \[1, 500\]$"),
    Case("params-negative-val-size", "fetch", set_param("prepare.val_size", -5),
         PRE + r"prepare\.val_size = -5 is invalid; expected an integer in \[10, 59990\] \(stratified: one image "
         r"per class or more\)$"),
    Case("params-negative-limit-test", "fetch", set_param("prepare.limit_test", -1),
         PRE + r"prepare\.limit_test = -1 is invalid; expected an integer in \[20, 10000\] or null"),
    Case("params-batch-size-0", "fetch", set_param("train.batch_size", 0),
         PRE + r"train\.batch_size = 0 is invalid; expected an integer in \[1, 60000\]$"),
    Case("params-latent-dim-0", "fetch", set_param("model.latent_dim", 0),
         PRE + r"model\.latent_dim = 0 is invalid; expected an integer in \[2, 512\] \(the manifold and cluster plots"),
    Case("params-beta-negative", "fetch", set_param("model.beta", -0.5),
         PRE + r"model\.beta = -0\.5 is invalid; expected a number in \[0, 1000\] \(weight of the KL term; "),
    Case("params-learning-rate-not-a-number", "fetch", set_param("train.learning_rate", "fast"),
         PRE + r"train\.learning_rate = 'fast' is invalid; expected a number in \(0, 1\]$"),
    Case("params-learning-rate-nan", "fetch", set_param("train.learning_rate", float("nan")),
         PRE + r"train\.learning_rate = nan is invalid; expected a number in \(0, 1\]$"),
    Case("params-iwae-k-0", "fetch", set_param("evaluate.iwae_samples", 0),
         PRE + r"evaluate\.iwae_samples = 0 is invalid; expected an integer in \[1, 5000\] \(K of the IWAE bound"),
    Case("params-knn-k-empty", "fetch", set_param("evaluate.knn_k", []),
         PRE + r"evaluate\.knn_k = \[\] is invalid; expected a list of at least 1 integers in \[1, 60000\]$"),
    Case("params-manifold-grid-0", "fetch", set_param("plot.manifold_n", 0),
         PRE + r"plot\.manifold_n = 0 is invalid; expected an integer in \[1, 64\]$"),
    Case("params-threads-0", "fetch", set_param("train.threads", 0),
         PRE + r"train\.threads = 0 is invalid; expected an integer in \[1, 256\]$"),
    Case("params-val-size-not-below-limit", "fetch", set_param("prepare.val_size", LIMIT_TRAIN),
         PRE + rf"prepare\.val_size = {LIMIT_TRAIN} must be less than prepare\.limit_train = {LIMIT_TRAIN}$"),
    Case("params-is-a-directory", "fetch", params_is_directory,
         PRE + r"is a directory, not a regular file; run from the repository root$"),
    Case("params-invalid-utf8", "fetch", params_bytes(b"train:\n  epochs: \xff\xfe2\n"),
         PRE + r"cannot read \(UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff"),
    Case("params-not-yaml", "fetch", params_bytes(b"train: [epochs: 2\nmodel: {\n"),
         PRE + r"not valid YAML at line \d+, column \d+$"),
    Case("params-not-a-mapping", "fetch", params_bytes(b"- fetch\n- train\n"),
         PRE + r"expected a mapping of sections \[.*\], got list$"),
    Case("params-symlink-to-dev-zero", "fetch", params_is_dev_zero,
         PRE + r"is a character device, not a regular file; run from the repository root$"),
    Case("source-symlink-to-dev-zero", "fetch", source_is_dev_zero,
         r"^error: no source served a verified train-images-idx3-ubyte\.gz \(tried: \S+/train-images-idx3-ubyte\.gz: "
         r"is a character device, not a regular file; fix or remove it\)"),
    Case("params-missing-file", "fetch", params_removed,
         PRE + r"missing; run from the repository root$"),
    # params.yaml is read as DVC reads it (YAML 1.2): what DVC records is what the stage trains with.
    Case("params-yaml-1-1-boolean-off", "fetch", params_text(lambda t: t.replace("distribute: none", "distribute: off")),
         PRE + r"train\.distribute = 'off' is invalid; expected one of 'none', "),
    Case("params-duplicate-key", "fetch", params_text(lambda t: t.replace("  epochs: 2\n", "  epochs: 2\n  epochs: 9\n")),
         PRE + r"duplicate key 'epochs' at line \d+, column 3; each key may appear once in a mapping$"),
    Case("params-billion-laughs", "fetch", params_bytes(billion_laughs()),
         PRE + r"YAML alias \*a at line 2, column \d+; write each value out in full \(anchors and aliases are not "
         r"allowed\)$"),
    # Values that used to pass validation and crash a later stage, after DVC had deleted its outputs.
    Case("params-latent-dim-1", "fetch", set_param("model.latent_dim", 1),
         PRE + r"model\.latent_dim = 1 is invalid; expected an integer in \[2, 512\] \(the manifold and cluster plots need "
         r"two latent directions\)$"),
    Case("params-limit-test-10", "fetch", set_param("prepare.limit_test", 10),
         PRE + r"prepare\.limit_test = 10 is invalid; expected an integer in \[20, 10000\] or null \(two per class "
         r"or more: the silhouette score needs them\)$"),
    Case("params-limit-train-5", "fetch", set_param("prepare.limit_train", 5),
         PRE + r"prepare\.limit_train = 5 is invalid; expected an integer in \[20, 60000\] or null"),
    Case("params-limit-test-5", "fetch", set_param("prepare.limit_test", 5),
         PRE + r"prepare\.limit_test = 5 is invalid; expected an integer in \[20, 10000\] or null"),
    Case("params-limit-train-12-val-size-10", "fetch",  # the probe's case: prepare used to crash on it
         set_params({"prepare.limit_train": 12, "prepare.val_size": 10}),
         PRE + r"prepare\.limit_train = 12 is invalid; expected an integer in \[20, 60000\] or null"),
    Case("params-limit-train-leaves-too-few", "fetch",
         set_params({"prepare.limit_train": 25, "prepare.val_size": 20}),
         PRE + r"prepare\.limit_train = 25 leaves 5 training images after prepare\.val_size = 20; expected at "
         r"least 10 \(one per class\)$"),
    Case("params-knn-k-above-training-images", "evaluate", set_param("evaluate.knn_k", [1, TRAIN_IMAGES + 1]),
         PRE + rf"evaluate\.knn_k = {TRAIN_IMAGES + 1} is more than the {TRAIN_IMAGES} training images"),
    # Raw data: fetch verifies the SHA-256 of the decompressed bytes before it writes anything.
    Case("source-truncated-gzip", "fetch",
         source_dir("truncated", "train-labels-idx1-ubyte.gz", truncated_gzip),
         r"^error: no source served a verified train-labels-idx1-ubyte\.gz \(tried: \S+/train-labels-idx1-"
         r"ubyte\.gz: not a complete gzip file \(.*\)\); install Debian's package"),
    Case("source-wrong-magic-number", "fetch", source_dir("magic", IMAGES.name, wrong_magic),
         r"t10k-images-idx3-ubyte\.gz: SHA-256 [0-9a-f]{64} does not match the official " + IMAGES.sha256),
    Case("source-wrong-image-count", "fetch", source_dir("count", IMAGES.name, one_image_short),
         r"t10k-images-idx3-ubyte\.gz: decompressed size 7839232 bytes; expected 7840016\)"),
    Case("source-not-gzip", "fetch", source_dir("plain", "t10k-labels-idx1-ubyte.gz", not_gzipped),
         r"t10k-labels-idx1-ubyte\.gz: not a complete gzip file \(Not a gzipped file"),
    Case("source-file-missing", "fetch",
         source_dir("missing", "t10k-labels-idx1-ubyte.gz", lambda ws, data: None),
         r"\(tried: \S+/t10k-labels-idx1-ubyte\.gz: missing\)"),
    Case("source-url-unreachable", "fetch", sources("http://127.0.0.1:9"),
         r"\(tried: http://127\.0\.0\.1:9/train-images-idx3-ubyte\.gz: download failed \(.*\)\)"),
    Case("raw-label-outside-0-9", "prepare", labels_out_of_range,
         r"^error: data/raw/t10k-labels-idx1-ubyte\.gz: SHA-256 [0-9a-f]{64} does not match the official "
         + dataset.RAW_FILES["test_labels"].sha256 + "$"),
    Case("raw-file-missing", "prepare", delete("data/raw/train-labels-idx1-ubyte.gz"),
         r"^error: data/raw/train-labels-idx1-ubyte\.gz: missing; run the fetch stage \(dvc repro fetch\)$"),
    # Prepared .npz: loaded without pickles, every array checked.
    Case("npz-missing-array", "train", npz(f"{PREPARED}/train.npz", without_x),
         r"^error: data/prepared/train\.npz: array 'x' missing; expected arrays x, y, class_names$"),
    Case("npz-wrong-dtype", "train", npz(f"{PREPARED}/val.npz", x_float64),
         rf"^error: data/prepared/val\.npz: x has dtype float64 and shape \({VAL_IMAGES}, 28, 28, 1\); "
         r"expected float32 \(N, 28, 28, 1\)$"),
    Case("npz-label-outside-0-9", "encode", npz(f"{PREPARED}/test.npz", label_12),
         r"^error: data/prepared/test\.npz: label 12 outside 0\.\.9$"),
    Case("npz-nan-pixel", "evaluate", npz(f"{PREPARED}/test.npz", nan_pixel),
         r"^error: data/prepared/test\.npz: x holds NaN or infinite pixel values; "
         r"expected values within \[0, 1\]$"),
    Case("npz-pickled-object-array", "train", npz(f"{PREPARED}/train.npz", pickled_object_array),
         r"^error: data/prepared/train\.npz: not a readable \.npz file "
         r"\(Object arrays cannot be loaded when allow_pickle=False\)"),
    Case("npz-truncated", "evaluate", truncated(f"{PREPARED}/train.npz"),
         r"^error: data/prepared/train\.npz: not a readable \.npz file \(File is not a zip file\)"),
    # The model file: Keras safe mode, then checked against params.yaml.
    Case("model-truncated", "evaluate", truncated(MODEL),
         r"^error: models/vae\.keras: not a loadable Keras model \(not a complete \.keras zip archive"),
    Case("model-corrupted", "encode", corrupted(MODEL),
         r"^error: models/vae\.keras: not a loadable Keras model \(\w+: .+\)$"),
    Case("model-latent-dim-mismatch", "plot", model_file(vae(latent_dim=3)),
         r"^error: models/vae\.keras: model has latent_dim = 3 but params\.yaml has model\.latent_dim = 2; "
         r"re-run the train stage \(dvc repro train\)$"),
    Case("model-plain-keras-sequential", "evaluate", model_file(plain_sequential, plain_save=True),
         r"^error: models/vae\.keras: holds a Sequential, not this project's VAE$"),
    Case("model-unsafe-lambda-refused", "encode", model_file(lambda_layer_model, plain_save=True),
         r"^error: models/vae\.keras: not a loadable Keras model \(ValueError: Requested the deserialization "
         r"of a `Lambda` layer"),
    Case("model-nan-weights", "evaluate", model_file(nan_weights_vae),
         r"^error: models/vae\.keras: model weights contain NaN or infinity; re-run the train stage"),
    # The latent CSV the plot stage reads.
    Case("latents-not-numeric", "plot", latent_text,
         r"^error: data/latent/test_latent\.csv: column z0 data row 5 is 'abc'; expected a finite number$"),
    # Issue 19: values the old validation let through, which then failed with a traceback, a kernel
    # OOM kill or noise before the stage's line.
    Case("params-dense-units-1e8", "train", set_param("model.dense_units", 100_000_000),
         PRE + r"model\.dense_units = 100000000 is invalid; expected an integer in \[1, 1048576\]$"),
    Case("params-decoder-dense-units-1e8", "train", set_param("model.decoder_dense_units", 100_000_000),
         PRE + r"model\.decoder_dense_units = 100000000 is invalid; expected an integer in \[0, 1048576\]$"),
    Case("params-train-seed-2-64", "train", set_param("train.seed", 2**64),
         PRE + r"train\.seed = 18446744073709551616 is invalid; expected an integer in \[0, 4294967295\] \(what "
         r"numpy, scikit-learn and TensorFlow accept as a seed\)$"),
    Case("params-prepare-seed-2-70", "prepare", set_param("prepare.seed", 2**70),
         PRE + r"prepare\.seed = 1180591620717411303424 is invalid; expected an integer in \[0, 4294967295\]"),
    Case("params-vamp-1000-iwae-1000", "train",
         set_params({"model.prior": "vamp", "model.prior_components": 1000, "train.objective": "iwae",
                     "train.iwae_samples": 1000, "train.batch_size": 128}),  # the defaults' batch, as reported
         PRE + r"train\.batch_size = 128, train\.iwae_samples = 1000, model\.conv_filters = \[16, 32\] need about "
         r"[0-9.]+ GiB in the train stage \(activations [0-9.]+ GiB\); this (machine has|container may use) "
         r"[0-9.]+ GiB; lower train\.batch_size$"),
    Case("params-iwae-1000-batch-4096", "train",
         set_params({"train.objective": "iwae", "train.iwae_samples": 1000, "train.batch_size": 4096}),
         PRE + r"train\.batch_size = 4096, train\.iwae_samples = 1000, model\.conv_filters = \[16, 32\] need about "
         r"[0-9.]+ GiB in the train stage"),
    Case("params-evaluate-iwae-1e7", "evaluate", set_param("evaluate.iwae_samples", 10_000_000),
         PRE + r"evaluate\.iwae_samples = 10000000 is invalid; expected an integer in \[1, 5000\]"),
    Case("params-huge-beta", "train", set_param("model.beta", 1e39),
         PRE + r"model\.beta = 1e\+39 is invalid; expected a number in \[0, 1000\]"),
    Case("mixed-float16-without-a-gpu", "train", set_param("train.precision", "mixed_float16"),
         r"^error: train\.precision = 'mixed_float16' needs a GPU and this machine has none"),
    Case("model-odd-member-name", "encode", lambda ws: ws.write(MODEL, odd_member_names(ws).read_bytes()),
         r"^error: models/vae\.keras: not a loadable Keras model \(archive member '\.\./evil\.txt' has an unsafe "
         r"name\); restore it with dvc checkout"),
    Case("no-writable-temporary-directory", "evaluate", lambda ws: None,
         r"^error: no writable temporary directory \(/\S+: .+\); TensorFlow and the model's save need one: set "
         r"TMPDIR to a writable directory$", tempdir="/proc/no-such-directory"),
    # Training divergence: the largest allowed learning rate, constant, on batches of 8
    # drives the loss to NaN within the first epoch (seeded, so on every run).
    Case("train-diverges-nan-loss", "train",
         set_params({"train.learning_rate": 1.0, "train.lr_schedule": "constant", "train.batch_size": 8}),
         r"^error: training diverged at epoch 1: non-finite loss \(.*\bloss=nan.*\); "
         r"lower train\.learning_rate or check the data$"),
]


@pytest.mark.parametrize("case", STAGE_CASES, ids=[c.id for c in STAGE_CASES])
def test_stage_fault(ws, case):
    """`python -m stages.X` on one fault: exit 1, one clear line and nothing else on stderr, every
    output unchanged."""
    case.fault(ws)
    before = ws.snapshot()
    result = stage(ws, case.command, tempdir=case.tempdir)
    line = assert_clear_failure(result, case.expect)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [line], f"stderr holds more than the one line\n{output(result)}"
    assert_unchanged(ws, before)


DVC_CASES = [
    # DVC reads params.yaml itself before running anything: its own error, nothing touched.
    Case("dvc-params-not-yaml", None, params_bytes(b"train: [epochs: 2\n"),
         r"^ERROR: unable to read: 'params\.yaml', YAML file structure is corrupted"),
    # A changed fetch.sources re-runs fetch: DVC deletes data/raw first, fetch writes nothing.
    Case("dvc-source-truncated-gzip", "fetch",
         source_dir("truncated-images", dataset.RAW_FILES["train_images"].name, truncated_gzip),
         r"^error: no source served a verified train-images-idx3-ubyte\.gz "
         r"\(tried: .*not a complete gzip file"),
    # Checked by the train stage once it sees the data.
    Case("dvc-batch-size-larger-than-data", "train", set_param("train.batch_size", 5000),
         rf"^error: train\.batch_size = 5000 is larger than the {TRAIN_IMAGES} training images$"),
]


@pytest.mark.parametrize("case", DVC_CASES, ids=[c.id for c in DVC_CASES])
def test_dvc_repro_fault(ws, case):
    """`dvc repro` on one fault: non-zero, one clear line; outputs unchanged or `dvc checkout`-able."""
    case.fault(ws)
    before = ws.snapshot()
    result = dvc(ws.root, "repro", check=False)
    if case.command is None:  # DVC's own error
        assert_clear_failure(result, case.expect, prefix="ERROR: ")
        assert not [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert_unchanged(ws, before)
        return
    assert_clear_failure(result, case.expect)
    assert f"ERROR: failed to reproduce '{case.command}'" in result.stderr, output(result)
    # DVC removed the failed stage's outputs before running it; nothing else moved, nothing partial.
    after = ws.snapshot()
    assert all(before.get(rel) == digest for rel, digest in after.items()), "an output changed or appeared"
    restore_with_dvc_checkout(ws)
    assert_unchanged(ws, before)


# -- interruption and concurrency ------------------------------------------------------------

LONG_TRAINING = {"epochs": 50}  # cannot finish before the kill


def as_from_a_terminal() -> None:
    """Ctrl-C's default action in the child, as a shell in a terminal gives it.

    A job that a non-interactive shell starts in the background (`cmd &`, as CI runners
    and `nohup` do) inherits SIGINT ignored, and Python then leaves it ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(ws: Workspace, cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**project_env(handover=False), "PYTHONUNBUFFERED": "1"}  # signals reach the real stage process
    with log.open("w") as handle:
        return subprocess.Popen(
            cmd, cwd=ws.root, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )


def wait_for(proc: subprocess.Popen, log: Path, pattern: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if re.search(pattern, text, re.MULTILINE):
            return
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before printing {pattern!r}:\n{text[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"no {pattern!r} within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to the process group (DVC and the stage it runs); its exit status."""
    assert proc.poll() is None, f"the process ended ({proc.returncode}) before it could be interrupted"
    os.killpg(proc.pid, sig)
    return proc.wait(timeout=120)


def kill_group_if_alive(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def with_long_training(ws: Workspace) -> None:
    params = ws.params()
    params["train"].update(LONG_TRAINING)
    ws.write_params(params)


def test_sigkill_train_stage_mid_epoch(ws):
    """SIGKILL of `python -m stages.train` mid-epoch: every output stays byte-identical."""
    with_long_training(ws)
    before = ws.snapshot()
    log = ws.scratch / "kill-stage.log"
    proc = start(ws, [sys.executable, "-m", "stages.train"], log)
    try:
        wait_for(proc, log, r"^Epoch 1/50")
        time.sleep(1.0)  # inside epoch 1
        assert stop(proc) == -signal.SIGKILL
    finally:
        kill_group_if_alive(proc)
    # The model, metrics/train.json and metrics/training are the old ones; no .tmp file anywhere.
    # Only dvclive's documented staging directory may remain; the next run removes it.
    assert (ws.root / STAGING).is_dir()
    assert_unchanged(ws, before, ignore=(STAGING + "/",))


def test_sigkill_dvc_repro_then_checkout_then_second_repro_is_locked_out(ws):
    """Two cases sharing the slow part, training:

    1. SIGKILL of `dvc repro` mid-epoch: DVC had deleted train's outputs before running it; no
       partial model, metrics or .tmp file is left, and `dvc checkout` restores the previous
       model byte-for-byte (the uncached metrics are not in DVC's cache: git has them).
    2. The next `dvc repro` re-runs train (its uncached metrics are missing) and holds DVC's
       lock: a second `dvc repro` meanwhile is refused with DVC's lock message, and the first
       finishes intact -- clean exit, staging directory removed, the same model (training is
       deterministic) and `dvc status` up to date.
    """
    with_long_training(ws)
    before = ws.snapshot()
    log = ws.scratch / "kill-repro.log"
    proc = start(ws, ["dvc", "repro"], log)
    try:
        wait_for(proc, log, r"^Epoch 1/50")
        time.sleep(1.0)
        assert stop(proc) == -signal.SIGKILL
    finally:
        kill_group_if_alive(proc)
    assert (ws.root / STAGING).is_dir()  # dvclive's scratch; the next run must remove it
    after = ws.snapshot()
    train_outs = (MODEL, "metrics/train.json", "metrics/train_details.json", "metrics/training/")
    assert not [rel for rel in after if rel.startswith(train_outs)], "a partial train output was left"
    leftovers = {rel: h for rel, h in after.items() if not rel.startswith(STAGING + "/")}
    assert all(before.get(rel) == h for rel, h in leftovers.items()), "an output changed or a file appeared"
    kept = {rel for rel in before if not rel.startswith(train_outs)}
    assert kept == set(leftovers), "other outputs vanished"

    ws.write("params.yaml", ws.pristine["params.yaml"])
    dvc(ws.root, "checkout", "--force")
    assert ws.hash(MODEL) == ws.pristine_hashes[MODEL], "dvc checkout did not restore the model"
    status = dvc(ws.root, "status").stdout
    assert re.search(r"deleted:\s+metrics/train\.json", status), status  # uncached: not in checkout

    # Case 2: the next `dvc repro` trains again; a concurrent `dvc repro` is locked out.
    log = ws.scratch / "first-repro.log"
    first = start(ws, ["dvc", "repro"], log)
    try:
        wait_for(first, log, r"^Running stage 'train'")
        second = dvc(ws.root, "repro", check=False, timeout=300)
        still_running = first.poll() is None
        first_code = first.wait(timeout=600)
    finally:
        kill_group_if_alive(first)
    assert still_running, "the first `dvc repro` ended before the second was refused"
    assert second.returncode != 0, f"a concurrent `dvc repro` was not refused\n{output(second)}"
    assert "Traceback" not in second.stderr
    # DVC holds its repository lock while it plans and records, and releases it while a stage's
    # command runs; then the outputs' read/write locks refuse the second run. Either message counts.
    lock_error = one_error_line(second, "ERROR: ")
    assert re.search(r"^ERROR: (Unable to acquire lock\. Most likely another DVC process is running"
                     r"|failed to reproduce '\w+': '[^']+' is busy, it is being blocked by:$)",
                     lock_error), lock_error
    if "is busy" in lock_error:
        assert f"(PID {first.pid}): " in second.stderr, output(second)  # names the first run
    assert first_code == 0, log.read_text(errors="replace")[-3000:]
    assert not (ws.root / STAGING).exists(), "the next run did not remove the staging directory"
    assert ws.hash(MODEL) == ws.pristine_hashes[MODEL]
    assert (ws.root / "metrics/train.json").is_file()
    assert "Data and pipelines are up to date" in dvc(ws.root, "status").stdout


SIGINT_BOUND_S = 300  # generous: Python handles SIGINT between TensorFlow calls, slower on a loaded machine


def test_second_train_stage_is_refused_and_ctrl_c_stops_the_first(ws):
    """Three cases sharing one training run:

    1. a stale `metrics/.training.partial` left as a *file* does not stop the run (it is our scratch);
    2. a second `python -m stages.train` while the first trains (outside DVC's lock) stops at once with
       one line, and writes nothing: no truncated curves, no model;
    3. Ctrl-C (SIGINT) to the first ends it within a bound, exit 130, one line; every output unchanged.
    """
    with_long_training(ws)
    ws.write(STAGING, b"not a directory")
    before = {rel: h for rel, h in ws.snapshot().items() if rel != STAGING}
    log = ws.scratch / "first-train.log"
    first = start(ws, [sys.executable, "-m", "stages.train"], log)
    try:
        wait_for(first, log, r"^Epoch 1/50")
        second = stage(ws, "train")
        assert first.poll() is None, "the first train stage ended before the second one was refused"
        assert_clear_failure(second, r"^error: models/: another train stage is already running in this workspace; "
                                     r"wait for it to finish$")
        time.sleep(1.0)  # inside epoch 1
        started = time.monotonic()
        os.killpg(first.pid, signal.SIGINT)
        code = first.wait(timeout=SIGINT_BOUND_S)
        print(f"SIGINT to exit: {time.monotonic() - started:.1f} s")
    finally:
        kill_group_if_alive(first)
    text = log.read_text(errors="replace")
    assert code == 130, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert errors == ["error: interrupted (Ctrl-C); outputs are only replaced by complete files, re-run the stage"]
    assert not (ws.root / STAGING).exists(), "the interrupted run left its scratch directory"
    assert_unchanged(ws, before)


def test_train_with_a_file_size_limit_fails_before_training(ws):
    """`ulimit -f` of 1 MiB (a full disk's stand-in: reading works, the model of several MB cannot be
    written): one line at the start of training, not a traceback after it."""
    before = ws.snapshot()
    result = ws.server.run("train", ws.root, project_env(), rlimits={"RLIMIT_FSIZE": 1 << 20})
    assert_clear_failure(result, r"^error: /\S+/: cannot write a \d+\.\d MB file \(File too large\); free disk space "
                                 r"or fix the permissions before training$")
    assert "Epoch 2/" not in result.stdout, "the check came after training"
    assert_unchanged(ws, before)
    assert not (ws.root / STAGING).exists(), "the failed run left its scratch directory"


def test_stale_scratch_file_does_not_stop_a_finished_run(ws):
    """A `metrics/.training.partial` left as a *file*: a whole run still saves, replaces the curves
    and removes the scratch; the model is the same bytes as before (training is deterministic)."""
    ws.write(STAGING, b"not a directory")
    result = stage(ws, "train")
    assert result.returncode == 0, output(result)
    assert "Traceback" not in result.stderr and "error:" not in result.stderr, output(result)
    assert not (ws.root / STAGING).exists(), "the finished run left its scratch"
    assert ws.hash(MODEL) == ws.pristine_hashes[MODEL]
    assert (ws.root / "metrics/training/metrics.json").is_file()


def test_train_with_read_only_models_directory_fails_before_training(ws):
    """A read-only models/ (root ignores permissions, so it is made immutable with chattr there)."""
    models = ws.root / "models"
    if os.geteuid() == 0:
        lock = subprocess.run(["chattr", "+i", str(models)], capture_output=True, text=True)
        assert lock.returncode == 0, f"chattr +i failed: {lock.stderr}"
        unlock = ["chattr", "-i", str(models)]
    else:
        models.chmod(0o555)
        unlock = ["chmod", "755", str(models)]
    try:
        before = ws.snapshot()
        result = stage(ws, "train")
    finally:
        subprocess.run(unlock, check=True)
    assert_clear_failure(result, r"^error: models/: cannot write a \d+\.\d MB file \((Operation not permitted|"
                                 r"Permission denied)\); free disk space or fix the permissions before training$")
    assert "Epoch 2/" not in result.stdout, "the check came after training"
    assert_unchanged(ws, before)
    assert not (ws.root / STAGING).exists(), "the failed run left its scratch directory"


def test_ctrl_c_of_dvc_repro_says_what_dvc_checkout_restores(ws):
    """SIGINT to `dvc repro` mid-training: the stage's line says DVC removed its outputs and how to get them back."""
    before = ws.snapshot()
    with_long_training(ws)
    log = ws.scratch / "sigint-repro.log"
    proc = start(ws, ["dvc", "repro"], log)
    try:
        wait_for(proc, log, r"^Epoch 1/50")
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=SIGINT_BOUND_S)
    finally:
        kill_group_if_alive(proc)
    text = log.read_text(errors="replace")
    assert code != 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: interrupted (Ctrl-C); DVC removed stage 'train''s outputs before running it: `dvc checkout` "
        "restores the cached ones and `git checkout -- metrics` the rest, or re-run `dvc repro`"
    ], text[-3000:]
    ws.write("params.yaml", ws.pristine["params.yaml"])
    restore_with_dvc_checkout(ws)  # exactly what the line tells the user
    assert_unchanged(ws, before)


# -- not fault cases: regression checks for fixes found by the cases above ----------------------


def test_not_a_fault_case_floats_written_by_dvc_exp_run_are_numbers(tmp_path):
    """`dvc exp run -S train.learning_rate=1e-5` writes `1e-05`, a string to YAML 1.1 loaders."""
    from dvc.utils.hydra import apply_overrides

    from fashion_vae import params

    path = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", path)
    apply_overrides(path, ["train.learning_rate=1e-5", "model.beta=2.5e-3"])
    assert "learning_rate: 1e-05" in path.read_text()
    loaded = params.load(path)
    assert loaded["train"]["learning_rate"] == 1e-5 and loaded["model"]["beta"] == 2.5e-3


def test_not_a_fault_case_latent_csv_values_are_checked(tmp_path):
    from fashion_vae import latents
    from fashion_vae.errors import PipelineError

    z = np.zeros((3, 2), np.float32)
    good = latents.to_frame(z, z, np.array([0, 1, 2], np.uint8))
    for column, value, message in [("z1", np.nan, "column z1 data row 2 is 'nan'"),
                                   ("label", 42, "column label data row 2 is '42'; expected a class 0..9")]:
        frame = good.copy()
        frame.loc[1, column] = value
        frame.to_csv(tmp_path / "z.csv", index=False)
        with pytest.raises(PipelineError, match=re.escape(message)):
            latents.read_csv(tmp_path / "z.csv")
    good.iloc[:0].to_csv(tmp_path / "z.csv", index=False)
    with pytest.raises(PipelineError, match="holds no rows"):
        latents.read_csv(tmp_path / "z.csv")


def test_not_a_fault_case_encode_of_a_wide_latent_space_prints_nothing_on_stderr(ws):
    """latent_dim 512: 1,027 CSV columns, built at once (pandas warned of a fragmented frame when
    they were inserted one by one)."""
    set_param("model.latent_dim", 512)(ws)
    model_file(vae(latent_dim=512))(ws)
    result = stage(ws, "encode")
    assert result.returncode == 0, output(result)
    assert result.stderr == "", output(result)
    header = (ws.root / "data/latent/test_latent.csv").read_text().splitlines()[0].split(",")
    assert len(header) == 2 * 512 + 3 and header[-3:] == ["log_var511", "label", "class_name"]


def test_not_a_fault_case_evaluate_shows_its_progress_on_a_terminal_and_nothing_in_a_log(ws):
    """A large K takes minutes: on a terminal the IWAE pass shows how far it is; in a file, nothing."""
    import fcntl
    import pty
    import struct
    import termios

    set_param("evaluate.iwae_samples", 64)(ws)
    test = ws.arrays("data/prepared/test.npz")  # 200 of the test images: the bar shows, at a fifth of the cost
    ws.write_npz("data/prepared/test.npz", {key: array[:200] for key, array in test.items()})
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size
    proc = subprocess.Popen([sys.executable, "-m", "stages.evaluate"], cwd=ws.root, env=project_env(),
                            stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the stage has exited
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    text = shown.decode(errors="replace")
    assert re.search(r"IWAE bound, K = 64: +\d+%", text), text[-2000:]
    assert re.search(r"encode: +\d+%", text), text[-2000:]
    assert proc.stderr.read() == b""
    logged = stage(ws, "evaluate")  # stdout to a file, as under DVC or CI
    assert logged.returncode == 0 and "IWAE bound" not in logged.stdout and "%" not in logged.stdout, output(logged)
