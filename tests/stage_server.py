"""Stage runs without TensorFlow's start-up each time: a server that imports the stages once, then forks.

``python -m stages.NAME`` spends about 6 s of CPU importing TensorFlow, Keras and
scikit-learn before the stage does anything; a fault case then takes a fraction of a
second. The server imports every stage module once (TensorFlow loaded, its runtime not
started: no op has run, so the thread settings are still free), then for each request
forks a child that changes to the project, takes the request's environment, sends its
stdout and stderr to files and calls the stage's ``main()``, exactly what
``python -m stages.NAME`` calls. The child's exit status, output and peak memory come
back; the parent never runs TensorFlow, so every child starts from the same clean state.

The command line itself (``python -m stages.NAME`` and ``dvc repro``) is run for real by
the end-to-end tests and by tests/test_runtime.py.

Protocol: one JSON request per line on stdin, one JSON reply per line on stdout.
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STAGES = ("fetch", "prepare", "train", "evaluate", "encode", "plot")


def serve() -> None:
    import stages  # noqa: F401  (sets TensorFlow's CPU options before anything loads it)

    modules = {name: importlib.import_module(f"stages.{name}") for name in STAGES}
    reply = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the reply channel
    print(json.dumps({"ready": True}), file=reply, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        out, err = request["stdout"], request["stderr"]
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: becomes `python -m stages.NAME` run in the request's project
            code = 1
            try:
                os.setsid()
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.chdir(request["cwd"])
                devnull = os.open(os.devnull, os.O_RDONLY)  # never the request pipe
                os.dup2(devnull, 0)
                os.close(devnull)
                os.environ.clear()
                os.environ.update(request["env"])
                for fd, path in ((1, out), (2, err)):
                    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(handle, fd)
                    os.close(handle)
                sys.stdout, sys.stderr = os.fdopen(1, "w", buffering=1), os.fdopen(2, "w", buffering=1)
                for kind, value in request.get("rlimits", {}).items():
                    resource.setrlimit(getattr(resource, kind), (value, value))
                if request.get("tempdir"):  # the temporary directory Python chose, as if TMPDIR had been it
                    import tempfile

                    tempfile.tempdir = request["tempdir"]
                modules[request["stage"]].main()
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = started + request["timeout"]
        while True:
            waited, status, usage = os.wait4(pid, os.WNOHANG)
            if waited:
                break
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                waited, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.02)
        print(json.dumps({
            "returncode": os.waitstatus_to_exitcode(status),
            "timed_out": time.monotonic() > deadline,
            "seconds": round(time.monotonic() - started, 3),
            "max_rss_bytes": usage.ru_maxrss * 1024,
        }), file=reply, flush=True)


@dataclass
class StageRun:
    """What a stage run gave: like ``subprocess.CompletedProcess``, plus time and peak memory."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_bytes: int
    timed_out: bool


class StageServer:
    """The client: start the server once (about 6 s), then run stages in forked children."""

    def __init__(self, env: dict[str, str], scratch: Path):
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.stage_server"], cwd=root, env={**env, "PYTHONPATH": str(root)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(scratch / "server.log", "w"), text=True,
            bufsize=1,
        )
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"stage server did not start:\n{(scratch / 'server.log').read_text()[-3000:]}")
        self.count = 0

    def run(self, stage: str, cwd: Path, env: dict[str, str], timeout: float = 300,
            rlimits: dict[str, int] | None = None, tempdir: str | None = None) -> StageRun:
        self.count += 1
        out, err = self.scratch / f"{self.count}.out", self.scratch / f"{self.count}.err"
        request = {"stage": stage, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err),
                   "timeout": timeout, "rlimits": rlimits or {}, "tempdir": tempdir}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired([f"stages.{stage}"], timeout, out.read_text(errors="replace"),
                                            err.read_text(errors="replace"))
        return StageRun([sys.executable, "-m", f"stages.{stage}"], reply["returncode"],
                        out.read_text(errors="replace"), err.read_text(errors="replace"), reply["seconds"],
                        reply["max_rss_bytes"], reply["timed_out"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    serve()
