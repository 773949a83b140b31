"""Run N multi-worker training workers on this machine (127.0.0.1, free ports).

    python -m fashion_vae.cluster --workers 2 -- python -m stages.train
    python -m fashion_vae.cluster --workers 2 --chief-command "dvc repro train" -- python -m stages.train

Each worker gets its own ``TF_CONFIG`` naming every worker's address and its index.
Worker 0, the chief, runs ``--chief-command`` when given (e.g. ``dvc repro train`` or
``dvc exp run`` so that DVC records the run), else the same command as the others.
The chief's output goes to stdout/stderr as it is; the other workers' lines are
prefixed with ``[worker N]``. The exit status is the chief's. Meant for trying
``train.distribute: multi_worker`` out and for tests; across machines, start each
worker yourself (docs/multi-worker.md).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

HOST = "127.0.0.1"
# After the chief exits, the others get this long to finish (they wait for the chief at a
# shutdown barrier, then exit) before they are stopped.
GRACE_S = 15.0


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free on 127.0.0.1 (all held open until all are chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def tf_config(addresses: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def _relay(stream: IO[bytes], prefix: bytes, out: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        out.write(prefix + line)
        out.flush()


def stop(proc: subprocess.Popen, wait_s: float = 5.0) -> int:
    """Ctrl-C, then SIGKILL: TensorFlow handles SIGTERM itself, and a worker waiting
    for the cluster inside TensorFlow only notices signals when it returns."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def run_cluster(command: list[str], workers: int, chief_command: list[str] | None = None,
                grace_s: float = GRACE_S) -> int:
    """Start the workers, wait for the chief, return its exit status."""
    addresses = [f"{HOST}:{port}" for port in free_ports(workers)]
    print(f"cluster: {workers} workers on {', '.join(addresses)}", file=sys.stderr, flush=True)
    processes: list[subprocess.Popen] = []
    relays: list[threading.Thread] = []
    try:
        for index in range(workers):
            env = {**os.environ, "TF_CONFIG": tf_config(addresses, index)}
            argv = chief_command if index == 0 and chief_command else command
            if index == 0:
                processes.append(subprocess.Popen(argv, env=env))
                continue
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            relay = threading.Thread(
                target=_relay, args=(proc.stdout, f"[worker {index}] ".encode(), sys.stderr.buffer), daemon=True
            )
            relay.start()
            processes.append(proc)
            relays.append(relay)
        chief_status = processes[0].wait()
        deadline = time.monotonic() + grace_s
        for index, proc in enumerate(processes[1:], start=1):
            try:
                status = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"cluster: the chief has exited; stopping worker {index}", file=sys.stderr, flush=True)
                status = stop(proc)
            if status != 0:
                print(f"cluster: worker {index} exited with status {status}", file=sys.stderr, flush=True)
        for relay in relays:
            relay.join(timeout=5)
        print(f"cluster: chief (worker 0) exited with status {chief_status}", file=sys.stderr, flush=True)
        return chief_status
    finally:
        for proc in processes:  # Ctrl-C or an error here: leave no worker behind
            if proc.poll() is None:
                stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_vae.cluster",
        description="Run N multi-worker training workers on 127.0.0.1; exit with the chief's status.",
    )
    parser.add_argument("--workers", type=int, required=True, help="number of workers (1 runs a one-worker cluster)")
    parser.add_argument(
        "--chief-command", help='command for worker 0 instead of the stage command, e.g. "dvc repro train"'
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the stage command every other worker runs")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: expected 1 or more")
    if not command:
        parser.error("give the stage command after --, e.g. -- python -m stages.train")
    chief = shlex.split(args.chief_command) if args.chief_command else None
    try:
        return run_cluster(command, args.workers, chief)
    except KeyboardInterrupt:
        print("cluster: interrupted; workers stopped", file=sys.stderr)
        return 130
    except FileNotFoundError as err:
        print(f"error: cannot start {err.filename!r}: not found", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
