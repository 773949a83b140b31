"""Steady-state images/s of the train stage: one process vs 1 and 2 multi_worker workers.

    python -m benchmarks.multi_worker [--limit-train 12000] [--epochs 4] [--rounds 2] [--out docs/multi-worker.json]

Runs the real stage (``python -m stages.train``; several workers through
``python -m fashion_vae.cluster``) in a throw-away copy of the project on a real
Fashion-MNIST subset, and reads ``train_images_per_second`` from the chief's metrics:
global images per second over the epochs after the first (which includes tracing),
validation excluded. Configurations alternate round by round, so a change in the
machine's load hits them alike. Prints a table and one JSON line; writes the results to
--out (the committed record: docs/multi-worker.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import ROOT
from benchmarks.machine import machine_info

# (label, train.distribute, workers, train.threads per worker)
CONFIGS = [
    ("none, 1 process, 2 threads", "none", 1, 2),
    ("multi_worker, 1 worker, 2 threads", "multi_worker", 1, 2),
    ("multi_worker, 2 workers, 1 thread each", "multi_worker", 2, 1),
    ("multi_worker, 2 workers, 2 threads each", "multi_worker", 2, 2),
]


def run_stage(project: Path, distribute: str, workers: int, threads: int, env: dict) -> dict:
    from tests.conftest import update_params

    update_params(project, {"train": {"distribute": distribute, "threads": threads}})
    python = str(Path(sys.executable))
    stage = [python, "-m", "stages.train"]
    command = stage if distribute == "none" else [python, "-m", "fashion_vae.cluster", "--workers", str(workers), "--", *stage]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = {}
    for name in ("metrics/train.json", "metrics/train_details.json"):
        path = project / name
        if path.exists():
            summary.update(json.loads(path.read_text()))
    return {"images_per_second": summary["train_images_per_second"], "command_seconds": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-train", type=int, default=12000, help="prepare.limit_train (real images)")
    parser.add_argument("--epochs", type=int, default=4, help="train.epochs (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every configuration, alternating")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "multi-worker.json", help="JSON results file")
    args = parser.parse_args()

    from tests.conftest import make_project, project_env, run

    env = project_env()
    params = {
        "prepare": {"limit_train": args.limit_train, "limit_test": 1000, "val_size": 1000},
        "train": {"epochs": args.epochs, "batch_size": 128, "warmup_epochs": 0, "worker_timeout_s": 300},
    }
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-multi-worker-") as tmp:
        project = make_project(Path(tmp) / "project", params)
        run([str(Path(sys.executable).with_name("dvc")), "repro", "prepare"], project, env=env)
        runs: dict[str, list[dict]] = {label: [] for label, *_ in CONFIGS}
        for round_ in range(args.rounds):
            for label, distribute, workers, threads in CONFIGS:
                measured = run_stage(project, distribute, workers, threads, env)
                runs[label].append(measured)
                print(f"round {round_ + 1}: {label}: {measured['images_per_second']:.0f} images/s", file=sys.stderr)
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "load_average_at_end": list(os.getloadavg()),
        "train_images": args.limit_train - 1000,
        "epochs": args.epochs,
        "batch_size": 128,
        "configurations": {
            label: {
                "median_images_per_second": round(statistics.median(r["images_per_second"] for r in measured), 1),
                "runs": measured,
            }
            for label, measured in runs.items()
        },
    }
    reference = results["configurations"][CONFIGS[0][0]]["median_images_per_second"]
    print(f"{results['date']}  {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, "
          f"load average at start {machine['load_average_at_start']}")
    print(f"train stage, {results['train_images']} real training images, batch 128, {args.epochs} epochs "
          f"(first not timed), median of {args.rounds} alternating runs")
    print(f"{'configuration':42} {'images/s':>9} {'vs none':>8}")
    for label, row in results["configurations"].items():
        rate = row["median_images_per_second"]
        print(f"{label:42} {rate:9.0f} {rate / reference:8.2f}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
