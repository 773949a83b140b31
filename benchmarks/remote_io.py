"""How fast a project's pipeline outputs go to an S3 remote and come back: `dvc push` / `dvc pull`.

    python -m benchmarks.remote_io [PROJECT] [--reps 3] [--jobs N] [--out docs/remote-io.json]

PROJECT (default: this repository) is a git + DVC project whose committed ``dvc.lock``
outputs are in its cache (after ``dvc repro``). It is not modified: the pushes run in a
throw-away ``git clone`` that reads PROJECT's cache (``dvc cache dir``), each into a new
prefix of a bucket on moto's S3 server (tests/s3_server.py, 127.0.0.1, free port, signed
requests). Each pull runs ``dvc pull`` in another fresh clone with an empty cache, so it
times download and checkout into the workspace, as a new machine would see it.

Prints one row per push and pull (files, bytes, seconds, MB/s; MB = 10^6 bytes) and writes
the JSON to --out. The server and the client share this machine's CPU and loopback, so
the figures are DVC's and the S3 protocol's own costs, not a network's.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import ROOT
from benchmarks.machine import machine_info
from benchmarks.report import write_json
from tests.s3_server import running_s3_remote

DEFAULT_OUT = ROOT / "docs" / "remote-io.json"  # the committed record
DVC = Path(sys.executable).with_name("dvc")


def sh(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 3600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed in {cwd} ({result.returncode}):\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    sh(cmd, cwd, env)
    return time.perf_counter() - start


def clone(project: Path, dest: Path, env: dict[str, str]) -> Path:
    sh(["git", "clone", "-q", "--no-hardlinks", str(project), str(dest)], dest.parent, env)
    return dest


def point_at(clone_dir: Path, remote_url: str, endpoint: str, env: dict[str, str]) -> None:
    """A `bench` remote in the clone's git-ignored local config, made its default."""
    sh([str(DVC), "remote", "add", "--local", "-d", "-f", "bench", remote_url], clone_dir, env)
    sh([str(DVC), "remote", "modify", "--local", "bench", "endpointurl", endpoint], clone_dir, env)


def row(kind: str, files: int, size: int, seconds: float) -> dict:
    return {"operation": kind, "files": files, "bytes": size, "seconds": round(seconds, 3),
            "mb_per_s": round(size / seconds / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", nargs="?", type=Path, default=ROOT,
                        help="git + DVC project with its outputs in the cache (default: this repository)")
    parser.add_argument("--reps", type=int, default=3, help="pushes and pulls, each to a new prefix / clone")
    parser.add_argument("--jobs", type=int, default=None, help="dvc -j (default: DVC's 4 x CPUs)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    if not (project / "dvc.lock").is_file() or not (project / ".git").exists():
        print(f"error: {project}: not a git + DVC project with a dvc.lock; "
              "run `dvc repro` and commit it first",
              file=sys.stderr)
        return 1
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cache = Path(sh([str(DVC), "cache", "dir"], project, env).stdout.strip())
    if not cache.is_absolute():
        cache = project / cache
    commit = sh(["git", "rev-parse", "--short", "HEAD"], project, env).stdout.strip()
    jobs = ["-j", str(args.jobs)] if args.jobs else []

    load_start = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="remote-io-") as tmp:
        tmp = Path(tmp)
        with running_s3_remote(tmp / "s3") as s3:
            dvc_env = s3.env(env)  # the signing key from the environment, nothing in any config file
            for rep in range(args.reps):
                prefix = f"rep{rep}"
                pusher = clone(project, tmp / f"push{rep}", dvc_env)
                sh([str(DVC), "cache", "dir", "--local", str(cache)], pusher, dvc_env)  # read PROJECT's cache
                point_at(pusher, s3.url(prefix), s3.endpoint, dvc_env)
                push_s = timed([str(DVC), "push", *jobs], pusher, dvc_env)
                stored = s3.objects(prefix + "/")
                files, size = len(stored), sum(stored.values())
                if files == 0:
                    print(f"error: {project}: `dvc push` sent nothing; are the outputs of commit {commit} "
                          "in its cache (`dvc status -c`)?", file=sys.stderr)
                    return 1
                runs.append(row("push", files, size, push_s))

                puller = clone(project, tmp / f"pull{rep}", dvc_env)
                point_at(puller, s3.url(prefix), s3.endpoint, dvc_env)
                pull_s = timed([str(DVC), "pull", *jobs], puller, dvc_env)
                runs.append(row("pull", files, size, pull_s))
                shutil.rmtree(pusher)
                shutil.rmtree(puller)

    summary = {}
    for kind in ("push", "pull"):
        seconds = [r["seconds"] for r in runs if r["operation"] == kind]
        median = statistics.median(seconds)
        summary[kind] = {"median_seconds": round(median, 3), "min_seconds": min(seconds),
                         "max_seconds": max(seconds),
                         "median_mb_per_s": round(runs[0]["bytes"] / median / 1e6, 1)}
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "project": str(project),
        "commit": commit,
        "server": "moto (standalone server, 127.0.0.1), signed requests",
        "jobs": args.jobs or f"DVC default (4 x {os.cpu_count()} CPUs)",
        "machine": machine_info() | {"load_average_at_start": list(load_start),
                                     "load_average_at_end": list(os.getloadavg())},
        "versions": {"python": sys.version.split()[0],
                     "dvc": sh([str(DVC), "--version"], project, env).stdout.strip()},
        "runs": runs,
        "summary": summary,
    }
    write_json(args.out, results)

    m = results["machine"]
    print(f"== DVC S3 remote I/O  {results['date']}  {project} @ {commit}")
    print(f"machine: {m['cpu_model']}, {m['usable_cpus']} CPUs, "
          f"load {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}; "
          f"dvc {results['versions']['dvc']}, jobs {results['jobs']}; server: {results['server']}")
    print(f"{'run':>3s}  {'operation':9s} {'files':>6s} {'bytes':>14s} {'seconds':>8s} {'MB/s':>7s}")
    for i, r in enumerate(runs):
        print(f"{i // 2 + 1:>3d}  {r['operation']:9s} {r['files']:>6d} {r['bytes']:>14,d} "
              f"{r['seconds']:>8.2f} {r['mb_per_s']:>7.1f}")
    for kind, s in summary.items():
        print(f"{kind}: median {s['median_seconds']:.2f} s ({s['min_seconds']:.2f}-{s['max_seconds']:.2f}), "
              f"{s['median_mb_per_s']:.1f} MB/s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
