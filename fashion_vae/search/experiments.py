"""DVC's experiment queue, driven through its CLI: queue, start workers, watch, read back, clean up.

Everything goes through the ``dvc`` command a user would type, so a study's trials are
ordinary DVC experiments: ``dvc exp show`` lists them, ``dvc exp apply NAME`` takes one,
``dvc exp push`` shares them. Commands run in their own session, so a Ctrl-C meant for the
search driver does not reach DVC mid-command; the driver cleans up instead.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from fashion_vae import atomic
from fashion_vae.errors import PipelineError

QUEUED, RUNNING, SUCCESS, FAILED = "Queued", "Running", "Success", "Failed"
DONE = (SUCCESS, FAILED)
METRICS_FILE = "metrics/eval.json"
COMMAND_TIMEOUT_S = 600
READ_ATTEMPTS = 3
SHOW_ATTEMPTS, SHOW_RETRY_S = 6, 2.0  # a succeeded experiment not yet in `exp show`: look again
WORKERS_LINE = re.compile(r"Worker status: (\d+) active, (\d+) idle")


class QueueStatus(dict):
    """Name -> state, as ``dvc queue status`` lists them; each name's task id (the start of its
    stash revision), and how many queue workers answered (``None`` when it did not say)."""

    def __init__(self):
        super().__init__()
        self.tasks: dict[str, str] = {}
        self.workers: int | None = None


def dvc_command() -> str:
    """The ``dvc`` beside the running Python (the project's venv), else the one on PATH.

    ``FASHION_VAE_DVC`` names another: the test suite's, which runs DVC's command line in a
    server that imported it once (tests/stage_server.py), as ``FASHION_VAE_STAGE_SERVER`` does
    for the stages."""
    if os.environ.get("FASHION_VAE_DVC"):
        return os.environ["FASHION_VAE_DVC"]
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def override(key: str, value: Any) -> str:
    """One ``-S key=value`` in DVC's (Hydra's) syntax, typed as params.yaml types it."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)  # 0.001, 1e-05, 2.0: all read back as floats
    elif isinstance(value, list):
        text = "[" + ",".join(override("", v).partition("=")[2] for v in value) + "]"
    else:
        text = str(value)
    return f"{key}={text}"


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT while a DVC command changes the queue; a Ctrl-C lands after it, not inside it."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def last_error_line(text: str) -> str:
    """The line that says why a run failed: a stage's ``error:``, else DVC's ``ERROR:``, else the last."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for prefix in ("error: ", "ERROR: "):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1][:400]
    return (lines[-1] if lines else "no output")[:400]


def process_alive(pidfile: Path, command: bytes) -> bool:
    """Whether the process that ``pidfile`` names runs and is still ``command`` (after a restart
    of the machine the same pid may be another program's)."""
    try:
        return pid_runs(int(pidfile.read_text().strip()), command)
    except (OSError, ValueError):
        return False


def pid_runs(pid: int, command: bytes) -> bool:
    try:
        return command in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def parse_status(text: str) -> QueueStatus:
    states = QueueStatus()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[-1] in (QUEUED, RUNNING, SUCCESS, FAILED):
            states[fields[1]] = fields[-1]
            states.tasks[fields[1]] = fields[0]
        elif found := WORKERS_LINE.search(line):
            states.workers = int(found[1]) + int(found[2])
    return states


class Queue:
    """The DVC experiments of one workspace (``root``), through the ``dvc`` CLI."""

    def __init__(self, root: str | Path, env: dict[str, str] | None = None):
        self.root = Path(root)
        self.env = {**(env or os.environ), "DVC_NO_ANALYTICS": "1"}
        self.dvc = dvc_command()

    def run(self, *args: str, check: bool = True, attempts: int = 1) -> subprocess.CompletedProcess:
        """One ``dvc`` command; a read-only one may be tried again (``attempts``): DVC's queue status
        reads files its workers are writing and now and then fails on a half-written one."""
        for attempt in range(attempts):
            if attempt:
                time.sleep(1)
            try:
                with interrupts_deferred():
                    result = subprocess.run(
                        [self.dvc, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                        stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_S, start_new_session=True,
                    )
            except subprocess.TimeoutExpired:  # a hung command (or a machine paused mid-command)
                result = subprocess.CompletedProcess(args, 124, "", f"ERROR: no answer within {COMMAND_TIMEOUT_S} s")
            if result.returncode == 0:
                break
        if check and result.returncode != 0:
            raise PipelineError(f"dvc {' '.join(args[:3])}: {last_error_line(result.stderr + result.stdout)}")
        return result

    # -- queueing and workers ----------------------------------------------------------------

    def enqueue(self, name: str, values: dict[str, Any], targets: tuple[str, ...] = ()) -> None:
        """``dvc exp run --queue -n NAME -S key=value ... [TARGET ...]`` (the caller checks the name is
        new: DVC accepts a name twice while it is only queued, and keeps one of the results)."""
        sets = [arg for key, value in values.items() for arg in ("-S", override(key, value))]
        self.run("exp", "run", "--queue", "-n", name, *sets, *targets)

    def start_workers(self, jobs: int) -> None:
        """``dvc queue start -j JOBS``; its output goes to a file, not a pipe: the forked workers
        keep their stdout open until they exit, so reading a pipe would wait for the whole queue."""
        log = self.root / ".dvc" / "tmp" / "search-queue-start.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with interrupts_deferred(), open(log, "w") as out:
            try:
                code = subprocess.run(
                    [self.dvc, "queue", "start", "-j", str(jobs)], cwd=self.root, env=self.env,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT_S,
                    start_new_session=True,
                ).returncode
            except subprocess.TimeoutExpired:
                out.write(f"ERROR: no answer within {COMMAND_TIMEOUT_S} s\n")
                code = 124
        if code != 0:
            raise PipelineError(f"dvc queue start: {last_error_line(log.read_text(errors='replace'))}")

    def status(self) -> QueueStatus:
        """Name -> Queued / Running / Success / Failed, and the number of live workers, from
        ``dvc queue status``."""
        return parse_status(self.run("queue", "status", attempts=READ_ATTEMPTS).stdout)

    def activity(self) -> tuple:
        """A fingerprint of the queue read from DVC's own files, without starting DVC (a
        ``dvc queue status`` costs about a second of CPU): the task messages queued and taken,
        the results of finished tasks, and each queue worker's process, alive or not.

        A task queued, started or ended, or a worker started or gone, changes it; the driver
        asks DVC itself only then (and now and then regardless). The last field counts the live
        workers. Messages of celery's worker pings (``pidbox``) are left out: every
        ``dvc queue status`` sends some.
        """
        celery = self.root / ".dvc" / "tmp" / "exps" / "celery"
        listed = []
        for folder in ("broker/in", "broker/processed", "result"):
            try:
                names = sorted(n for n in os.listdir(celery / folder) if ".pidbox." not in n)
            except OSError:
                names = []
            if folder == "result":  # written after it is created: an empty one still reads "running"
                names = [(n, file_size(celery / folder / n)) for n in names]
            listed.append(tuple(names))
        workers = tuple(sorted((pidfile.name, process_alive(pidfile, b"queue-worker"))
                               for pidfile in celery.glob("*.pid")))
        return (*listed, workers, sum(alive for _, alive in workers))

    def run_alive(self, task: str) -> bool | None:
        """Whether the ``dvc exp exec-run`` of a task (its id from ``dvc queue status``) still runs;
        ``None`` when it has not started (no record of its process yet)."""
        info = self.run_info(task)
        return None if info is None else pid_runs(info[1].get("pid", -1), b"exec-run")

    def run_info(self, task: str) -> tuple[Path, dict] | None:
        """The record dvc-task keeps of a task's process (``.dvc/tmp/exps/run/REV/REV.json``)."""
        for record in (self.root / ".dvc" / "tmp" / "exps" / "run").glob(f"{task}*/{task}*.json"):
            try:
                return record, json.loads(record.read_text())
            except (OSError, ValueError):
                return None
        return None

    def forget_dead_run(self, task: str) -> None:
        """Record a task's process as ended, as DVC itself does when it finds it gone, so that
        ``dvc queue kill`` marks the task failed instead of signalling whatever now has its pid."""
        info = self.run_info(task)
        if info is not None and info[1].get("returncode") is None:
            atomic.write_json(info[0], {**info[1], "returncode": -1})

    def error(self, name: str) -> str:
        result = self.run("queue", "logs", name, check=False)
        return last_error_line(result.stdout + result.stderr)

    # -- finished experiments ----------------------------------------------------------------

    def experiments(self, expect: Iterable[str] = ()) -> dict[str, dict]:
        """Every experiment that DVC has finished: name -> rev, params, metrics.

        Read with ``dvc exp show --json``, which keeps params' types. Queued, running and
        failed experiments are left out (a failed one shows its baseline's stale metrics).
        Just after a queue worker exits, ``exp show`` can briefly list none of them: names in
        ``expect`` (those the queue says succeeded) are looked for again for a few seconds.
        """
        expect = set(expect)
        found = self._shown()
        for _ in range(SHOW_ATTEMPTS - 1):
            if expect <= set(found):
                break
            time.sleep(SHOW_RETRY_S)
            found = self._shown()
        return found

    def baselines(self) -> list[str]:
        """The commits this workspace's experiments branch from, read from their git refs
        (``refs/exps/AB/CDEF.../NAME``) without starting DVC."""
        try:
            result = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=self.root,
                                    capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise PipelineError(f"{self.root}: git for-each-ref refs/exps gave no answer within 60 s") from None
        if result.returncode != 0:
            raise PipelineError(f"{self.root}: git for-each-ref refs/exps: {last_error_line(result.stderr)}")
        revs = set()
        for ref in result.stdout.split():
            parts = ref.split("/")
            if len(parts) == 5 and len(parts[2]) == 2 and len(parts[3]) == 38:
                revs.add(parts[2] + parts[3])
        return sorted(revs)

    def _shown(self) -> dict[str, dict]:
        # Every baseline's experiments, so a study's trials stay readable after a commit; not
        # `exp show -A`, which reads every commit of the history (13 s of CPU in this repository).
        revs = self.baselines()
        if not revs:
            return {}
        rev_args = [arg for rev in revs for arg in ("--rev", rev)]
        shown = json.loads(self.run("exp", "show", "--json", *rev_args, attempts=READ_ATTEMPTS).stdout or "[]")
        found = {}
        for commit in shown:
            for exp in commit.get("experiments") or []:
                executor = exp.get("executor") or {}
                if executor.get("state") not in (None, "success"):
                    continue
                for rev in exp.get("revs") or []:
                    data = rev.get("data") or {}
                    if rev.get("error") or not rev.get("name"):
                        continue
                    found[rev["name"]] = {
                        "rev": rev.get("rev"),
                        "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {},
                        "metrics": ((data.get("metrics") or {}).get(METRICS_FILE) or {}).get("data") or {},
                    }
        return found

    # -- clean-up and sharing ------------------------------------------------------------------

    def remove(self, names: list[str]) -> str | None:
        """``dvc queue remove NAME...``; DVC's error line if it refused, else None."""
        if names:
            result = self.run("queue", "remove", *names, check=False)
            if result.returncode != 0:
                return last_error_line(result.stderr + result.stdout)
        return None

    def kill(self, names: list[str]) -> None:
        if names:
            self.run("queue", "kill", *names, check=False)

    def wait_until_stopped(self, names: list[str], timeout_s: float = 60) -> None:
        """Wait until none of ``names`` is still running (a killed task takes a moment to end)."""
        deadline = time.monotonic() + timeout_s
        while names and time.monotonic() < deadline:
            states = self.status()
            if not any(states.get(name) == RUNNING for name in names):
                return
            time.sleep(1)

    def stop_workers(self) -> None:
        self.run("queue", "stop", check=False)

    def push(self, remote: str, names: list[str]) -> None:
        """``dvc exp push REMOTE NAME...``: the git refs, and the outputs to the default DVC remote."""
        if names:
            self.run("exp", "push", remote, *names)

    def uncommitted(self) -> list[str]:
        """Tracked files with uncommitted changes (``git status``), which DVC's queue copies into a trial."""
        result = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=self.root, capture_output=True,
            text=True, timeout=60,
        )
        if result.returncode != 0:
            raise PipelineError(f"{self.root}: not a git repository ({last_error_line(result.stderr)})")
        return [line[3:] for line in result.stdout.splitlines() if line.strip()]
