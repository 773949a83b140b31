"""Training the VAE: deterministic runtime, tf.data input, schedule, guards, saving."""
from __future__ import annotations

import io
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

from fashion_vae import quiet_tensorflow  # noqa: F401  (first: loads TensorFlow without start-up noise)
import keras  # noqa: E402
import numpy as np
import tensorflow as tf

from fashion_vae import atomic, distributed, files
from fashion_vae.errors import PipelineError, interrupt_requested
from fashion_vae.model import MODEL_DEFAULTS, VAE, build_vae, float32_copy, precision_policy

INTEROP_THREADS = 1  # independent ops are rare in this graph; 1 keeps results stable


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels (see fashion_vae/__init__.py).

    Their results differ from Eigen's in the last bits, so train.json records it.
    """
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def configure_runtime(seed: int, threads: int) -> None:
    """Seed everything and make TensorFlow deterministic with pinned thread counts.

    oneDNN's results depend on the thread count, so it is a parameter, not the
    machine's core count. Threads can only be set before TensorFlow starts its
    runtime; a second call in the same process (tests) keeps the first setting.
    """
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(INTEROP_THREADS)
    except RuntimeError:
        if threading.get_intra_op_parallelism_threads() not in (0, threads):
            print(
                f"warning: TensorFlow already runs with "
                f"{threading.get_intra_op_parallelism_threads()} threads, not {threads}",
                file=sys.stderr,
            )
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_dataset(x: np.ndarray, batch_size: int, seed: int | None = None, shuffle: bool = False) -> tf.data.Dataset:
    """Batches of images from memory; seeded reshuffle every epoch when training."""
    ds = tf.data.Dataset.from_tensor_slices(x)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    # Full batches only in training: one static shape, one traced graph.
    ds = ds.batch(batch_size, drop_remainder=shuffle).prefetch(2)
    # No tf.data autotuning: the end of fit() waits for its thread's next wake-up (those
    # come 10 ms * 2^k after the iterator starts, then every 60 s), an idle stall of
    # seconds to a minute. A fixed 2-batch prefetch keeps the step fed.
    options = tf.data.Options()
    options.autotune.enabled = False
    # Under multi_worker each worker keeps its share of every (global) batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def learning_rate(train_params: dict, steps_per_epoch: int):
    """A constant rate, or linear warm-up then cosine decay to zero."""
    lr = train_params["learning_rate"]
    if train_params["lr_schedule"] == "constant":
        return lr
    warmup = train_params["warmup_epochs"] * steps_per_epoch
    total = train_params["epochs"] * steps_per_epoch
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total - warmup, warmup_target=lr, warmup_steps=warmup
    )


class NonFiniteLossError(PipelineError):
    pass


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Fail the run (no model is saved) as soon as an epoch's losses are NaN or infinite."""

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(math.isfinite(float(v)) for v in logs.values()):
            losses = ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(logs.items()))
            raise NonFiniteLossError(
                f"training diverged at epoch {epoch + 1}: non-finite loss ({losses}); "
                "lower train.learning_rate or check the data"
            )


class StopOnInterrupt(keras.callbacks.Callback):
    """End training at the next batch once Ctrl-C has arrived. Keras converts every batch's logs
    inside a bare ``except:``, which swallows the KeyboardInterrupt raised there; without this
    check such a run trains on to the end."""

    def on_train_batch_end(self, batch, logs=None):
        self._stop_if_interrupted()

    def on_test_batch_end(self, batch, logs=None):
        self._stop_if_interrupted()

    def on_epoch_end(self, epoch, logs=None):
        self._stop_if_interrupted()

    @staticmethod
    def _stop_if_interrupted():
        if interrupt_requested():
            raise KeyboardInterrupt


class CheckOutputSpace(keras.callbacks.Callback):
    """Before the first epoch, check that the saved model will fit where it is written.

    Saving writes a scratch copy in the temporary directory, then the model beside its
    target; a read-only directory, a full disk or a file-size limit fails here, in
    seconds, instead of after the whole run.
    """

    def __init__(self, directories: list[str | Path]):
        super().__init__()
        self.directories = [tempfile.gettempdir(), *directories]

    def on_train_begin(self, logs=None):
        # The .keras file holds the weights and Adam's two moments of each (float32), zipped.
        size = 3 * sum(int(np.prod(w.shape)) * 4 for w in self.model.weights) + (1 << 20)
        for directory in self.directories:
            atomic.probe_writable(directory, size)


class Throughput(keras.callbacks.Callback):
    """Per-epoch training time (validation excluded) and images per second."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.epoch_seconds: list[float] = []
        self._start = 0.0
        self._train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append((self._train_end or time.perf_counter()) - self._start)

    def steady_images_per_second(self) -> float:
        # The first epoch includes tracing the graph; the rest is steady state.
        steady = self.epoch_seconds[1:] or self.epoch_seconds
        return self.images_per_epoch / statistics.median(steady)


@distributed.reports_worker_failures
def train(
    model_params: dict,
    train_params: dict,
    x_train: np.ndarray,
    x_val: np.ndarray,
    callbacks: list[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> tuple[VAE, dict]:
    """Train a VAE; return it and a summary of the run (final losses, timings)."""
    batch_size = train_params["batch_size"]
    if batch_size > len(x_train):
        raise PipelineError(
            f"train.batch_size = {batch_size} is larger than the {len(x_train)} training images"
        )
    seed = train_params["seed"]
    configure_runtime(seed, train_params["threads"])
    steps_per_epoch = len(x_train) // batch_size
    strategy = distributed.strategy_for(
        train_params, same_on_every_worker={"model": model_params, "x_train": x_train, "x_val": x_val}
    )
    precision = train_params.get("precision", "float32")
    # Layers take the dtype policy when created, and compile() wraps the optimizer for
    # mixed_float16's loss scaling; the policy is restored after, so it never leaks.
    with precision_policy(precision), strategy.scope():
        objective = train_params.get("objective", "elbo")
        vae = build_vae(model_params, seed, objective, train_params.get("iwae_samples", 1))
        vae.compile(
            optimizer=keras.optimizers.Adam(learning_rate(train_params, steps_per_epoch)),
            steps_per_execution=min(train_params["steps_per_execution"], steps_per_epoch),
        )
        # Adam's slots made now, not by the first step: a step that creates variables is traced
        # twice by tf.function (once to create them, once without), ~2 s of each run's start.
        vae.optimizer.build(vae.trainable_variables)
    timer = Throughput(steps_per_epoch * batch_size)
    started = time.perf_counter()
    history = vae.fit(
        make_dataset(x_train, batch_size, seed, shuffle=True),
        validation_data=make_dataset(distributed.evenly_split(x_val, batch_size, strategy), batch_size),
        epochs=train_params["epochs"],
        callbacks=[StopOnInterrupt(), StopOnNonFiniteLoss(), timer, *distributed.training_callbacks(), *callbacks],
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=verbose,
    )
    final = {key: float(values[-1]) for key, values in history.history.items() if key != "learning_rate"}
    summary = {
        "train": {k: v for k, v in final.items() if not k.startswith("val_")},
        "val": {k[len("val_"):]: v for k, v in final.items() if k.startswith("val_")},
        "epochs": len(timer.epoch_seconds),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "train_images_per_second": round(timer.steady_images_per_second(), 1),
        "onednn": onednn_enabled(),
    }
    if precision != "float32":
        vae = float32_copy(vae)  # its float32 weights, saved and evaluated as a float32 model
    return vae, summary


def check_precision(precision: str) -> None:
    """``mixed_float16`` is for GPUs: a CPU without AVX-512 emulates float16, slower than float32,
    and TensorFlow says so on stderr at the first step. Refuse it there, before training."""
    if precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        raise PipelineError(
            "train.precision = 'mixed_float16' needs a GPU and this machine has none (TensorFlow would emulate "
            "float16 on the CPU, slower than float32); use float32, or mixed_bfloat16 on CPUs with AVX512-BF16/AMX"
        )


def split_summary(summary: dict) -> tuple[dict, dict]:
    """(headline, details) of a training summary: each number goes to exactly one file.

    The headline (final train and validation loss) is what `dvc exp show` lists for every
    experiment; loss components, timings and settings go to the details file.
    """
    headline = {split: {"loss": summary[split]["loss"]} for split in ("train", "val")}
    details = {
        **{key: value for key, value in summary.items() if key not in headline},
        **{split: {k: v for k, v in summary[split].items() if k != "loss"} for split in headline},
    }
    return headline, details


def progress_verbosity() -> int:
    """Keras' progress bar in a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stdout.isatty() else 2


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save a ``.keras`` file whose bytes depend only on the model's weights and config.

    Keras stamps the save date into metadata.json and the current time onto zip
    entries; both are normalised so identical weights give an identical file and
    DVC's cache and ``dvc exp`` comparisons stay meaningful.
    """
    try:
        data = _normalised_keras_bytes(model)
    except OSError as err:  # Keras writes a scratch copy first: full disk or a file-size limit
        raise atomic.write_error(path, err) from None
    atomic.write_bytes(path, data)


def _normalised_keras_bytes(model: keras.Model) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "model.keras"
        model.save(raw_path)
        buffer = io.BytesIO()
        # Stored, not deflated: float32 weights shrink by 8 % for 0.5 s of CPU at every save.
        with zipfile.ZipFile(raw_path) as src, zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as dst:
            for name in sorted(src.namelist()):
                data = src.read(name)
                if name == "metadata.json":
                    metadata = json.loads(data)
                    metadata.pop("date_saved", None)
                    data = json.dumps(metadata, sort_keys=True).encode()
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                dst.writestr(info, data)
    return buffer.getvalue()


def _odd_member_name(path: Path) -> str | None:
    """What is wrong with the archive's member names, if anything: a .keras file holds a few
    plain relative names, each once (zipfile would skip or overwrite the others, with a warning)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or ".." in parts or "\\" in name or ":" in name:
            return f"archive member {name[:60]!r} has an unsafe name"
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        return f"archive member {duplicates[0][:60]!r} appears {names.count(duplicates[0])} times"
    return None


def load_model(path: str | Path, expected_model_params: dict | None = None) -> VAE:
    """Load a saved VAE (Keras safe mode, without its optimizer); check it matches the ``model`` params."""
    path = files.require_regular_file(path, files.MODEL_MAX_BYTES, "run the train stage (dvc repro train)")
    if not zipfile.is_zipfile(path):  # else Keras reports a truncated file as "File not found"
        raise PipelineError(
            f"{path}: not a loadable Keras model (not a complete .keras zip archive: truncated or "
            "corrupted); restore it with dvc checkout or re-run the train stage (dvc repro train)"
        )
    odd = _odd_member_name(path)
    if odd:
        raise PipelineError(f"{path}: not a loadable Keras model ({odd}); restore it with dvc checkout or re-run "
                            "the train stage (dvc repro train)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # zipfile's and Keras' complaints about the file
            # compile=False: a reading stage never trains, so Adam's state in the file stays unread (0.1 s).
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:  # Keras raises many types for corrupt or foreign files
        reason = " ".join(str(err).split())[:200]
        raise PipelineError(f"{path}: not a loadable Keras model ({type(err).__name__}: {reason})") from None
    if not isinstance(model, VAE):
        raise PipelineError(f"{path}: holds a {type(model).__name__}, not this project's VAE")
    if not all(np.isfinite(weights).all() for weights in model.get_weights()):
        raise PipelineError(
            f"{path}: model weights contain NaN or infinity; re-run the train stage (dvc repro train)"
        )
    if expected_model_params is not None:
        saved_config, expected = model.get_config(), {**MODEL_DEFAULTS, **expected_model_params}
        for key in ("latent_dim", "conv_filters", "kernel_size", "dense_units", "decoder_dense_units",
                    "prior", "prior_components"):
            saved, wanted = saved_config[key], expected[key]
            if saved != wanted:
                raise PipelineError(
                    f"{path}: model has {key} = {saved} but params.yaml has model.{key} = {wanted}; "
                    "re-run the train stage (dvc repro train)"
                )
    return model
