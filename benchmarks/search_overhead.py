"""The search driver's own cost per trial, against a plain ``dvc exp run`` of the same params (issue 18).

    python -m benchmarks.search_overhead [--project DIR] [--set KEY=VALUE ...] [--seed N] [--poll S]
                                         [--out PATH]

In a scratch clone of ``--project`` (default: this repository; its DVC cache is shared, so
the clone starts with the prepared data and needs no download), two things run one after
the other with the same params (``params.yaml`` with ``--set`` applied, default
``train.epochs=2``, and ``train.seed=--seed``):

1. **plain**: ``dvc exp run -n bench-plain -S ...`` in the workspace, as a user types it;
2. **search**: ``python -m fashion_vae.search run`` on a one-trial, one-seed study whose
   only trial is ``params.yaml``'s own values with the same ``--set`` fixed: DVC's queue
   runs the experiment, the driver polls, reads the metrics back and tells Optuna.

It prints and writes (JSON, ``--out``) the wall time of each, and the driver's **own** CPU
time: its process and the ``dvc`` commands it waited for (queue status, exp show,
enqueue), measured with ``wait4``. The queue worker that trains is a detached daemon of
DVC's and is not counted. Target (issue 18): the driver's own time under 5 % of a trial's.
A short trial makes the share look larger than in a real study, whose trials are longer.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks import ROOT
from benchmarks.machine import machine_info, versions
from benchmarks.report import write_json

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float, subprocess.CompletedProcess | None]:
    """(wall seconds, CPU seconds of the process and the children it waited for, result)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def typed(text: str):
    return yaml.safe_load(text)


def scratch_clone(project: Path, into: Path, env: dict) -> Path:
    clone = into / "project"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    cache = subprocess.run([str(BIN / "dvc"), "cache", "dir"], cwd=project, env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    subprocess.run([str(BIN / "dvc"), "cache", "dir", "--local", cache], cwd=clone, env=env, check=True)
    subprocess.run([str(BIN / "dvc"), "checkout", "-q"], cwd=clone, env=env, check=False)
    return clone


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=ROOT)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--poll", type=float, default=15.0, help="the driver's poll interval (its default)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "search-overhead.json")
    args = ap.parse_args(argv)
    fixed = {"train.epochs": 2} | {k: typed(v) for k, v in (s.split("=", 1) for s in args.set)}
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    with tempfile.TemporaryDirectory(prefix="search-overhead-") as tmp:
        clone = scratch_clone(args.project.resolve(), Path(tmp), env)
        spec = {"study": {"name": "overhead", "trials": 1, "seeds": [args.seed], "startup_trials": 1,
                          "sampler_seed": 0, "jobs": 1, "fixed": fixed},
                # One dimension, required by the format; trial 0 is params.yaml's own values anyway.
                "space": {"model.beta": {"kind": "float", "low": 0.5, "high": 1.5}}}
        (clone / "search.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        subprocess.run(["git", "add", "search.yaml"], cwd=clone, check=True)
        subprocess.run(["git", "commit", "-qm", "overhead study"], cwd=clone, check=True)

        sets = [f"{k}={v}" for k, v in {**fixed, "train.seed": args.seed}.items()]
        print(f"plain: dvc exp run {' '.join('-S ' + s for s in sets)}", flush=True)
        plain_wall, plain_cpu, _ = run([str(BIN / "dvc"), "exp", "run", "-n", "bench-plain",
                                        *(a for s in sets for a in ("-S", s))], clone, env)
        print(f"plain: {plain_wall:.1f} s", flush=True)
        subprocess.run([str(BIN / "dvc"), "exp", "remove", "bench-plain"], cwd=clone, env=env, check=False,
                       capture_output=True)
        subprocess.run(["git", "checkout", "-q", "--", "."], cwd=clone, check=True)  # exp run left it applied
        subprocess.run([str(BIN / "dvc"), "checkout", "-q"], cwd=clone, env=env, check=False)
        print("search: python -m fashion_vae.search run (one trial, one seed)", flush=True)
        search_wall, driver_cpu, result = run([sys.executable, "-m", "fashion_vae.search", "run", "--poll",
                                               str(args.poll)], clone, env)
        print(f"search: {search_wall:.1f} s, the driver's own CPU {driver_cpu:.1f} s", flush=True)

    from fashion_vae import quiet_tensorflow  # noqa: F401  (versions() imports TensorFlow: as the stages do)

    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "versions": versions(),
        "params": {**fixed, "train.seed": args.seed}, "poll_s": args.poll,
        "plain_exp_run_s": round(plain_wall, 1),
        "search_trial_s": round(search_wall, 1),
        "driver_own_cpu_s": round(driver_cpu, 2),
        "driver_share_of_trial": round(driver_cpu / plain_wall, 4),
        "wall_difference_share": round((search_wall - plain_wall) / plain_wall, 4),
        "driver_output": result.stdout.strip().splitlines()[-3:],
    }
    write_json(args.out, report)
    print(f"driver's own time per trial: {driver_cpu:.1f} s CPU = {100 * driver_cpu / plain_wall:.1f} % of a plain "
          f"`dvc exp run` of the same params ({plain_wall:.0f} s); through the queue the trial took "
          f"{search_wall:.0f} s ({100 * (search_wall - plain_wall) / plain_wall:+.1f} %, DVC's queue included)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
