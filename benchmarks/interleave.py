"""Interleaved timing of training configurations: one epoch each, in turn, repeated.

Every configuration is a ``Runner`` whose ``epoch()`` runs one epoch and returns its
seconds. ``bench_training`` warms each up once, then runs them ABCABC..., so background
load on a shared machine hits all of them alike, and summarises images/s and GFLOP/s.
"""
from __future__ import annotations

import statistics
import time


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
