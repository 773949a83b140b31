"""Test quality against wall-clock training budget, for several configurations (issue 13).

    python -m benchmarks.frontier [--budgets 60 180 480] [--configs NAME ...] [--config NAME=JSON ...]
                                  [--data DIR] [--train-images N] [--test-images N] [--val-images N]
                                  [--iwae-samples K] [--plain-epochs N] [--out PATH] [--plot PATH]
                                  [--append] [--list]

Every configuration of the project trains once per budget, from scratch, in a fresh child
process, one run at a time, budgets in the outer loop (so background load hits all
configurations alike). A run is planned to fill its budget: a short calibration measures the
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
numpy at batch 128) in a child with TensorFlow's default settings. Its weights are
copied into the project's VAE of the same architecture for scoring (the probabilities
are checked to agree). Its learning rate is constant, so a run stopped at a budget is
the start of a longer run: it trains once, for ``--plain-epochs`` (30, as the example
does), and is scored when its training clock passes each budget (the clock stops while
it is scored) and at the end. The report says, for each configuration, after how many
training seconds it first reaches the plain example's final test iwae_nll (linear
between its budgets), and how many times faster that is than the plain example.

It prints a table, writes JSON (default benchmarks/frontier.json) and, with ``--plot``,
draws test iwae_nll against training seconds, one line per configuration. Nothing else
is written. ``--append`` adds runs (more budgets, another configuration) to an earlier
report made with the same data and scoring settings. On the full data, 4 configurations x (1 + 3 + 8) minutes, the plain example's
30 epochs, and scoring (IWAE with K = 100 on 10,000 test images, about a minute a run)
take about 80 minutes.
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
from benchmarks.machine import machine_info, versions  # noqa: E402
from benchmarks.report import write_json  # noqa: E402
from benchmarks.runners import RUNTIME_ENV  # noqa: E402

PLAIN = "plain keras.io"
# Spelled out in full, so that a result means the same whatever params.yaml's defaults are.
CONFIGS = {
    PLAIN: None,
    "normal prior": {"model": {"prior": "normal"}, "train": {"objective": "elbo", "precision": "float32"}},
    "mixture prior": {"model": {"prior": "mixture"}, "train": {"objective": "elbo", "precision": "float32"}},
    "mixture, iwae K=5": {
        "model": {"prior": "mixture"},
        "train": {"objective": "iwae", "iwae_samples": 5, "precision": "float32"},
    },
    "mixture, bfloat16": {
        "model": {"prior": "mixture"},
        "train": {"objective": "elbo", "precision": "mixed_bfloat16"},
    },
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
    p.add_argument(
        "--plain-epochs", type=int, default=30, help="epochs of the plain example's one run (default 30)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--plot", type=Path, help="also draw test iwae_nll against training seconds (PNG)")
    p.add_argument(
        "--append",
        action="store_true",
        help="add these runs to the results already in --out (same data and scoring settings)",
    )
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    p.add_argument("--one", nargs=3, metavar=("NAME", "SPEC", "BUDGETS"), help=argparse.SUPPRESS)
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
            self.results.append({"budget_s": budget, "train_seconds": round(seconds, 2), "train_steps": self.steps,
                                 "stopped_by_budget": budget is not None, **score_now()})
            self.paused += time.perf_counter() - began

    return Checkpoints()


def run_plain(budgets: list[float], settings: dict) -> list[dict]:
    """The keras.io example under TensorFlow's defaults: one run of ``plain_epochs``, scored along the way."""
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
        print(TAG + json.dumps({"config": name, "overrides": overrides, **result}), flush=True)


# --- parent side: every configuration at every budget, one at a time ---------------------


def child_env(plain: bool) -> dict:
    env = dict(os.environ)
    if plain:  # what a user running the keras.io example would have
        env = {k: v for k, v in env.items() if k not in RUNTIME_ENV}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_one(name: str, overrides, budgets: list[float], settings: dict) -> list[dict]:
    """One child process: a project configuration at one budget, or the plain example's whole run."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.frontier",
        "--one",
        name,
        json.dumps(overrides),
        json.dumps(budgets),
        "--settings",
        json.dumps(settings),
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=child_env(overrides is None), capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith(TAG)]
    if out.returncode != 0 or not lines:
        reason = (out.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"{name} @ {', '.join(f'{b:g}' for b in budgets)} s: failed ({reason})", flush=True)
        return []
    return [json.loads(line[len(TAG) :]) for line in lines]


def seconds_to_reach(results: list[dict], config: str, target: float) -> float | None:
    """Training seconds at which ``config`` first reaches test iwae_nll ``target``, linear between points.

    None if it never does; the first point's seconds if it already does there (an upper bound).
    """
    points = sorted((r["train_seconds"], r["iwae_nll"]) for r in results if r["config"] == config)
    previous = None
    for seconds, nll in points:
        if nll <= target:
            if previous is None:
                return seconds
            (s0, n0) = previous
            return s0 + (seconds - s0) * (n0 - target) / (n0 - nll)
        previous = (seconds, nll)
    return None


def speedups(results: list[dict]) -> dict:
    """For each configuration: when it reaches the plain example's final quality, and how much sooner."""
    final = [r for r in results if r["config"] == PLAIN and r["budget_s"] is None]
    if not final:
        return {}
    target, plain_seconds = final[0]["iwae_nll"], final[0]["train_seconds"]
    out = {"plain_final": {"iwae_nll": target, "train_seconds": plain_seconds, "epochs": final[0]["epochs_run"]}}
    for name in dict.fromkeys(r["config"] for r in results if r["config"] != PLAIN):
        reached = seconds_to_reach(results, name, target)
        first = min(r["train_seconds"] for r in results if r["config"] == name)
        out[name] = {
            "seconds": None if reached is None else round(reached, 1),
            "times_faster": None if reached is None else round(plain_seconds / reached, 1),
            "at_first_budget": reached is not None and reached == first,  # so only "at least" that much faster
        }
    return out


def print_table(results: list[dict]) -> None:
    print(
        f"\n{'configuration':18s} {'budget s':>8s} {'train s':>8s} {'epochs':>7s} {'iwae_nll':>9s} "
        f"{'-ELBO':>8s} {'KL':>6s} {'5-NN':>6s}"
    )
    for r in sorted(results, key=lambda r: (r["config"], r["budget_s"] or float("inf"))):
        budget = "end" if r["budget_s"] is None else f"{r['budget_s']:.0f}"
        print(
            f"{r['config']:18s} {budget:>8s} {r['train_seconds']:8.1f} {r['epochs_run']:7} "
            f"{r['iwae_nll']:9.2f} {r['neg_elbo']:8.2f} {r['kl']:6.2f} {r[f'knn{KNN_K}']:6.3f}"
        )


def print_speedups(speed: dict) -> None:
    if not speed:
        return
    plain = speed["plain_final"]
    print(f"\nthe plain example's {plain['epochs']:g}-epoch test iwae_nll {plain['iwae_nll']:.2f}, "
          f"after {plain['train_seconds']:.0f} s of training, is reached by:")
    for name, s in speed.items():
        if name == "plain_final":
            continue
        if s["seconds"] is None:
            print(f"  {name:18s} not within its budgets")
        else:
            bound = "at least " if s["at_first_budget"] else ""
            print(f"  {name:18s} after {s['seconds']:.0f} s: {bound}{s['times_faster']:g}x faster")


def default_config(configs: dict, cfg: dict) -> str | None:
    """The configuration that params.yaml's current values give, if one of them does."""
    for name, spec in configs.items():
        if spec is not None and all(
            cfg[section].get(key) == value for section, values in spec.items() for key, value in values.items()
        ):
            return name
    return None


def figure(results: list[dict], default: str | None = None):
    """Test iwae_nll against training seconds, one line per configuration.

    Left: everything, the plain example included, on a log time axis. Right: the project's
    configurations from one minute on, where their differences (a nat or two) are visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (whole, zoom) = plt.subplots(1, 2, figsize=(12, 4.8))
    names = list(dict.fromkeys(r["config"] for r in results))
    colours = {name: f"C{i}" for i, name in enumerate(names)}
    for name in names:
        points = sorted((r["train_seconds"], r["iwae_nll"]) for r in results if r["config"] == name)
        label = f"{name} (params.yaml)" if name == default else name
        whole.plot(*zip(*points), marker="o", color=colours[name], label=label)
        late = [pt for pt in points if pt[0] >= 50]
        if name != PLAIN and late:
            zoom.plot(*zip(*late), marker="o", color=colours[name], label=label)
    final = [r for r in results if r["config"] == PLAIN and r["budget_s"] is None]
    if final:
        whole.axhline(final[0]["iwae_nll"], color="grey", linestyle=":", linewidth=1)
        whole.annotate(f"plain example after {final[0]['epochs_run']:g} epochs", (0, final[0]["iwae_nll"]),
                       xycoords=("axes fraction", "data"), xytext=(4, 3), textcoords="offset points",
                       fontsize=8, color="grey")
    whole.set_xscale("log")
    whole.set_title("All configurations (log time axis)")
    zoom.set_title("The project's configurations, 1 to 8 minutes")
    for ax in (whole, zoom):
        ax.set_xlabel("training seconds (wall clock)")
        ax.set_ylabel("test iwae_nll (nats per image, lower is better)")
        ax.grid(alpha=0.3)
    whole.legend(fontsize=8)
    zoom.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw(results: list[dict], path: Path, default: str | None = None) -> None:
    import matplotlib.pyplot as plt

    fig = figure(results, default)
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


SCORING_SETTINGS = ("data", "train_images", "test_images", "val_images", "iwae_samples", "seed")


def previous_report(path: Path, settings: dict) -> dict:
    """The report that ``--append`` adds to; its runs must have been scored the same way."""
    try:
        earlier = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"error: {path}: cannot append to it ({err})") from None
    differ = [k for k in SCORING_SETTINGS if earlier.get("settings", {}).get(k) != settings[k]]
    if differ:
        raise SystemExit(
            f"error: {path}: made with other settings ({', '.join(differ)}); append needs the same"
        )
    return earlier


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.one:
        run_child(args.one[0], args.one[1], json.loads(args.one[2]), json.loads(args.settings))
        return None
    configs = configurations(args)
    if args.list:
        for name, spec in configs.items():
            what = "benchmarks/plain_vae.py, TensorFlow defaults" if spec is None else json.dumps(spec)
            print(f"{name:18s} {what}")
        return None
    if any(b <= 0 for b in args.budgets):
        raise SystemExit("error: --budgets must be positive seconds")
    if args.plain_epochs < 1:
        raise SystemExit("error: --plain-epochs must be at least 1")
    from fashion_vae import params  # in the parent only: the children start fresh

    cfg = params.load(ROOT / "params.yaml")
    settings = {
        "data": str(args.data),
        "train_images": args.train_images,
        "test_images": args.test_images,
        "val_images": args.val_images,
        "iwae_samples": args.iwae_samples or cfg["evaluate"]["iwae_samples"],
        "seed": cfg["train"]["seed"],
        "plain_epochs": args.plain_epochs,
    }
    earlier = previous_report(args.out, settings) if args.append else None
    machine = machine_info()
    bf16 = [f for f in machine["simd"] if "bf16" in f]
    print(
        f"machine: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs; "
        f"bf16 instructions: {' '.join(bf16) or 'none (mixed_bfloat16 is probably slower here)'}",
        flush=True,
    )
    started = time.perf_counter()
    results = list(earlier["results"]) if earlier else []
    budgets = sorted(args.budgets)
    if PLAIN in configs:  # one run, scored at every budget
        for result in run_one(PLAIN, None, budgets, settings):
            results.append(result)
            print(json.dumps(result), flush=True)
    for budget in budgets:
        for name, overrides in configs.items():
            if overrides is None:
                continue
            for result in run_one(name, overrides, [budget], settings):
                results.append(result)
                print(json.dumps(result), flush=True)
    import fashion_vae.quiet_tensorflow  # noqa: F401  (versions() loads TensorFlow: no start-up lines)

    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine, "bf16_instructions": bf16},
        "versions": versions(),
        "settings": {
            **settings,
            "budgets_s": sorted(args.budgets),
            "configs": configs,
            "knn_k": KNN_K,
            "eval_seed": EVAL_SEED,
        },
        "results": results,
        "reaching_the_plain_example": speedups(results),
        "frontier_seconds": round(time.perf_counter() - started, 1),
    }
    if earlier:  # the first run's date, machine and settings stand; each addition is listed
        this_run = {key: report[key] for key in ("date", "frontier_seconds")}
        this_run.update(budgets_s=budgets, configs=configs, machine=report["machine"]["cpu_model"])
        report = {
            **earlier,
            "results": results,
            "reaching_the_plain_example": report["reaching_the_plain_example"],
            "appended": [*earlier.get("appended", []), this_run],
        }
    print_table(report["results"])
    print_speedups(report["reaching_the_plain_example"])
    write_json(args.out, report)
    print(
        f"\nwrote {args.out}"
        + (f" and {args.plot}" if args.plot else "")
        + f"; this run took {round(time.perf_counter() - started, 1)} s"
    )
    if args.plot and report["results"]:
        draw(report["results"], args.plot, default_config(report["settings"]["configs"], cfg))
    return report


if __name__ == "__main__":
    main()
