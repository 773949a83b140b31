"""Search trials' training speed side by side, and the epochs that give each the reference's time (issue 18).

    python -m benchmarks.equal_time TRIAL [TRIAL ...] [--reference 0] [--reference-epochs 40]
                                    [--config search.yaml] [--storage URL] [--train-images N]
                                    [--reps R] [--iwae-images N] [--out PATH]

A study compares its trials at equal epochs; the default in ``params.yaml`` may only change to
what trains within the default's time (``make repro`` within 15 minutes). The speeds in a
study's own records are each experiment's wall clock, moved by whatever else ran beside it.
Here every trial's train step (``params.yaml`` with the trial's values, set up as
``fashion_vae.training.train`` sets it up) runs one epoch of ``--train-images`` images in
turn with the reference's, after a warm-up, ``--reps`` times (benchmarks.interleave): load
on the machine hits all alike, and only the ratios are used. Each trial's **equal-time
epochs** are ``--reference-epochs`` times its speed over the reference's, rounded down. The
evaluate stage's IWAE pass is timed the same way (untrained weights: the cost is the
shapes'), projected to the whole test set.

It prints a table and writes JSON (``--out``, default benchmarks/equal-time.json). Nothing
else is written, and nothing is trained for the record.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
from pathlib import Path

# Before anything imports Keras or TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import ROOT
from benchmarks.report import write_json

DEFAULT_OUT = ROOT / "benchmarks" / "equal-time.json"


def parse_args(argv=None) -> argparse.Namespace:
    from fashion_vae.search.storage import DEFAULT_STORAGE

    p = argparse.ArgumentParser(prog="python -m benchmarks.equal_time", description=__doc__.split("\n\n")[1])
    p.add_argument("numbers", type=int, nargs="+", metavar="TRIAL", help="the study's trials to time")
    p.add_argument("--reference", type=int, default=0, help="the trial whose time is matched (default 0: "
                   "params.yaml's own values)")
    p.add_argument("--reference-epochs", type=int, default=40, help="the reference's epochs (default 40)")
    p.add_argument("--config", type=Path, default=Path("search.yaml"), help="the search space (search.yaml)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--train-images", type=int, default=8192, help="images per timed epoch (default 8192)")
    p.add_argument("--reps", type=int, default=3, help="interleaved timed epochs per trial (default 3)")
    p.add_argument("--iwae-images", type=int, default=64, help="test images for the IWAE pass (default 64)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    return p.parse_args(argv)


def trial_params(space, study, numbers: list[int], raw: dict) -> dict[int, tuple[dict, dict]]:
    """{trial: (validated params.yaml with its values, the values)}; a missing trial is one line."""
    from fashion_vae import params
    from fashion_vae.errors import PipelineError
    from fashion_vae.search.space import with_values

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    out = {}
    for number in numbers:
        if number not in trials or not trials[number].params:
            raise PipelineError(f"trial {number} does not exist in study {space.name!r} (or has no params)")
        values = space.params_of(trials[number].params)
        out[number] = params.validate(with_values(raw, values), f"trial {number}'s params"), values
    return out


def equal_epochs(reference_epochs: int, speed: float, reference_speed: float) -> int:
    """Whole epochs that take no longer than the reference's at these speeds (at least 1)."""
    return max(1, math.floor(reference_epochs * speed / reference_speed + 1e-9))


def main(argv=None) -> dict:
    args = parse_args(argv)
    from benchmarks.eval_throughput import bench_evaluation
    from benchmarks.interleave import EpochFitter, bench_training
    from benchmarks.machine import machine_info, matmul_gflops, versions
    from benchmarks.runners import project_runner
    from fashion_vae import prepared, training
    from fashion_vae.errors import PipelineError
    from fashion_vae.search import space as search_space
    from fashion_vae.search.rerun import raw_params
    from fashion_vae.search.storage import load_study, open_storage

    numbers = [args.reference] + [n for n in dict.fromkeys(args.numbers) if n != args.reference]
    try:
        space = search_space.load(args.config)
        study = load_study(open_storage(args.storage), space.name, args.storage)
        configs = trial_params(space, study, numbers, raw_params())
    except PipelineError as err:
        raise SystemExit(f"error: {err}") from None

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    peak = matmul_gflops(2048, 5)  # before TensorFlow starts its thread pools
    base = configs[args.reference][0]["train"]
    training.configure_runtime(base["seed"], base["threads"])  # determinism on, pinned threads
    import tensorflow as tf

    # Every trial's model traces evaluation's functions anew, as the evaluate stage does once:
    # TensorFlow's "triggered tf.function retracing" warnings say nothing here.
    tf.get_logger().setLevel("ERROR")
    x_train, _ = prepared.load_split("data/prepared/train.npz")
    x_test, _ = prepared.load_split("data/prepared/test.npz")
    x = x_train[:args.train_images]
    runners = [project_runner(f"trial {n}", configs[n][0]["model"], configs[n][0]["train"], x) for n in numbers]
    try:
        timed = bench_training(runners, args.reps, peak)
    finally:
        for r in runners:
            if isinstance(r.epoch, EpochFitter):
                r.epoch.join()

    ref_speed = timed[f"trial {args.reference}"]["images_per_second"]["median"]
    rows = []
    for number, runner in zip(numbers, runners):
        cfg, values = configs[number]
        speed = timed[runner.name]["images_per_second"]
        epochs = equal_epochs(args.reference_epochs, speed["median"], ref_speed)
        evaluation = bench_evaluation(runner.model, x_test, cfg["evaluate"], 200, args.iwae_images, 2)
        rows.append({
            "trial": number,
            "values": values,
            "images_per_second": speed,
            "speed_ratio": speed["median"] / ref_speed,
            "equal_time_epochs": epochs,
            "projected_train_seconds": epochs * len(x_train) / speed["median"],
            "projected_iwae_seconds": evaluation["iwae"]["projected_seconds_full_test_set"],
        })
    result = {
        "date": started, "machine": machine_info(), "versions": versions(),
        "command": "python -m benchmarks.equal_time " + " ".join(str(n) for n in args.numbers),
        "settings": {"reference": args.reference, "reference_epochs": args.reference_epochs,
                     "train_images": len(x), "reps": args.reps, "iwae_images": args.iwae_images,
                     "storage": args.storage, "study": space.name},
        "trials": rows,
    }
    print(f"\n== equal training time  {started}, {result['machine']['cpu_model']}; reference trial "
          f"{args.reference} at {args.reference_epochs} epochs; {args.reps} interleaved epochs of {len(x)} images")
    print(f"{'trial':>5}  {'images/s median [min, max]':>28}  {'ratio':>6}  {'epochs':>6}  {'train s':>8}  "
          f"{'iwae s':>7}")
    for row in rows:
        s = row["images_per_second"]
        print(f"{row['trial']:>5}  {s['median']:>10.0f} [{s['min']:>6.0f}, {s['max']:>6.0f}]"
              f"{'':>6}  {row['speed_ratio']:>6.3f}  {row['equal_time_epochs']:>6}  "
              f"{row['projected_train_seconds']:>8.0f}  {row['projected_iwae_seconds']:>7.0f}")
    print("train s: the epochs on the whole training split at the median speed, without validation; "
          "iwae s: evaluate's IWAE pass on the whole test set")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
