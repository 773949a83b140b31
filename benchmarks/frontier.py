"""Test quality against wall-clock training budget, for several configurations (issue 13).

    python -m benchmarks.frontier [--budgets 60 180 480] [--configs NAME ...] [--config NAME=JSON ...]
                                  [--data DIR] [--train-images N] [--test-images N] [--val-images N]
                                  [--iwae-samples K] [--plain-epochs N] [--seeds N] [--out PATH]
                                  [--plot PATH] [--append] [--list]

Every configuration of the project trains once per budget and seed, from scratch, in a fresh
child process, one run at a time: seeds in the outer loop, then budgets, then configurations
(so background load hits all configurations alike). The seeds are train.seed, train.seed + 1,
... (``--seeds N``, default 3): a comparison is only a claim over seeds. A run is planned to fill its budget: a short calibration measures the
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
training seconds its median curve over seeds first reaches the median of the plain
example's final test iwae_nll (linear between its budgets), and how many times sooner that
is than the plain example's median time; and, seed by seed against the plain example's
run with the same seed, the median and range of that ratio.

It prints a table (median and range over seeds), writes JSON (default
benchmarks/frontier.json) after every run and, with ``--plot``, draws test iwae_nll
against training seconds, the median over seeds with its range shaded. Nothing else is
written. ``--append`` adds runs (more seeds, budgets or configurations) to an earlier
report made with the same data and scoring settings and skips the runs it already has, so
a frontier cut off midway resumes where it stopped. On the full data, each seed of 4
configurations x (1 + 3 + 8) minutes, the plain example's 30 epochs, and scoring (IWAE
with K = 100 on 10,000 test images, about a minute a run) takes about 80 minutes.
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
from benchmarks.frontier_report import (  # noqa: E402
    default_config, draw, previous_report, print_speedups, print_table, seed_of, speedups,
)
from benchmarks.frontier_runs import EVAL_SEED, KNN_K, PLAIN, TAG, run_child  # noqa: E402
from benchmarks.machine import machine_info, versions  # noqa: E402
from benchmarks.report import write_json  # noqa: E402
from benchmarks.runners import RUNTIME_ENV  # noqa: E402

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
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="training seeds per configuration and budget: train.seed, train.seed + 1, ... (default 3)",
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


def done_key(result: dict) -> tuple:
    """What identifies a run: the plain example's one run per seed scores every budget."""
    budget = None if result["config"] == PLAIN else result["budget_s"]
    return result["config"], budget, seed_of(result)


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
    if args.seeds < 1:
        raise SystemExit("error: --seeds must be at least 1")
    from fashion_vae import params  # in the parent only: the children start fresh

    cfg = params.load(ROOT / "params.yaml")
    seeds = [cfg["train"]["seed"] + i for i in range(args.seeds)]
    settings = {
        "data": str(args.data),
        "train_images": args.train_images,
        "test_images": args.test_images,
        "val_images": args.val_images,
        "iwae_samples": args.iwae_samples or cfg["evaluate"]["iwae_samples"],
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
    import fashion_vae.quiet_tensorflow  # noqa: F401  (versions() loads TensorFlow: no start-up lines)

    started = time.perf_counter()
    results = list(earlier["results"]) if earlier else []
    # Runs an earlier report already has are not repeated: --append resumes a cut-off frontier.
    done = {done_key(r) for r in results}
    budgets = sorted(args.budgets)
    this_run = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine, "bf16_instructions": bf16},
        "versions": versions(),
        "budgets_s": budgets,
        "seeds": seeds,
        "configs": configs,
    }

    def save() -> dict:
        """The report so far, written after every run: a cut-off frontier keeps what it finished."""
        if earlier:  # the first run's date, machine and settings stand; each addition is listed
            report = {**earlier, "appended": [*earlier.get("appended", []), this_run]}
            report["settings"] = {**earlier["settings"],
                                  "seeds": sorted({*earlier["settings"].get("seeds", []), *seeds})}
        else:
            report = {
                "date": this_run["date"],
                "machine": this_run["machine"],
                "versions": this_run["versions"],
                "settings": {**settings, "budgets_s": budgets, "seeds": seeds, "configs": configs,
                             "knn_k": KNN_K, "eval_seed": EVAL_SEED},
            }
        this_run["frontier_seconds"] = round(time.perf_counter() - started, 1)
        report.update(results=results, reaching_the_plain_example=speedups(results))
        write_json(args.out, report)
        return report

    def record(name: str, overrides, run_budgets: list[float], seed: int) -> None:
        for result in run_one(name, overrides, run_budgets, {**settings, "seed": seed}):
            results.append(result)
            print(json.dumps(result), flush=True)
        save()

    # Seeds outermost, so that each seed's whole frontier is finished (and saved) before the next.
    for seed in seeds:
        if PLAIN in configs and (PLAIN, None, seed) not in done:  # one run, scored at every budget
            record(PLAIN, None, budgets, seed)
        for budget in budgets:
            for name, overrides in configs.items():
                if overrides is not None and (name, budget, seed) not in done:
                    record(name, overrides, [budget], seed)
    report = save()
    print_table(report["results"])
    print_speedups(report["reaching_the_plain_example"])
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
