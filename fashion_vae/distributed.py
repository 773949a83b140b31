"""Distribution strategies, and the multi-worker cluster read from ``TF_CONFIG``.

``train.distribute`` picks the strategy: ``none`` (one device), ``mirrored`` (all the
GPUs, else all the logical CPUs, of one machine) or ``multi_worker``
(``tf.distribute.MultiWorkerMirroredStrategy`` over the workers that TensorFlow's own
``TF_CONFIG`` environment variable lists). Under ``multi_worker`` worker 0 is the chief:
only it writes outputs; the others train their share of every batch and write nothing.
"""
from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Mapping

from fashion_vae import peer_loss_filter
from fashion_vae.errors import PipelineError
from fashion_vae.params import quote  # cuts a long value, so the error stays one short line

ENV_VAR = "TF_CONFIG"
DOCS = "docs/multi-worker.md"
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


@dataclass(frozen=True)
class Cluster:
    """The workers of a multi-worker run and which one this process is."""

    workers: tuple[str, ...]
    index: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def size(self) -> int:
        return len(self.workers)

    def describe(self) -> str:
        return f"worker {self.index} of {self.size} ({self.workers[self.index]})"


def parse_tf_config(text: str) -> Cluster:
    """Validate a ``TF_CONFIG`` value; one line names what is wrong.

    Only a ``worker`` job is supported (worker 0 is the chief): TensorFlow also knows
    ``chief``, ``ps`` and ``evaluator`` jobs, which this pipeline does not run.
    """
    where = ENV_VAR
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise PipelineError(f"{where}: not valid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(config, dict):
        raise PipelineError(f"{where}: expected a JSON object with 'cluster' and 'task', got {type(config).__name__}")
    unknown = sorted(set(config) - {"cluster", "task", "environment", "rpc_layer"})
    if unknown:
        raise PipelineError(f"{where}: unknown key {quote(unknown[0])}; expected 'cluster' and 'task'")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise PipelineError(f"{where}: no 'cluster' (expected \"cluster\": {{\"worker\": [\"host:port\", ...]}})")
    other_jobs = sorted(set(cluster) - {"worker"})
    if other_jobs:
        raise PipelineError(
            f"{where}: cluster has a {quote(other_jobs[0])} job; only 'worker' is supported (worker 0 is the chief)"
        )
    workers = cluster.get("worker")
    if not isinstance(workers, list) or not workers:
        raise PipelineError(f"{where}: cluster.worker must be a non-empty list of \"host:port\" addresses")
    for address in workers:
        match = _ADDRESS.match(address) if isinstance(address, str) else None
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise PipelineError(f"{where}: cluster.worker has {quote(address)}; expected \"host:port\" with a port in 1-65535")
    duplicates = sorted({a for a in workers if workers.count(a) > 1})
    if duplicates:
        raise PipelineError(f"{where}: cluster.worker lists {quote(duplicates[0])} more than once")
    task = config.get("task")
    if not isinstance(task, dict):
        raise PipelineError(f"{where}: no 'task' (expected \"task\": {{\"type\": \"worker\", \"index\": N}})")
    task_type = task.get("type")
    if task_type != "worker":
        raise PipelineError(f"{where}: task.type is {quote(task_type)}; expected 'worker'")
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise PipelineError(f"{where}: task.index is {quote(index)}; expected an integer")
    if not 0 <= index < len(workers):
        raise PipelineError(
            f"{where}: task.index {index} is out of range; cluster.worker has {len(workers)} "
            f"workers (0 to {len(workers) - 1})"
        )
    return Cluster(tuple(workers), index)


def cluster_from_env(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The cluster in ``TF_CONFIG``, or None when it is unset or empty."""
    text = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return parse_tf_config(text) if text.strip() else None


def is_chief(distribute: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process writes outputs: True unless ``TF_CONFIG`` names a worker other than 0.

    Raises :class:`PipelineError` for a malformed ``TF_CONFIG`` and, given
    ``train.distribute``, for one that does not match it (:func:`check_environment`),
    so a stage can call it before taking any lock or touching any output.
    """
    if distribute is not None:
        check_environment(distribute, environ)
    cluster = cluster_from_env(environ)
    return cluster is None or cluster.is_chief


def check_environment(distribute: str, environ: Mapping[str, str] | None = None) -> Cluster | None:
    """Check ``train.distribute`` against ``TF_CONFIG``; return the cluster under ``multi_worker``.

    ``TF_CONFIG`` without ``multi_worker`` would silently train each worker alone (and
    every one of them would write the outputs), so it is an error too.
    """
    cluster = cluster_from_env(environ)
    if distribute == "multi_worker":
        if cluster is None:
            raise PipelineError(
                f"train.distribute is multi_worker but {ENV_VAR} is not set; set it on every worker "
                f"(see {DOCS}) or start local workers with python -m fashion_vae.cluster"
            )
        return cluster
    if cluster is not None:
        raise PipelineError(
            f"{ENV_VAR} is set ({cluster.describe()}) but params.yaml has train.distribute = {distribute}; "
            f"set train.distribute: multi_worker, or unset {ENV_VAR} to train on this machine alone"
        )
    return None


def strategy_for(train_params: dict, same_on_every_worker: dict | None = None):
    """The ``tf.distribute`` strategy ``train.distribute`` asks for.

    Under ``multi_worker`` this blocks until every worker has joined (at most
    ``train.worker_timeout_s``), checks that every worker got the same
    ``same_on_every_worker`` (params sections and arrays, by name) and that the global
    batch (``train.batch_size``) splits evenly over the replicas.
    """
    import tensorflow as tf

    name = train_params["distribute"]
    cluster = check_environment(name)
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    global _active
    timeout_s = train_params["worker_timeout_s"]
    _active = (cluster, timeout_s)
    # Before the watchdog starts: its line, too, must pass the filter that drops TensorFlow's
    # multi-line records about a lost worker in favour of that one line.
    peer_loss_filter.install()
    # TensorFlow's own wait for the other workers has no deadline on worker 0.
    _watchdog().arm(timeout_s, _stopped_line(
        cluster, f"not every worker joined within train.worker_timeout_s = {timeout_s:g} s"
    ))
    strategy = _multi_worker_strategy(cluster, timeout_s)
    _watchdog().arm(TRAINING_WATCH_FACTOR * timeout_s, _stalled_line(cluster, timeout_s))
    _check_same_inputs(cluster, {"train": train_params, **(same_on_every_worker or {})}, timeout_s)
    replicas, batch_size = strategy.num_replicas_in_sync, train_params["batch_size"]
    if batch_size % replicas:
        # Uneven shares would weight some images more than others: a different optimisation.
        raise PipelineError(
            f"train.batch_size = {batch_size} does not split evenly over the {replicas} replicas of the "
            f"{cluster.size} workers in {ENV_VAR}; use a multiple of {replicas}"
        )
    return strategy


# The cluster and timeout of the multi-worker run this process is in, if any.
_active: tuple[Cluster, float] | None = None
# TensorFlow's heartbeats and collective timeouts report a lost worker after
# train.worker_timeout_s, naming it; the watchdog is the backstop for anything else.
TRAINING_WATCH_FACTOR = 2


def _multi_worker_strategy(cluster: Cluster, timeout_s: float):
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    _patch_keras_metric_reduction()
    timeout_ms = max(1000, int(timeout_s * 1000))
    # TensorFlow's coordination service (led by worker 0): configured here, before the
    # strategy (which then keeps it), so that the heartbeats that detect a dead worker,
    # a non-chief's registration and the barrier at exit give up after the timeout.
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader="/job:worker/replica:0/task:0",
        cluster_register_timeout_in_ms=timeout_ms,
        heartbeat_timeout_in_ms=timeout_ms,
        shutdown_barrier_timeout_in_ms=timeout_ms,
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=cluster.size)],
    )
    # A worker that is alive but stuck keeps sending heartbeats: its peers' collectives time out.
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=float(timeout_s))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)


def describe_inputs(inputs: dict) -> dict:
    """Params as they are, arrays by shape and SHA-256: what must match across workers."""
    import hashlib

    import numpy as np

    described = {}
    for name, value in inputs.items():
        if isinstance(value, np.ndarray):
            digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
            value = f"{value.dtype}{list(value.shape)} sha256:{digest}"
        described[name] = value
    return described


def first_difference(mine: dict, theirs: dict) -> str | None:
    """``section.key`` of the first value that differs, with both values; None if none does."""
    for name in sorted(set(mine) | set(theirs)):
        a, b = mine.get(name), theirs.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    return f"{name}.{key} is {a.get(key)!r} here but {b.get(key)!r}"
        elif a != b:
            return f"{name} is {a!r} here but {b!r}"
    return None


def _check_same_inputs(cluster: Cluster, inputs: dict, timeout_s: float) -> None:
    """Every worker must train the same model on the same data with the same settings:
    TensorFlow would happily average the gradients of different ones. Each worker
    publishes its inputs in the coordination service and compares the others'."""
    from tensorflow.python.eager import context

    mine = json.loads(json.dumps(describe_inputs(inputs), sort_keys=True, default=str))
    ctx = context.context()
    ctx.set_config_key_value(f"fashion_vae/inputs/{cluster.index}", json.dumps(mine))
    for index in range(cluster.size):
        if index == cluster.index:
            continue
        theirs = json.loads(ctx.get_config_key_value(f"fashion_vae/inputs/{index}", int(timeout_s * 1000)))
        difference = first_difference(mine, theirs)
        if difference:
            raise PipelineError(
                f"multi-worker training stopped on {cluster.describe()}: {difference} on worker {index} "
                f"({cluster.workers[index]}); every worker needs the same params.yaml and data/prepared"
            )


def evenly_split(x, batch_size: int, strategy):
    """``x`` less the last few images that would give some worker an uneven or empty share
    of the last (partial) batch, under ``multi_worker``; ``x`` itself otherwise.

    An empty share fails that worker's step ("input depth must be evenly divisible by
    filter depth: 1 vs 8"); even shares keep the validation loss a plain mean. At most
    replicas - 1 images are left out (none with 5,000 images, batches of 128 and 2 workers).
    """
    if not is_multi_worker(strategy):
        return x
    extra = (len(x) % batch_size) % strategy.num_replicas_in_sync
    return x[: len(x) - extra]


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def reports_worker_failures(func: Callable) -> Callable:
    """Decorate the function that trains: in a multi-worker run, TensorFlow's errors about a
    lost or silent peer become one :class:`PipelineError` line naming the worker, and the
    watchdog is disarmed when training ends."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import tensorflow as tf

        try:
            return func(*args, **kwargs)
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                tf.errors.AbortedError) as err:
            if _active is None:
                raise
            raise PipelineError(_failure_line(*_active, err)) from None
        finally:
            if _watchdog_process is not None:
                _watchdog_process.arm(0, "")

    return wrapper


def training_callbacks() -> list:
    """Callbacks ``fit()`` needs in a multi-worker run; none otherwise."""
    if _active is None:
        return []
    import keras

    cluster, timeout_s = _active
    message = _stalled_line(cluster, timeout_s)

    class WatchProgress(keras.callbacks.Callback):
        """Re-arm the watchdog after every step."""

        def _rearm(self, *_args, **_kwargs):
            _watchdog().arm(TRAINING_WATCH_FACTOR * timeout_s, message)

        on_train_batch_end = on_test_batch_end = on_epoch_end = _rearm

    return [WatchProgress()]


def _stopped_line(cluster: Cluster, what: str) -> str:
    return f"multi-worker training stopped on {cluster.describe()}: {what}; nothing was written, start all workers again"


def _stalled_line(cluster: Cluster, timeout_s: float) -> str:
    return _stopped_line(
        cluster,
        f"no training step finished for {TRAINING_WATCH_FACTOR} x train.worker_timeout_s = "
        f"{TRAINING_WATCH_FACTOR * timeout_s:g} s (a worker stopped or stopped responding)",
    )


def _failure_line(cluster: Cluster, timeout_s: float, err: Exception) -> str:
    text = str(err)
    others = sorted({int(t) for t in re.findall(r"/job:worker/(?:replica:0/)?task:(\d+)", text)} - {cluster.index})
    peers = ", ".join(f"worker {i} ({cluster.workers[i]})" for i in others if i < cluster.size)
    what = f"{peers or 'another worker'} stopped or stopped responding (train.worker_timeout_s = {timeout_s:g} s)"
    return _stopped_line(cluster, f"{what}; {type(err).__name__}")


# A separate process: while TensorFlow waits for the cluster it holds the GIL (no Python
# thread could act) and it handles SIGTERM itself; SIGKILL from outside always works.
_WATCHDOG_CODE = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the worker; its exit ends us (EOF)
parent, deadline, message, pending = int(sys.argv[1]), None, "", b""
while True:
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not select.select([0], [], [], wait)[0]:
        try:
            os.write(2, ("error: " + message + "\n").encode())
        finally:  # a closed stderr must not spare the stuck worker
            os.kill(parent, signal.SIGHUP)  # the worker's C-level handler: _exit(1)
            time.sleep(10)
            try:
                os.kill(parent, signal.SIGKILL)  # if even that did not end it
            except ProcessLookupError:
                pass
        break
    chunk = os.read(0, 65536)
    if not chunk:
        break
    *lines, pending = (pending + chunk).split(b"\n")
    for line in lines:
        seconds, _, message = line.decode().partition("\t")
        deadline = time.monotonic() + float(seconds) if float(seconds) > 0 else None
"""


def exit_1_on_sighup() -> None:
    """Make SIGHUP end this process at once with exit status 1, the status of a stage's one-line error.

    The watchdog must end a worker that TensorFlow blocks while holding the GIL, where no
    Python signal handler can run; SIGKILL would leave status 137. libc's ``_exit`` itself,
    installed as the C-level handler, is called with the signal number: SIGHUP is 1.
    """
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal(int(signal.SIGHUP), ctypes.cast(libc._exit, ctypes.c_void_p).value)


class Watchdog:
    """A child process that prints ``error: <message>`` and ends this process (exit status 1)
    unless it is re-armed (or disarmed, with 0 seconds) in time. It ends when this process ends."""

    def __init__(self):
        exit_1_on_sighup()
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG_CODE, str(os.getpid())], stdin=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in a terminal is for the worker; its exit (EOF) ends us
        )

    def arm(self, seconds: float, message: str) -> None:
        one_line = " ".join(message.split())
        self._process.stdin.write(f"{seconds}\t{one_line}\n".encode())
        self._process.stdin.flush()


_watchdog_process: Watchdog | None = None


def _watchdog() -> Watchdog:
    global _watchdog_process
    if _watchdog_process is None:
        _watchdog_process = Watchdog()
    return _watchdog_process


_patched = False


def _patch_keras_metric_reduction() -> None:
    """Let Keras 3 ``fit()`` reduce scalar metrics under MultiWorkerMirroredStrategy.

    Keras 3.15 reduces each step's metrics with ``strategy.reduce("MEAN", v, axis=0)``
    when it runs on several workers, which fails for scalars ("Invalid reduction
    dimension 0 for input with 0 dimensions"; keras-team/keras#20585,
    tensorflow/tensorflow#72388). Scalars are averaged over the replicas instead, as
    Keras does on one machine; everything else goes to Keras unchanged.
    """
    global _patched
    if _patched:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    keras_reduce = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            def reduce(value):
                if strategy.experimental_local_results(value)[0].shape.rank == 0:
                    return strategy.reduce("MEAN", value, axis=None)
                return keras_reduce(value, strategy, reduction)

            return tf.nest.map_structure(reduce, values)
        return keras_reduce(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica
    _patched = True
