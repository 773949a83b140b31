"""Test quality against wall-clock training budget, for several configurations (issue 13).

    python -m benchmarks.frontier [--budgets 60 180 480] [--configs NAME ...] [--config NAME=JSON ...]
                                  [--data DIR] [--train-images N] [--test-images N] [--val-images N]
                                  [--iwae-samples K] [--out PATH] [--plot PATH] [--list]

Every configuration trains once per budget, from scratch, in a fresh child process, one
run at a time, budgets in the outer loop (so background load hits all configurations
alike). A run is planned to fill its budget: a short calibration measures the
configuration's images/s, the epochs that fit the budget set the learning-rate schedule
(cosine decays to zero at the budget), and training stops at the budget whatever the
estimate said. The training seconds reported are from the start of ``fit`` (graph
tracing included) to the end of the last training step; calibration and scoring are
not counted. Validation runs on ``--val-images`` images only, so it costs little.

Each run is then scored on the test split: the IWAE bound ``iwae_nll`` (K =
``--iwae-samples``), the negative ELBO (one z per image), and the 5-NN accuracy of test
z_mean fitted on train z_mean, all with ``fashion_vae.evaluation`` as the evaluate
stage computes them.

Configurations are overrides of params.yaml's ``model`` and ``train`` sections (see
``--list``), plus ``plain keras.io``: the keras.io example as the benchmarks package
writes it (benchmarks/plain_vae.py: the seed architecture, Adam's defaults, ``fit`` on
numpy at batch 128) in a child with TensorFlow's default settings. Its weights are then
copied into the project's VAE of the same architecture for scoring (the probabilities
are checked to agree).

It prints a table, writes JSON (default benchmarks/frontier.json) and, with ``--plot``,
draws test iwae_nll against training seconds, one line per configuration. Nothing else
is written. On the full data, 5 configurations x (1 + 3 + 8) minutes is about an hour
of training plus scoring (IWAE with K = 100 on 10,000 test images takes minutes a run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import ROOT  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.report import write_json  # noqa: E402
from benchmarks.runners import RUNTIME_ENV  # noqa: E402

PLAIN = "plain keras.io"
CONFIGS = {
    PLAIN: None,
    "default": {},
    "mixed_bfloat16": {"train": {"precision": "mixed_bfloat16"}},
    "mixture prior": {"model": {"prior": "mixture"}},
    "iwae K=5": {"train": {"objective": "iwae", "iwae_samples": 5}},
}
DEFAULT_BUDGETS = (60.0, 180.0, 480.0)
DEFAULT_OUT = ROOT / "benchmarks" / "frontier.json"
TAG = "FRONTIER-RESULT "
CALIBRATION_STEPS = 30  # steps timed to plan the epochs; the first few (tracing) are left out
KNN_K = 5
EVAL_SEED = 42
EVAL_BATCH = 1000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.frontier", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=list(DEFAULT_BUDGETS),
        help="training budgets in seconds (default 60 180 480)",
    )
    p.add_argument(
        "--configs", nargs="+", metavar="NAME", help="configurations to run (default: all; see --list)"
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='an extra configuration, e.g. \'seed arch={"model": {"conv_filters": [32, 64]}}\'',
    )
    p.add_argument(
        "--data", type=Path, default=ROOT / "data" / "prepared", help="directory of train/val/test.npz"
    )
    p.add_argument("--train-images", type=int, help="first N training images (default: all)")
    p.add_argument("--test-images", type=int, help="first N test images scored (default: all)")
    p.add_argument("--val-images", type=int, default=512, help="validation images per epoch (default 512)")
    p.add_argument(
        "--iwae-samples", type=int, help="K of the scored IWAE bound (default evaluate.iwae_samples)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--plot", type=Path, help="also draw test iwae_nll against training seconds (PNG)")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    p.add_argument("--one", nargs=3, metavar=("NAME", "SPEC", "BUDGET"), help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- child side: one configuration, one budget ------------------------------------------


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
    train_params = {**cfg["train"], **overrides.get("train", {})}
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


def run_plain(budget: float, settings: dict) -> dict:
    """The keras.io example, trained under TensorFlow's defaults until the budget runs out."""
    import keras
    import numpy as np

    from benchmarks.flops import SEED_BATCH, SEED_MODEL
    from benchmarks.plain_vae import build_plain_vae

    # Only numpy and Keras until training is done: nothing of the project's runtime settings.
    with np.load(Path(settings["data"]) / "train.npz", allow_pickle=False) as data:
        x = np.ascontiguousarray(data["x"][: settings.get("train_images") or None])
    seed = settings["seed"]
    keras.utils.set_random_seed(seed)
    plain = build_plain_vae(seed)
    stop = time_budget_callback(budget)
    plain.fit(x, epochs=1_000_000, batch_size=SEED_BATCH, callbacks=[stop], verbose=0)
    epochs_run = stop.steps / -(-len(x) // SEED_BATCH)

    from fashion_vae.model import build_vae  # TensorFlow is loaded: the package's settings change nothing now

    model = build_vae(SEED_MODEL, seed)
    model.encoder.set_weights(plain.encoder.get_weights())
    model.decoder.set_weights(plain.decoder.get_weights())
    z = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    np.testing.assert_allclose(model.decoder(z), plain.decoder(z), rtol=1e-4, atol=1e-6)
    train, _, test = load_splits(settings)
    return {
        "epochs_planned": None,
        "epochs_run": round(epochs_run, 2),
        "calibrated_images_per_second": None,
        "calibrated_overhead_s": None,
        "train_seconds": round(stop.seconds, 2),
        "train_steps": stop.steps,
        "stopped_by_budget": stop.stopped,
        **score(model, train, test, settings["iwae_samples"]),
    }


def run_child(name: str, spec: str, budget: float, settings: dict) -> None:
    overrides = json.loads(spec)
    result = run_plain(budget, settings) if overrides is None else run_project(overrides, budget, settings)
    print(
        TAG + json.dumps({"config": name, "overrides": overrides, "budget_s": budget, **result}), flush=True
    )


# --- parent side: every configuration at every budget, one at a time ---------------------


def child_env(plain: bool) -> dict:
    env = dict(os.environ)
    if plain:  # what a user running the keras.io example would have
        env = {k: v for k, v in env.items() if k not in RUNTIME_ENV}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_one(name: str, overrides, budget: float, settings: dict) -> dict | None:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.frontier",
        "--one",
        name,
        json.dumps(overrides),
        str(budget),
        "--settings",
        json.dumps(settings),
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=child_env(overrides is None), capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith(TAG)]
    if out.returncode != 0 or not lines:
        reason = (out.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"{name} @ {budget:g} s: failed ({reason})", flush=True)
        return None
    return json.loads(lines[-1][len(TAG) :])


def print_table(results: list[dict]) -> None:
    print(
        f"\n{'configuration':18s} {'budget s':>8s} {'train s':>8s} {'epochs':>7s} {'iwae_nll':>9s} "
        f"{'-ELBO':>8s} {'KL':>6s} {'5-NN':>6s}"
    )
    for r in sorted(results, key=lambda r: (r["config"], r["budget_s"])):
        print(
            f"{r['config']:18s} {r['budget_s']:8.0f} {r['train_seconds']:8.1f} {r['epochs_run']:7} "
            f"{r['iwae_nll']:9.2f} {r['neg_elbo']:8.2f} {r['kl']:6.2f} {r[f'knn{KNN_K}']:6.3f}"
        )


def draw(results: list[dict], path: Path) -> None:
    """Test iwae_nll against training seconds, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["config"] for r in results):
        points = sorted((r["train_seconds"], r["iwae_nll"]) for r in results if r["config"] == name)
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xlabel("training seconds (wall clock)")
    ax.set_ylabel("test iwae_nll (nats per image, lower is better)")
    ax.set_title("Quality per training time")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def configurations(args) -> dict:
    configs = dict(CONFIGS)
    for item in args.config:
        name, sep, spec = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: --config {item!r}: expected NAME=JSON")
        try:
            configs[name] = json.loads(spec)
        except json.JSONDecodeError as err:
            raise SystemExit(f"error: --config {name}: not JSON ({err})") from None
        if not isinstance(configs[name], dict) or set(configs[name]) - {"model", "train"}:
            raise SystemExit(
                f"error: --config {name}: expected an object with 'model' and/or 'train' overrides"
            )
    chosen = args.configs or (list(CONFIGS) + [item.partition("=")[0] for item in args.config])
    unknown = [name for name in chosen if name not in configs]
    if unknown:
        raise SystemExit(f"error: unknown configuration {unknown[0]!r}; known: {', '.join(configs)}")
    return {name: configs[name] for name in chosen}


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.one:
        run_child(args.one[0], args.one[1], float(args.one[2]), json.loads(args.settings))
        return None
    configs = configurations(args)
    if args.list:
        for name, spec in configs.items():
            what = "benchmarks/plain_vae.py, TensorFlow defaults" if spec is None else json.dumps(spec)
            print(f"{name:18s} {what}")
        return None
    if any(b <= 0 for b in args.budgets):
        raise SystemExit("error: --budgets must be positive seconds")
    from fashion_vae import params  # in the parent only: the children start fresh

    cfg = params.load(ROOT / "params.yaml")
    settings = {
        "data": str(args.data),
        "train_images": args.train_images,
        "test_images": args.test_images,
        "val_images": args.val_images,
        "iwae_samples": args.iwae_samples or cfg["evaluate"]["iwae_samples"],
        "seed": cfg["train"]["seed"],
    }
    machine = machine_info()
    bf16 = [f for f in machine["simd"] if "bf16" in f]
    print(
        f"machine: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs; "
        f"bf16 instructions: {' '.join(bf16) or 'none (mixed_bfloat16 is probably slower here)'}",
        flush=True,
    )
    started = time.perf_counter()
    results = []
    for budget in sorted(args.budgets):
        for name, overrides in configs.items():
            result = run_one(name, overrides, budget, settings)
            if result is not None:
                results.append(result)
                print(json.dumps(result), flush=True)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine, "bf16_instructions": bf16},
        "settings": {
            **settings,
            "budgets_s": sorted(args.budgets),
            "configs": configs,
            "knn_k": KNN_K,
            "eval_seed": EVAL_SEED,
        },
        "results": results,
        "frontier_seconds": round(time.perf_counter() - started, 1),
    }
    print_table(results)
    write_json(args.out, report)
    print(
        f"\nwrote {args.out}"
        + (f" and {args.plot}" if args.plot else "")
        + f"; the frontier took {report['frontier_seconds']} s"
    )
    if args.plot and results:
        draw(results, args.plot)
    return report


if __name__ == "__main__":
    main()
