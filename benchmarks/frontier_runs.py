"""The frontier's child side: one configuration trained for one budget (or the plain
example's whole run), then scored on the test split. Run by ``benchmarks.frontier``
in a fresh process per run; results are printed as one tagged JSON line each."""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks import ROOT

PLAIN = "plain keras.io"
TAG = "FRONTIER-RESULT "
CALIBRATION_STEPS = 30  # steps timed to plan the epochs; the first few (tracing) are left out
KNN_K = 5
EVAL_SEED = 42
EVAL_BATCH = 1000


def time_budget_callback(budget_s: float):
    """A Keras callback that stops ``fit`` at the first step ending after ``budget_s`` seconds."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start = None
            self.seconds = 0.0
            self.steps = 0
            self.stopped = False

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            self.seconds = time.perf_counter() - self.start
            if self.seconds >= budget_s:
                self.stopped = True
                self.model.stop_training = True

    return TimeBudget()


def step_clock_callback(skip: int):
    """A Keras callback timing training steps after the first ``skip`` (graph tracing), and the whole fit."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []
            self.begin = self.end = None

        def on_train_begin(self, logs=None):
            self.begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

        def on_train_end(self, logs=None):
            self.end = time.perf_counter()

        def overhead_seconds(self) -> float:
            """Fit's time beyond its steps at the steady rate: tracing, one validation pass."""
            return max(0.0, (self.end - self.begin) - len(self.times) * self.steady_seconds_per_step())

        def steady_seconds_per_step(self) -> float:
            steady = self.times[skip:]
            return (steady[-1] - steady[0]) / (len(steady) - 1)

    return StepClock()


def load_splits(settings: dict):
    """(x_train, y_train), (x_val, _), (x_test, y_test), cut to the sizes asked for."""
    from fashion_vae import prepared

    data = Path(settings["data"])
    (xtr, ytr), (xv, yv), (xte, yte) = (
        prepared.load_split(data / f"{s}.npz") for s in ("train", "val", "test")
    )
    n, m = settings.get("train_images") or len(xtr), settings.get("test_images") or len(xte)
    return (
        (xtr[:n], ytr[:n]),
        (xv[: settings["val_images"]], yv[: settings["val_images"]]),
        (xte[:m], yte[:m]),
    )


def score(model, train, test, iwae_samples: int) -> dict:
    """Test iwae_nll, negative ELBO and 5-NN accuracy, as the evaluate stage computes them."""
    from fashion_vae import evaluation

    started = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = train, test
    terms = evaluation.elbo_terms(model, x_test, EVAL_BATCH, EVAL_SEED)
    nll = evaluation.iwae_nll(model, x_test, iwae_samples, EVAL_BATCH, EVAL_SEED)
    train_z, _ = evaluation.encode(model, x_train, EVAL_BATCH)
    test_z, _ = evaluation.encode(model, x_test, EVAL_BATCH)
    return {
        "iwae_nll": round(float(nll.mean()), 3),
        "neg_elbo": round(float((terms["reconstruction"] + terms["kl"]).mean()), 3),
        "kl": round(float(terms["kl"].mean()), 3),
        f"knn{KNN_K}": round(evaluation.knn_accuracy(train_z, y_train, test_z, y_test, KNN_K), 4),
        "score_seconds": round(time.perf_counter() - started, 1),
    }


def run_project(overrides: dict, budget: float, settings: dict) -> dict:
    """One configuration of the project's trainer (``training.train``), planned to fill the budget."""
    from fashion_vae import params, training

    cfg = params.load(ROOT / "params.yaml")
    model_params = {**cfg["model"], **overrides.get("model", {})}
    # The run's seed (weights, shuffling, sampling) comes from the frontier, not params.yaml.
    train_params = {**cfg["train"], **overrides.get("train", {}), "seed": settings["seed"]}
    params.validate({**cfg, "model": model_params, "train": train_params})
    train, val, test = load_splits(settings)
    x_train, batch = train[0], train_params["batch_size"]

    # Calibration: images/s and the start-up cost (tracing, validation) of this configuration,
    # from a throw-away short run, so that the schedule's last epoch ends near the budget.
    clock = step_clock_callback(skip=5)
    calib_steps = min(CALIBRATION_STEPS, len(x_train) // batch)
    training.train(
        model_params,
        {**train_params, "epochs": 1, "warmup_epochs": 0, "lr_schedule": "constant"},
        x_train[: calib_steps * batch],
        val[0],
        callbacks=[clock],
        verbose=0,
    )
    images_per_second = batch / clock.steady_seconds_per_step()
    overhead = clock.overhead_seconds()
    # Nearest whole epoch: a plan a little long is cut at the budget, a little short ends early.
    epochs = max(
        1, round(max(0.0, budget - overhead) * images_per_second / ((len(x_train) // batch) * batch))
    )
    planned = {
        **train_params,
        "epochs": epochs,
        "warmup_epochs": min(train_params["warmup_epochs"], epochs - 1),
    }

    stop = time_budget_callback(budget)
    model, summary = training.train(model_params, planned, x_train, val[0], callbacks=[stop], verbose=0)
    return {
        "epochs_planned": epochs,
        "epochs_run": summary["epochs"],
        "calibrated_images_per_second": round(images_per_second, 1),
        "calibrated_overhead_s": round(overhead, 2),
        "train_seconds": round(stop.seconds, 2),
        "train_steps": stop.steps,
        "stopped_by_budget": stop.stopped,
        **score(model, train, test, settings["iwae_samples"]),
    }


def plain_checkpoints_callback(budgets: list[float], score_now):
    """Scores the plain example when its training clock passes each budget; the clock stops meanwhile."""
    import keras

    class Checkpoints(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.pending = sorted(budgets)
            self.results = []
            self.steps = 0
            self.paused = 0.0
            self.start = None

        def seconds(self) -> float:
            return time.perf_counter() - self.start - self.paused

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.pending and self.seconds() >= self.pending[0]:
                self.record(self.pending.pop(0))

        def record(self, budget):
            seconds, began = self.seconds(), time.perf_counter()
            self.results.append({"budget_s": budget, "train_seconds": round(seconds, 2),
                                 "train_steps": self.steps,
                                 "stopped_by_budget": budget is not None, **score_now()})
            self.paused += time.perf_counter() - began

    return Checkpoints()


def run_plain(budgets: list[float], settings: dict) -> list[dict]:
    """The keras.io example under TensorFlow's defaults: one run of ``plain_epochs``, scored along the way."""
    from benchmarks import load_tensorflow_quietly

    load_tensorflow_quietly()
    import keras
    import numpy as np

    from benchmarks.flops import SEED_BATCH, SEED_MODEL
    from benchmarks.plain_vae import build_plain_vae

    # Only numpy and Keras until training starts: nothing of the project's runtime settings.
    with np.load(Path(settings["data"]) / "train.npz", allow_pickle=False) as data:
        x = np.ascontiguousarray(data["x"][: settings.get("train_images") or None])
    seed = settings["seed"]
    keras.utils.set_random_seed(seed)
    plain = build_plain_vae(seed)
    splits = {}

    def score_now() -> dict:
        # TensorFlow is loaded and configured by now: importing the package changes nothing of it.
        from fashion_vae.model import build_vae

        if not splits:
            train, _, test = load_splits(settings)
            splits.update(train=train, test=test, model=build_vae(SEED_MODEL, seed))
        model = splits["model"]
        model.encoder.set_weights(plain.encoder.get_weights())
        model.decoder.set_weights(plain.decoder.get_weights())
        z = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
        np.testing.assert_allclose(model.decoder(z), plain.decoder(z), rtol=1e-4, atol=1e-6)
        return score(model, splits["train"], splits["test"], settings["iwae_samples"])

    checkpoints = plain_checkpoints_callback(budgets, score_now)
    epochs = settings["plain_epochs"]
    plain.fit(x, epochs=epochs, batch_size=SEED_BATCH, callbacks=[checkpoints], verbose=0)
    checkpoints.record(None)  # the end of the run: the example's own number of epochs
    steps_per_epoch = -(-len(x) // SEED_BATCH)
    return [
        {"epochs_planned": epochs if r["budget_s"] is None else None,
         "epochs_run": round(r["train_steps"] / steps_per_epoch, 2),
         "calibrated_images_per_second": None, "calibrated_overhead_s": None, **r}
        for r in checkpoints.results
    ]


def run_child(name: str, spec: str, budgets: list[float], settings: dict) -> None:
    overrides = json.loads(spec)
    if overrides is None:
        results = run_plain(budgets, settings)
    else:
        results = [{"budget_s": budgets[0], **run_project(overrides, budgets[0], settings)}]
    for result in results:
        print(TAG + json.dumps({"config": name, "overrides": overrides, "seed": settings["seed"], **result}),
              flush=True)
