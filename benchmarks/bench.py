"""Performance benchmark of the pipeline (issue 6): training, evaluation, DVC, memory.

    python -m benchmarks.bench [--quick] [--out PATH] [--onednn auto|on|off]
                               [--train-images N] [--reps R] [--iwae-images N]
                               [--skip-dvc] [--skip-memory] [--no-plain-same-runtime]

One run, on the real prepared data (about 2 minutes on a quiet 2-core machine; --quick under 1), measures:

* steady-state training throughput (images/s, achieved GFLOP/s) of the project's own
  train step (``fashion_vae.training``: the VAE compiled as ``train()`` compiles it,
  ``model.fit`` on ``make_dataset``, ``configure_runtime`` applied) for the seed
  architecture at batch 128 and for the params.yaml default configuration;
* the plain keras.io VAE example (functional encoder/decoder, sigmoid output,
  ``keras.losses.binary_crossentropy``, ``fit(x, batch_size=128)`` on numpy), written
  here, run twice: in a child process with TensorFlow's default settings (the
  reference for the ratios) and in this process under the project's runtime settings;
  all configurations run ALTERNATELY, one epoch each per repetition, after a warm-up
  epoch; median, min/max and IQR over repetitions, epoch time from callbacks;
* FLOPs per training image, counted analytically from the layer shapes;
* numpy float32 2048^2 matmul FLOP/s of this machine at the start, middle and end of
  the run, and every throughput as a fraction of the best of them;
* evaluation throughput: the ELBO pass and the IWAE pass (K = evaluate.iwae_samples)
  of ``fashion_vae.evaluation``;
* ``dvc repro`` no-op time (only when ``dvc status`` is clean) and the peak RSS of a
  child that trains 1 epoch of the params.yaml configuration on the full train split.

It prints a table and writes JSON (default benchmarks/results.json). Nothing in the
repository other than that JSON file is written.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results.json"

# The keras.io example's architecture ("seed"), trained at batch 128.
SEED_MODEL = {"latent_dim": 2, "conv_filters": [32, 64], "kernel_size": 3, "dense_units": 16, "decoder_dense_units": 0, "beta": 1.0}
SEED_BATCH = 128
REFERENCE_MFLOP = {"forward": 13.3, "train": 39.9}  # issue 6, seed architecture


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict:
    cpu_model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu_model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "simd": sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"}),
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
    }


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def matmul_gflops(n: int, repeats: int) -> float:
    """Best-of-``repeats`` numpy float32 ``n x n`` matmul rate (GFLOP/s)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool, page faults
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- FLOPs


def flops_per_image(model_params: dict, side: int = 28) -> dict:
    """Analytic forward MACs per layer of the project's VAE; FLOPs = 2 * MACs.

    Convolutions count every kernel tap (padding included), a transposed conv
    in_h * in_w * k * k * c_in * c_out. Training is taken as 3x the forward pass
    (forward + gradients w.r.t. inputs and weights).
    """
    k, filters = model_params["kernel_size"], list(model_params["conv_filters"])
    dense, latent = model_params["dense_units"], model_params["latent_dim"]
    macs: dict[str, int] = {}
    s, c = side, 1
    for i, f in enumerate(filters):
        out = -(-s // 2)
        macs[f"encoder.conv{i}"] = out * out * k * k * c * f
        s, c = out, f
    macs["encoder.hidden"] = s * s * c * dense
    macs["encoder.heads"] = 2 * dense * latent
    rev = filters[::-1]
    s = side // 2 ** len(filters)
    hidden = model_params.get("decoder_dense_units", 0)
    if hidden:
        macs["decoder.hidden"] = latent * hidden
    macs["decoder.project"] = (hidden or latent) * s * s * rev[0]
    c = rev[0]
    for i, f in enumerate(rev):
        macs[f"decoder.deconv{i}"] = s * s * k * k * c * f
        s, c = 2 * s, f
    macs["decoder.logits"] = s * s * k * k * c * 1
    forward = 2 * sum(macs.values())
    return {
        "forward_flop": forward,
        "train_flop": 3 * forward,
        "forward_mflop_by_layer": {name: round(2 * m / 1e6, 4) for name, m in macs.items()},
    }


# ----------------------------------------------------------------------------- plain keras.io VAE


def build_plain_vae(seed: int):
    """The keras.io "Variational AutoEncoder" example, as written there (Keras 3)."""
    import keras
    import tensorflow as tf
    from keras import layers, ops

    class Sampling(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            batch, dim = ops.shape(z_mean)[0], ops.shape(z_mean)[1]
            epsilon = keras.random.normal(shape=(batch, dim), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    latent_dim = 2
    encoder_inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
    x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    z = Sampling()([z_mean, z_log_var])
    encoder = keras.Model(encoder_inputs, [z_mean, z_log_var, z], name="encoder")

    latent_inputs = keras.Input(shape=(latent_dim,))
    x = layers.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
    decoder = keras.Model(latent_inputs, decoder_outputs, name="decoder")

    class VAE(keras.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.decoder = decoder
            self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
            self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
            self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

        @property
        def metrics(self):
            return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                z_mean, z_log_var, z = self.encoder(data)
                reconstruction = self.decoder(z)
                reconstruction_loss = ops.mean(
                    ops.sum(keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2))
                )
                kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
                kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
                total_loss = reconstruction_loss + kl_loss
            grads = tape.gradient(total_loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total_loss_tracker.update_state(total_loss)
            self.reconstruction_loss_tracker.update_state(reconstruction_loss)
            self.kl_loss_tracker.update_state(kl_loss)
            return {m.name: m.result() for m in self.metrics}

    vae = VAE(encoder, decoder)
    vae.compile(optimizer=keras.optimizers.Adam())
    return vae


# ----------------------------------------------------------------------------- training runners


class EpochTimer:
    """Seconds from on_epoch_begin to on_epoch_end of a one-epoch ``fit``; ``done`` is set at the end.

    Timing the whole ``fit`` call would add its set-up and tear-down, and in TF 2.21 the
    tear-down of a tf.data iterator with AUTOTUNE waits for the autotuner's next wake-up
    (10 ms * 2^k after the iterator started, at most 60 s apart): seconds of idle stall.
    """

    def __new__(cls):
        import threading

        import keras

        class _Timer(keras.callbacks.Callback):
            seconds = None

            def __init__(self):
                super().__init__()
                self.done = threading.Event()

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds = time.perf_counter() - self._start
                self.done.set()

        return _Timer()


class EpochFitter:
    """Runs one-epoch ``fit`` calls in a worker thread and returns at the epoch's end.

    The worker finishes ``fit``'s idle tear-down (see EpochTimer) while the other
    configurations run, so the stall costs no benchmark time and is never timed.
    """

    def __init__(self, model, data, **kwargs):
        self.model, self.data, self.kwargs = model, data, kwargs
        self._thread, self._error = None, None

    def __call__(self) -> float:
        import threading

        self.join()
        timer = EpochTimer()

        def run():
            try:
                self.model.fit(self.data, epochs=1, verbose=0, callbacks=[timer], **self.kwargs)
            except BaseException as err:  # re-raised in the caller
                self._error = err
                timer.done.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        timer.done.wait()
        if self._error is not None:
            raise self._error
        return timer.seconds

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class Runner:
    """One training configuration; ``epoch()`` runs one epoch and returns its seconds."""

    def __init__(self, name: str, images_per_epoch: int, run_epoch, train_flop: float, batch_size: int,
                 note: str = ""):
        self.name, self.images_per_epoch, self.epoch = name, images_per_epoch, run_epoch
        self.train_flop, self.batch_size, self.note = train_flop, batch_size, note
        self.seconds: list[float] = []
        self.model = None


def project_runner(name: str, model_params: dict, train_params: dict, x: np.ndarray) -> Runner:
    """The project's train step exactly as ``training.train`` sets it up (minus validation)."""
    import keras

    from fashion_vae import training
    from fashion_vae.model import build_vae

    batch_size = train_params["batch_size"]
    steps = len(x) // batch_size
    vae = build_vae(model_params, train_params["seed"])
    vae.compile(
        optimizer=keras.optimizers.Adam(training.learning_rate(train_params, steps)),
        steps_per_execution=min(train_params["steps_per_execution"], steps),
    )
    dataset = training.make_dataset(x, batch_size, train_params["seed"], shuffle=True)
    flop = flops_per_image(model_params)["train_flop"]
    # shuffle=False as in training.train: the tf.data pipeline shuffles, seeded.
    runner = Runner(name, steps * batch_size, EpochFitter(vae, dataset, shuffle=False), flop, batch_size,
                    "fashion_vae.training runtime (configure_runtime: pinned threads, op determinism)")
    runner.model = vae
    return runner


def plain_runner(x: np.ndarray, seed: int) -> Runner:
    """The keras.io example in this process, i.e. under the project's runtime settings."""
    vae = build_plain_vae(seed)
    flop = flops_per_image(SEED_MODEL)["train_flop"]
    # fit on numpy arrays: Keras batches them itself (a partial last batch included).
    return Runner("plain keras.io, same runtime", len(x), EpochFitter(vae, x, batch_size=SEED_BATCH), flop, SEED_BATCH,
                  "in this process: the project's threads, determinism and TF_ENABLE_ONEDNN_OPTS")


# Environment variables that change TensorFlow's CPU runtime; the default-settings
# plain run gets none of them (what a user running the keras.io example would have).
RUNTIME_ENV = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS",
               "TF_DETERMINISTIC_OPS", "ONEDNN_VERBOSE")


class ChildPlainRunner(Runner):
    """The keras.io example in a child process with TensorFlow's default settings.

    The child waits for a command on stdin, runs one epoch, answers with its seconds,
    so its epochs interleave with the parent's even though the runtimes differ.
    """

    def __init__(self, n_train: int, seed: int):
        env = {k: v for k, v in os.environ.items() if k not in RUNTIME_ENV}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench", "--plain-worker", str(n_train), str(seed)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.child_info = json.loads(self._read("READY"))
        super().__init__("plain keras.io, TF defaults", n_train, self._epoch, flops_per_image(SEED_MODEL)["train_flop"],
                         SEED_BATCH, "child process, TensorFlow defaults: " + json.dumps(self.child_info))

    def _read(self, tag: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return line[len(tag) + 1:].strip()
        raise RuntimeError(f"plain worker exited (code {self.proc.wait()})")

    def _epoch(self) -> float:
        self.proc.stdin.write("epoch\n")
        self.proc.stdin.flush()
        return float(self._read("SECONDS"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def plain_worker(n_train: int, seed: int) -> None:
    """Child side of ChildPlainRunner: no project imports (they may set TF options)."""
    import keras
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    with np.load(ROOT / "data" / "prepared" / "train.npz", allow_pickle=False) as data:
        x = np.ascontiguousarray(data["x"][:n_train])
    keras.utils.set_random_seed(seed)
    vae = build_plain_vae(seed)
    info = {
        "onednn": bool(_pywrap_util_port.IsMklEnabled()),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "op_determinism": False,
    }
    print("READY " + json.dumps(info), flush=True)
    fitter = EpochFitter(vae, x, batch_size=SEED_BATCH)
    for line in sys.stdin:
        if line.strip() == "epoch":
            print(f"SECONDS {fitter()!r}", flush=True)
    fitter.join()


def summarise(values: list[float]) -> dict:
    values = sorted(values)
    out = {"median": statistics.median(values), "min": values[0], "max": values[-1], "n": len(values)}
    if len(values) >= 4:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        out["iqr"] = [q1, q3]
    return out


def bench_training(runners: list[Runner], reps: int, peak_gflops: float) -> dict:
    for r in runners:  # warm-up: tracing, tf.data pipelines, allocator
        r.epoch()
    for _ in range(reps):  # interleaved: ABCABC..., so background load hits all alike
        for r in runners:
            r.seconds.append(r.epoch())
    results = {}
    for r in runners:
        ips = [r.images_per_epoch / s for s in r.seconds]
        gf = [v * r.train_flop / 1e9 for v in ips]
        med = statistics.median(ips)
        results[r.name] = {
            "batch_size": r.batch_size,
            "images_per_epoch": r.images_per_epoch,
            "images_per_second": summarise(ips),
            "train_mflop_per_image": r.train_flop / 1e6,
            "gflops": summarise(gf),
            "fraction_of_matmul_peak": med * r.train_flop / 1e9 / peak_gflops,
            "epoch_seconds": r.seconds,
            "note": r.note,
        }
    return results


# ----------------------------------------------------------------------------- evaluation


def bench_evaluation(model, x_test: np.ndarray, eval_params: dict, n_elbo: int, n_iwae: int, reps: int) -> dict:
    """ELBO and IWAE passes with the project's evaluation functions (or a fallback)."""
    k, batch, seed = eval_params["iwae_samples"], eval_params["batch_size"], eval_params["seed"]
    try:
        from fashion_vae.evaluation import elbo_terms, iwae_nll

        source = "fashion_vae.evaluation.elbo_terms / iwae_nll"
    except ImportError:
        elbo_terms, iwae_nll = _fallback_elbo_terms, _fallback_iwae_nll
        source = "benchmarks.bench fallback (fashion_vae.evaluation missing)"
    x_elbo, x_iwae = x_test[:n_elbo], x_test[:n_iwae]
    # Each call traces its tf.function again (as the evaluate stage does): tracing is included.
    elbo_s = [_timed(lambda: elbo_terms(model, x_elbo, batch, seed)) for _ in range(reps)]
    iwae_s = [_timed(lambda: iwae_nll(model, x_iwae, k, batch, seed)) for _ in range(max(1, reps - 1))]
    iwae_ips = statistics.median(len(x_iwae) / s for s in iwae_s)
    return {
        "source": source,
        "elbo": {"images": len(x_elbo), "batch_size": batch, "images_per_second": summarise([len(x_elbo) / s for s in elbo_s])},
        "iwae": {
            "images": len(x_iwae),
            "k": k,
            "batch_size": batch,
            "images_per_second": summarise([len(x_iwae) / s for s in iwae_s]),
            "decoder_samples_per_second": iwae_ips * k,
            "projected_seconds_full_test_set": len(x_test) / iwae_ips,
        },
    }


def _fallback_elbo_terms(model, x, batch_size, seed):
    import tensorflow as tf

    from fashion_vae.model import bce_per_image, kl_per_image

    @tf.function(reduce_retracing=True)
    def terms(batch):
        z_mean, z_log_var, z = model.encoder(batch, training=False)
        return bce_per_image(batch, model.decoder.logits(z)), kl_per_image(z_mean, z_log_var)

    return [terms(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def _fallback_iwae_nll(model, x, k, batch_size, seed):
    import tensorflow as tf

    from fashion_vae.model import bce_per_image

    rng = np.random.default_rng(seed)

    @tf.function(reduce_retracing=True)
    def log_w(img, eps):
        z_mean, z_log_var, _ = model.encoder(img, training=False)
        z = z_mean + tf.exp(0.5 * z_log_var) * eps
        logits = model.decoder.logits(z)
        log_px = -bce_per_image(tf.repeat(img, tf.shape(eps)[0], axis=0), logits)
        return log_px - 0.5 * tf.reduce_sum(tf.square(z), -1) + 0.5 * tf.reduce_sum(tf.square(eps) + z_log_var, -1)

    out = []
    for i in range(len(x)):
        for j in range(0, k, batch_size):
            eps = rng.standard_normal((min(batch_size, k - j), model.latent_dim)).astype(np.float32)
            out.append(log_w(x[i:i + 1], eps))
    return out


# ----------------------------------------------------------------------------- DVC and memory


def bench_dvc_noop(timeout: int = 300) -> dict:
    dvc = Path(sys.executable).with_name("dvc")
    if not (ROOT / "dvc.yaml").exists():
        return {"seconds": None, "reason": "no dvc.yaml in the repository"}
    if not dvc.exists():
        return {"seconds": None, "reason": f"{dvc} not found"}
    status = subprocess.run([str(dvc), "status"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    text = (status.stdout + status.stderr).strip()
    if status.returncode != 0 or "up to date" not in text:
        return {"seconds": None, "reason": "dvc status is not up to date: " + " ".join(text.split())[:300]}
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        proc = subprocess.run([str(dvc), "repro"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        runs.append(time.perf_counter() - start)
        if proc.returncode != 0:
            return {"seconds": None, "reason": "dvc repro failed: " + " ".join(proc.stderr.split())[:300]}
    return {"seconds": min(runs), "runs": runs}


MEMORY_SCRIPT = r"""
import json, sys, time
from fashion_vae import params, prepared, training
cfg = params.load()
x_train, _ = prepared.load_split("data/prepared/train.npz")
x_val, _ = prepared.load_split("data/prepared/val.npz")
limit = int(sys.argv[1])
if limit > 0:
    x_train, x_val = x_train[:limit], x_val[: max(limit // 10, cfg["train"]["batch_size"])]
# One epoch of the stage's configuration (warm-up off: a 1-epoch cosine schedule needs it).
_, summary = training.train(cfg["model"], {**cfg["train"], "epochs": 1, "warmup_epochs": 0}, x_train, x_val, verbose=0)
print("SUMMARY " + json.dumps({**summary, "train_images": len(x_train)}))
"""


def bench_train_memory(limit: int, timeout: int = 480) -> dict:
    """Peak RSS of a child that trains 1 epoch with the params.yaml config (the train stage's work).

    ``os.wait4`` gives that child's own rusage (ru_maxrss, KiB on Linux), unlike
    RUSAGE_CHILDREN, which is the maximum over every child this process waited for.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        script, out_path, err_path = Path(tmp) / "train1.py", Path(tmp) / "out", Path(tmp) / "err"
        script.write_text(MEMORY_SCRIPT)
        start = time.perf_counter()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, str(script), str(limit)], cwd=ROOT, env=env, stdout=out,
                                    stderr=err)
            deadline = start + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.2)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        stdout, stderr = out_path.read_text(), err_path.read_text()
    if proc.returncode != 0:
        return {"max_rss_mib": None, "reason": f"training child failed (exit {proc.returncode}): "
                + " ".join(stderr.split())[-300:]}
    summary = next((json.loads(line[8:]) for line in stdout.splitlines() if line.startswith("SUMMARY ")), {})
    return {
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "train_images": summary.get("train_images"),
        "wall_seconds_including_startup": round(wall, 1),
        "train_summary": summary,
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (~1 min): small subsets, 2 reps, no dvc")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--train-images", type=int, help="train images per timed epoch (default 8192; quick 1024)")
    p.add_argument("--reps", type=int, help="interleaved timed epochs per configuration (default 4; quick 2)")
    p.add_argument("--iwae-images", type=int, help="test images for the IWAE pass (default 32; quick 2)")
    p.add_argument("--skip-dvc", action="store_true", help="do not time `dvc repro` (always skipped with --quick)")
    p.add_argument("--skip-memory", action="store_true", help="do not run the 1-epoch training child")
    p.add_argument("--no-plain-same-runtime", action="store_true",
                   help="skip the plain example under the project's runtime settings (in-process)")
    p.add_argument("--onednn", choices=("auto", "on", "off"), default="auto",
                   help="TF_ENABLE_ONEDNN_OPTS for this process (not the TF-defaults plain child): "
                        "auto leaves the environment and the project's own setting alone")
    p.add_argument("--plain-worker", nargs=2, type=int, metavar=("N", "SEED"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.plain_worker:
        return plain_worker(*args.plain_worker)
    quick = args.quick
    n_train = args.train_images or (1024 if quick else 8192)
    reps = args.reps or (2 if quick else 4)
    n_iwae = args.iwae_images or (2 if quick else 32)

    os.chdir(ROOT)
    if args.onednn != "auto":  # before anything imports TensorFlow
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    from fashion_vae import params, prepared, training

    cfg = params.load()
    train_params, model_params = cfg["train"], cfg["model"]
    started = time.perf_counter()
    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": None,
        "settings": {
            "quick": quick, "onednn_option": args.onednn, "train_images": n_train, "reps": reps, "iwae_images": n_iwae,
            "threads": train_params["threads"],
            "onednn": None,
            "env": {k: os.environ.get(k) for k in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS",
                                                   "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")},
        },
    }
    mm_n, mm_reps = (1024, 5) if quick else (2048, 7)
    peak_start = matmul_gflops(mm_n, mm_reps)  # before TensorFlow starts its thread pools

    training.configure_runtime(train_params["seed"], train_params["threads"])  # determinism on, pinned threads
    info["versions"] = versions()
    from tensorflow.python.util import _pywrap_util_port

    info["settings"]["onednn"] = bool(_pywrap_util_port.IsMklEnabled())
    x_train, _ = prepared.load_split("data/prepared/train.npz")
    x_test, _ = prepared.load_split("data/prepared/test.npz")
    x = x_train[:n_train]

    seed_train = {**train_params, "batch_size": SEED_BATCH}
    default_is_seed = (
        {k: model_params[k] for k in SEED_MODEL} == SEED_MODEL and train_params["batch_size"] == SEED_BATCH
    )
    child = ChildPlainRunner(len(x), train_params["seed"])
    runners = [child, project_runner("ours (seed, batch 128)", SEED_MODEL, seed_train, x)]
    if not default_is_seed:
        runners.append(project_runner("ours (params.yaml default)", model_params, train_params, x))
    if not args.no_plain_same_runtime:
        runners.append(plain_runner(x, train_params["seed"]))
    flops_seed = flops_per_image(SEED_MODEL)
    peak_mid = matmul_gflops(mm_n, mm_reps)
    peak = max(peak_start, peak_mid)
    try:
        train_results = bench_training(runners, reps, peak)
    finally:
        child.close()
        for r in runners:
            if isinstance(r.epoch, EpochFitter):
                r.epoch.join()
    peak_end = matmul_gflops(mm_n, mm_reps)
    peak = max(peak, peak_end)
    for r in runners:  # re-express against the best matmul rate seen in the run
        res = train_results[r.name]
        res["fraction_of_matmul_peak"] = res["gflops"]["median"] / peak
    plain = train_results[runners[0].name]["images_per_second"]["median"]
    ratios = {r.name: train_results[r.name]["images_per_second"]["median"] / plain for r in runners[1:]}
    plain_ips = [runners[0].images_per_epoch / s for s in runners[0].seconds]
    per_rep_ratio = {
        r.name: summarise([(r.images_per_epoch / s) / p for s, p in zip(r.seconds, plain_ips)]) for r in runners[1:]
    }
    if default_is_seed:
        train_results["ours (params.yaml default)"] = {"same_as": "ours (seed, batch 128)"}

    eval_results = bench_evaluation(runners[1].model, x_test, cfg["evaluate"], 1000 if quick else len(x_test),
                                    n_iwae, 2 if quick else 3)
    memory = {"max_rss_mib": None, "reason": "skipped (--skip-memory)"}
    if not args.skip_memory:
        memory = bench_train_memory(1024 if quick else 0)
    dvc = {"seconds": None, "reason": "skipped (--quick)" if quick else "skipped (--skip-dvc)"}
    if not (quick or args.skip_dvc):
        dvc = bench_dvc_noop()
    results = {
        **info,
        "matmul": {"n": mm_n, "gflops_start": peak_start, "gflops_mid": peak_mid, "gflops_end": peak_end,
                   "gflops_used": peak},
        "flops_per_image": {
            "seed": {**flops_seed, "reference_mflop": REFERENCE_MFLOP,
                     "matches_reference": abs(flops_seed["forward_flop"] / 1e6 - REFERENCE_MFLOP["forward"]) < 0.1
                     and abs(flops_seed["train_flop"] / 1e6 - REFERENCE_MFLOP["train"]) < 0.15},
            "default": flops_per_image(model_params),
        },
        "training": train_results,
        "ratio_over_plain_defaults": ratios,
        "ratio_over_plain_defaults_per_rep": per_rep_ratio,
        "evaluation": eval_results,
        "dvc_repro_noop": dvc,
        "train_stage_memory": memory,
        "load_average_at_end": list(os.getloadavg()),
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    print_table(results)
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return results


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def print_table(r: dict) -> None:
    m, v = r["machine"], r["versions"]
    print(f"\n== fashion-vae benchmark  {r['date']}")
    print(f"machine : {m['cpu_model']}, {m['usable_cpus']} usable / {m['logical_cpus']} logical CPUs, "
          f"{' '.join(m['simd'])}; load avg {m['load_average_at_start'][0]:.2f} -> {r['load_average_at_end'][0]:.2f}")
    print(f"versions: python {v['python']}, tensorflow {v['tensorflow']}, keras {v['keras']}, numpy {v['numpy']}; "
          f"oneDNN kernels in this process: {'on' if r['settings']['onednn'] else 'off'}")
    mm = r["matmul"]
    print(f"matmul  : numpy float32 {mm['n']}^2: {mm['gflops_start']:.1f} / {mm['gflops_mid']:.1f} / "
          f"{mm['gflops_end']:.1f} GFLOP/s (start/mid/end); using {mm['gflops_used']:.1f}")
    fs = r["flops_per_image"]["seed"]
    print(f"FLOPs   : seed forward {fs['forward_flop'] / 1e6:.2f} MFLOP, train {fs['train_flop'] / 1e6:.2f} MFLOP/image "
          f"(reference {fs['reference_mflop']['forward']}/{fs['reference_mflop']['train']}: "
          f"{'match' if fs['matches_reference'] else 'MISMATCH'}); default train "
          f"{r['flops_per_image']['default']['train_flop'] / 1e6:.2f} MFLOP/image")
    s = r["settings"]
    print(f"\ntraining, {s['train_images']} images/epoch, {s['reps']} interleaved reps after 1 warm-up, "
          f"{s['threads']} threads")
    print(f"{'configuration':30s} {'batch':>5s} {'img/s med':>9s} {'min':>7s} {'max':>7s} {'GFLOP/s':>8s} "
          f"{'%matmul':>7s} {'x plain':>7s}")
    plain_name = next(iter(r["training"]))
    for name, t in r["training"].items():
        if "same_as" in t:
            print(f"{name:30s}  = {t['same_as']}")
            continue
        ips = t["images_per_second"]
        ratio = 1.0 if name == plain_name else r["ratio_over_plain_defaults"][name]
        print(f"{name:30s} {t['batch_size']:5d} {ips['median']:9.0f} {ips['min']:7.0f} {ips['max']:7.0f} "
              f"{t['gflops']['median']:8.1f} {100 * t['fraction_of_matmul_peak']:6.1f}% {ratio:7.2f}")
    e = r["evaluation"]
    print(f"\nevaluation ({e['source']}):")
    print(f"  ELBO pass : {e['elbo']['images_per_second']['median']:9.0f} images/s ({e['elbo']['images']} test images)")
    iw = e["iwae"]
    print(f"  IWAE K={iw['k']}: {iw['images_per_second']['median']:9.2f} images/s "
          f"({iw['decoder_samples_per_second']:.0f} decoded samples/s; full test set ~"
          f"{iw['projected_seconds_full_test_set'] / 60:.1f} min)")
    d = r["dvc_repro_noop"]
    print(f"\ndvc repro no-op : {d['seconds']:.2f} s" if d["seconds"] is not None else f"\ndvc repro no-op : n/a ({d['reason']})")
    mem = r["train_stage_memory"]
    if mem.get("max_rss_mib") is not None:
        print(f"train 1 epoch   : max RSS {mem['max_rss_mib']:.0f} MiB ({mem['train_images']} images, "
              f"{mem['wall_seconds_including_startup']} s incl. start-up, "
              f"{mem['train_summary'].get('train_images_per_second')} images/s)")
    else:
        print(f"train 1 epoch   : n/a ({mem.get('reason')})")
    print(f"benchmark took {r['bench_seconds']} s")


if __name__ == "__main__":
    main()
