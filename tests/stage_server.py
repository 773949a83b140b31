"""Stage runs without TensorFlow's start-up each time: a server that imports the stages once, then forks.

``python -m stages.NAME`` spends about 6 s of CPU importing TensorFlow, Keras and
scikit-learn before the stage does anything, and the suite runs hundreds of stages on tiny
data. The server imports every stage module once (TensorFlow loaded, its runtime not
started: no op has run, so the thread settings are still free) and forks a child per run:
the child takes the run's working directory, environment and standard streams and calls
the stage's ``main()``, exactly what ``python -m stages.NAME`` calls. The parent never runs
TensorFlow, so every child starts from the same clean state.

Runs come two ways:

- from the test process (``StageServer.run``): one JSON request per line on stdin, one JSON
  reply per line on stdout, with the child's output in files, its exit status, time and
  peak memory;
- from ``python -m stages.NAME`` itself, when ``FASHION_VAE_STAGE_SERVER`` names this
  server's socket (fashion_vae/stage_handover.py): the stages that ``dvc repro``, ``dvc exp
  run`` and DVC's queue start. Their standard streams come over the socket; signals they
  get are forwarded; a client that dies takes its child with it.

``dvc`` itself the same way (about 0.7 s of CPU importing DVC, celery and git libraries, of
the 1 to 2 s a command such as ``dvc queue status`` takes; the suite runs hundreds): the
server has imported DVC's command line too, and the session's commands find a ``dvc`` first
on PATH (``DVC_SHIM``, written by ``StageServer``) that hands ``dvc ARGS`` over to it; the
child runs ``dvc.cli.main(ARGS)``, what the installed ``dvc`` script runs. DVC's own
``dvc exp exec-run`` and queue workers, started as ``dvc`` from PATH, come here too.

The command line itself (``python -m stages.NAME`` and ``dvc`` as fresh interpreters,
TensorFlow's quiet import) is run for real by the tests that leave the variables unset
(``project_env(handover=False)``: the noise and runtime tests, the signal tests).
"""
from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STAGES = ("fetch", "prepare", "train", "evaluate", "encode", "plot")
# What DVC's commands import (each about 0.7 s of CPU): the command line, the repository, the
# experiment queue (celery, kombu), git (dulwich, pygit2) and the remotes' file systems.
DVC_MODULES = ("dvc.cli", "dvc.cli.parser", "dvc.repo", "dvc.repo.experiments", "dvc.repo.experiments.queue.celery",
               "dvc.repo.experiments.queue.tasks", "dvc.repo.experiments.executor.local",
               "dvc.repo.experiments.show", "dvc.repo.experiments.run", "dvc.repo.experiments.push",
               "dvc.repo.experiments.pull", "dvc.repo.experiments.apply", "dvc.repo.reproduce", "dvc.repo.status",
               "dvc.repo.push", "dvc.repo.pull", "dvc.repo.fetch", "dvc.repo.checkout", "dvc.repo.plots",
               "dvc.repo.metrics.show", "dvc.repo.metrics.diff", "dvc.repo.params.show", "dvc.repo.params.diff",
               "dvc.data_cloud", "dvc.cachemgr", "dvc.lock", "dvc.stage", "dvc.output", "dvc.dependency",
               "dvc.compare", "dvc.render.match", "dvc_task.app", "dvc_task.proc.manager",
               "kombu.transport.filesystem", "scmrepo.git", "scmrepo.git.backend.dulwich",
               "scmrepo.git.backend.pygit2", "networkx", "dvc_http", "dvc_s3", "s3fs")
DVC_SCRIPT = str(Path(sys.executable).parent / "dvc")  # the installed console script: dvc.cli.main
DVC_VAR = "FASHION_VAE_DVC"  # the shim: fashion_vae/search runs it instead of the dvc beside its Python
# FASHION_VAE_STAGE_SERVER, while the session's server runs (conftest.py's stage_server fixture):
# project_env() adds it to the commands the tests start.
HANDOVER: dict[str, str] = {}
CPU_LOG = os.environ.get("FASHION_VAE_STAGE_CPU_LOG")  # a file: one JSON line of CPU and wall time per run


class DvcCli:
    """``dvc ARGS`` as the installed console script runs it."""

    def __init__(self, args: list[str]):
        self.args = args

    def main(self) -> None:
        import logging

        import dvc.logger
        from dvc.cli import main

        # What `import dvc` does in a fresh interpreter, again on this run's streams: its log
        # handlers, and colorama's wrapper that strips colour codes when they are not a terminal.
        for name in ("dvc", "dvc_objects", "dvc_data"):
            logging.getLogger(name).handlers.clear()
        dvc.logger.setup()
        sys.exit(main(self.args))


def _run_child(module, cwd: str, env: dict, streams: dict[int, int], rlimits: dict, tempdir: str | None,
               argv: list[str] | None = None) -> None:
    """In the forked child: become ``python -m stages.NAME`` (or ``dvc ARGS``) in ``cwd``, then exit
    with its status."""
    code = 1
    try:
        os.setsid()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for fd, source in streams.items():
            os.dup2(source, fd)
        # closefd=False: a library that swaps sys.stdout (DVC's console does) may drop these objects,
        # and collecting one must not close the run's stream under the code still writing to it
        sys.stdin = os.fdopen(0, "r", closefd=False)
        sys.stdout, sys.stderr = (os.fdopen(fd, "w", buffering=1, closefd=False) for fd in (1, 2))
        for kind, value in rlimits.items():
            resource.setrlimit(getattr(resource, kind), (value, value))
        if tempdir:  # the temporary directory Python chose, as if TMPDIR had been it
            import tempfile

            tempfile.tempdir = tempdir
        sys.argv = argv or [module.__file__]
        module.main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001  (what Python itself prints for an uncaught error)
        import traceback

        traceback.print_exc()
    finally:
        try:
            # and the server's own stream objects, which libraries that set up their logging
            # on import still hold: since dup2 above they write to this run's streams as well
            for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                stream.flush()
        finally:
            os._exit(code)


class Server:
    def __init__(self, socket_path: str):
        import stages  # noqa: F401  (sets TensorFlow's CPU options before anything loads it)

        self.modules = {f"stages.{name}": importlib.import_module(f"stages.{name}") for name in STAGES}
        # What the stages import once their cheap checks pass: TensorFlow (quietly, first), Keras and
        # dvclive; then DVC, whose repository code dvclive's Live() loads too (0.4 s of every train).
        for name in ("fashion_vae.training", "fashion_vae.evaluation", "fashion_vae.plotting", "dvclive.keras"):
            importlib.import_module(name)
        for name in DVC_MODULES:
            try:
                importlib.import_module(name)
            except ImportError:  # an optional remote's package: its commands import it themselves
                pass
        self.reply = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # nothing else may write to the reply channel
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(socket_path)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.selector.register(0, selectors.EVENT_READ, "requests")
        self.selector.register(self.listener, selectors.EVENT_READ, "clients")
        self.children: dict[int, dict] = {}
        self.pending = b""

    def fork(self, module: str, cwd: str, env: dict, streams: dict[int, int], rlimits=None, tempdir=None,
             dvc_args: list[str] | None = None) -> int:
        # The server's half a million objects (TensorFlow, Keras, DVC) out of the children's
        # collections: a full one scanned them all (0.4 s) and copied their pages (0.4 s more).
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            self.listener.close()
            for child in self.children.values():
                if child["client"] is not None:
                    child["client"].close()
            if dvc_args is not None:
                _run_child(DvcCli(dvc_args), cwd, env, streams, {}, None, argv=[DVC_SCRIPT, *dvc_args])
            _run_child(self.modules[module], cwd, env, streams, rlimits or {}, tempdir)
        return pid

    def from_test(self, request: dict) -> None:
        """A run the test process asked for: output to files, reply on stdout."""
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        started = time.monotonic()
        pid = self.fork(f"stages.{request['stage']}", request["cwd"], request["env"], {0: devnull, 1: out, 2: err},
                        request.get("rlimits"), request.get("tempdir"))
        for fd in (out, err, devnull):
            os.close(fd)
        self.children[pid] = {"started": started, "deadline": started + request["timeout"], "client": None,
                              "what": f"test stages.{request['stage']}", "cwd": request["cwd"]}

    def from_client(self) -> None:
        """A ``python -m stages.NAME`` handing itself over: its streams came with the request."""
        client, _ = self.listener.accept()
        message, fds, _, _ = socket.recv_fds(client, 1 << 20, 3)
        while not message.endswith(b"\n"):
            message += client.recv(1 << 20)
        request = json.loads(message)
        started = time.monotonic()
        pid = self.fork(request.get("module", "dvc"), request["cwd"], request["env"], dict(zip((0, 1, 2), fds)),
                        dvc_args=request.get("dvc"))
        for fd in fds:
            os.close(fd)
        what = "dvc " + " ".join(request["dvc"][:2]) if request.get("dvc") is not None else request.get("module")
        self.children[pid] = {"started": started, "deadline": None, "client": client, "what": what,
                              "cwd": request["cwd"]}
        self.selector.register(client, selectors.EVENT_READ, pid)

    def from_client_connection(self, client: socket.socket, pid: int) -> None:
        """Signals the client forwards; or its end: it was killed, so its child goes too."""
        data = client.recv(4096)
        if not data:
            self.selector.unregister(client)
            self._kill(pid)
            return
        for line in data.decode().split():
            self._kill(pid, int(line))

    def _kill(self, pid: int, signum: int = signal.SIGKILL) -> None:
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> None:
        now = time.monotonic()
        for pid, child in list(self.children.items()):
            if child["deadline"] is not None and now > child["deadline"]:
                self._kill(pid)
            waited, status, usage = os.wait4(pid, os.WNOHANG)
            if not waited:
                continue
            del self.children[pid]
            if CPU_LOG:  # where the session's CPU goes, run by run (docs/performance.md, "The test suite")
                with open(CPU_LOG, "a") as log:
                    log.write(json.dumps({"what": child["what"], "cwd": child["cwd"], "wall": round(now - child["started"], 2),
                                          "cpu": round(usage.ru_utime + usage.ru_stime, 2)}) + "\n")
            client = child["client"]
            if client is None:
                print(json.dumps({
                    "returncode": os.waitstatus_to_exitcode(status),
                    "timed_out": now > child["deadline"],
                    "seconds": round(now - child["started"], 3),
                    "max_rss_bytes": usage.ru_maxrss * 1024,
                }), file=self.reply, flush=True)
                continue
            try:
                client.sendall(json.dumps({"status": status}).encode() + b"\n")
            except OSError:
                pass  # the client is gone
            if client.fileno() >= 0:
                try:
                    self.selector.unregister(client)
                except (KeyError, ValueError):
                    pass
                client.close()

    def serve(self) -> None:
        print(json.dumps({"ready": True}), file=self.reply, flush=True)
        while True:
            for key, _ in self.selector.select(timeout=0.02):
                if key.data == "requests":
                    chunk = os.read(0, 1 << 20)
                    if not chunk:
                        return
                    self.pending += chunk
                    while b"\n" in self.pending:
                        line, self.pending = self.pending.split(b"\n", 1)
                        self.from_test(json.loads(line))
                elif key.data == "clients":
                    self.from_client()
                else:
                    self.from_client_connection(key.fileobj, key.data)
            self.reap()


# ``dvc`` for the session's commands: handed over to the server while one is named, else the real one.
DVC_SHIM = '''#!{python}
"""dvc, run by the test session's stage server (tests/stage_server.py) when one is named."""
import os
import sys

env = dict(os.environ)
server = env.get("FASHION_VAE_STAGE_SERVER")
if not server:
    os.execv({dvc!r}, [{dvc!r}, *sys.argv[1:]])
sys.path.insert(0, {root!r})
from fashion_vae.stage_handover import hand_over  # noqa: E402

hand_over(server, {{"dvc": sys.argv[1:], "cwd": os.getcwd(), "env": env}})
'''


def path_with_shim(env: dict[str, str]) -> str:
    """``env``'s PATH with the shim's directory first, when ``env`` names one."""
    shim = env.get(DVC_VAR)
    return f"{Path(shim).parent}{os.pathsep}{env.get('PATH', '')}" if shim else env.get("PATH", "")


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
        # A short path: a Unix socket's name is limited to about 100 bytes.
        self.socket_path = f"/tmp/vae-stages-{os.getpid()}-{id(self)}.sock"
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.stage_server", self.socket_path], cwd=root,
            env={**env, "PYTHONPATH": str(root)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(scratch / "server.log", "w"), text=True, bufsize=1,
        )
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"stage server did not start:\n{(scratch / 'server.log').read_text()[-3000:]}")
        self.count = 0
        self.dvc_shim = scratch / "bin" / "dvc"
        self.dvc_shim.parent.mkdir(exist_ok=True)
        self.dvc_shim.write_text(DVC_SHIM.format(python=sys.executable, root=str(root), dvc=DVC_SCRIPT))
        self.dvc_shim.chmod(0o755)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` with this server named: stages that DVC starts hand themselves over to it, and
        ``dvc`` found on PATH (``path_with_shim``) or named by ``DVC_VAR`` too."""
        from fashion_vae.stage_handover import ENV_VAR

        return {**base, ENV_VAR: self.socket_path, DVC_VAR: str(self.dvc_shim)}

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
        Path(self.socket_path).unlink(missing_ok=True)


if __name__ == "__main__":
    Server(sys.argv[1]).serve()
