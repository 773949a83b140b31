"""The CPU build of TensorFlow against the full one: the same model bytes, the same speed?

    python -m benchmarks.tensorflow_builds --other-python /path/to/venv/bin/python [--rounds 2]

``requirements.txt`` pins ``tensorflow-cpu``; the other interpreter is a venv with the same
requirements but ``tensorflow`` (e.g. ``pip install -r requirements.txt`` after swapping
the line). The train stage runs in a throw-away project copy on a real subset with each
interpreter, alternating, and the model's MD5, ``train_images_per_second`` and the lines
each run printed on stderr are compared. Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.machine import machine_info


def tensorflow_distribution(python: str) -> str:
    code = ("import importlib.metadata as m; print(' '.join(sorted(f\"{d.metadata['Name']}=={d.version}\" "
            "for d in m.distributions() if d.metadata['Name'].lower().startswith('tensorflow'))))")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def train_once(python: str, project: Path, env: dict) -> dict:
    result = subprocess.run([python, "-m", "stages.train"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"error: {python} -m stages.train failed ({result.returncode}):\n{result.stderr[-3000:]}")
    details = json.loads((project / "metrics/train_details.json").read_text())
    return {
        "images_per_second": details["train_images_per_second"],
        "model_md5": hashlib.md5((project / "models/vae.keras").read_bytes()).hexdigest(),
        "stderr_lines": [line for line in result.stderr.splitlines() if line.strip()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other-python", required=True, help="python of a venv with `tensorflow` instead")
    parser.add_argument("--rounds", type=int, default=2, help="runs with each build, alternating")
    parser.add_argument("--limit-train", type=int, default=12000, help="prepare.limit_train (real images)")
    args = parser.parse_args()

    from tests.conftest import BIN_DIR, make_project, project_env, run

    env = project_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # as a user's shell runs the stage
    pythons = {tensorflow_distribution(p): p for p in (sys.executable, args.other_python)}
    if len(pythons) < 2:
        raise SystemExit(f"error: --other-python has the same TensorFlow as this one ({', '.join(pythons)})")
    params = {"prepare": {"limit_train": args.limit_train, "limit_test": 1000, "val_size": 1000},
              "train": {"epochs": 4, "warmup_epochs": 0}}
    runs: dict[str, list[dict]] = {name: [] for name in pythons}
    with tempfile.TemporaryDirectory(prefix="bench-tf-builds-") as tmp:
        project = make_project(Path(tmp) / "project", params)
        run([str(BIN_DIR / "dvc"), "repro", "prepare"], project, env=env)
        for _ in range(args.rounds):
            for name, python in pythons.items():
                runs[name].append(train_once(python, project, env))
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "train_images": args.limit_train - 1000,
        "builds": {name: {"median_images_per_second": statistics.median(r["images_per_second"] for r in measured),
                          "runs": measured} for name, measured in runs.items()},
    }
    print(f"{results['date']}  {results['machine']['cpu_model']}; train stage, {results['train_images']} images, "
          f"4 epochs, {args.rounds} alternating runs each")
    print(f"{'build':32} {'images/s (each run)':>28} {'model md5 (each run)':>40}  stderr lines")
    for name, row in results["builds"].items():
        rates = " / ".join(f"{r['images_per_second']:.0f}" for r in row["runs"])
        digests = ", ".join(sorted({r["model_md5"] for r in row["runs"]}))
        print(f"{name:32} {rates:>28} {digests:>40}  {sum(len(r['stderr_lines']) for r in row['runs'])}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
