"""The training configurations that bench.py times against each other.

* the project's train step, set up as ``fashion_vae.training.train`` sets it up;
* the plain keras.io example in this process (under the project's runtime settings);
* the plain keras.io example in a child process with TensorFlow's default settings,
  the reference for the ratios. The child is ``python -m benchmarks.bench --plain-worker``.

Nothing here imports ``fashion_vae`` at module level: the child must not get the
project's TensorFlow options.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from benchmarks import ROOT
from benchmarks.flops import SEED_BATCH, SEED_MODEL, flops_per_image
from benchmarks.interleave import EpochFitter, Runner
from benchmarks.plain_vae import build_plain_vae


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
    from benchmarks import load_tensorflow_quietly

    load_tensorflow_quietly()
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
