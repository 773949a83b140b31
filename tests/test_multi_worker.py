"""train.distribute: multi_worker end to end: real worker processes on 127.0.0.1 train the
train stage on a small real subset, driven by the real DVC CLI where DVC records the run.

Covers: two local workers through the cluster helper (chief = `dvc repro train`); two
"hosts" (separate directories) where only the chief writes; a bad TF_CONFIG stopping
the stage before training; a worker killed mid-run, the chief killed mid-run and a
worker that never starts, each ending the survivors with one line in bounded time
and leaving the previous outputs as they were.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from fashion_vae import cluster as local_cluster
from tests.conftest import BIN_DIR, SMALL_PARAMS, dvc, make_project, project_env, run, update_params

# One xdist worker runs the whole module, in order: its tests build on each other's state.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("multi_worker")]

# Generous: five agents share this machine's two cores, and a worker must not be declared
# lost while the other is merely slow to start or to trace its first step.
TIMEOUT_S = 20
MULTI_WORKER_PARAMS = copy.deepcopy(SMALL_PARAMS)
MULTI_WORKER_PARAMS["train"].update(distribute="multi_worker", worker_timeout_s=TIMEOUT_S, threads=1)
# An odd number of validation images: the last batch cannot be split evenly over 2 workers (one is left out).
MULTI_WORKER_PARAMS["prepare"]["val_size"] = SMALL_PARAMS["prepare"]["val_size"] + 1
assert MULTI_WORKER_PARAMS["prepare"]["val_size"] % MULTI_WORKER_PARAMS["train"]["batch_size"] % 2 == 1
# Full global batches per epoch (the last, partial one is dropped): each is split over both workers.
GLOBAL_STEPS = ((MULTI_WORKER_PARAMS["prepare"]["limit_train"] - MULTI_WORKER_PARAMS["prepare"]["val_size"])
                // MULTI_WORKER_PARAMS["train"]["batch_size"])
PYTHON = str(BIN_DIR / "python")
STAGE = [PYTHON, "-m", "stages.train"]
ERROR_LINE = re.compile(r"^error: .+$")
# TensorFlow's multi-line C++ error records about the aborted collectives: the one line replaces them.
TF_RECORD = re.compile(r"^[EF]\d{4} |^The tasks have crashed|^/job:worker/")


def tensorflow_records(worker: "Worker") -> list[str]:
    return [line for line in worker.lines if TF_RECORD.match(line)]


def worker_env(tf_config: str | None) -> dict[str, str]:
    env = {**project_env(), "PYTHONUNBUFFERED": "1"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    return env


def snapshot(root: Path, under: tuple[str, ...] = ("",)) -> dict[str, str]:
    """Every file below ``root`` (or below the given subdirectories): path -> sha256.

    Git's own files, Python's bytecode caches and dvclive's scratch directory (which only a
    chief killed with SIGKILL leaves behind, and its next run clears) are left out.
    """
    files = {}
    for sub in under:
        for path in sorted((root / sub).rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and not {".git", "__pycache__", ".training.partial"} & set(relative.parts):
                files[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


OUTPUTS = ("models", "metrics")


class Worker:
    """A worker process whose output lines are collected as they come."""

    def __init__(self, argv: list[str], cwd: Path, tf_config: str | None):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=worker_env(tf_config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, f"exited before {text!r}:\n" + "\n".join(self.lines[-40:])
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n" + "\n".join(self.lines[-40:])
            time.sleep(0.2)

    def wait(self, timeout: float) -> int:
        try:
            status = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(timeout=10)
        return status

    def error_lines(self) -> list[str]:
        return [line for line in self.lines if ERROR_LINE.match(line)]


def addresses(count: int = 2) -> list[str]:
    return [f"127.0.0.1:{port}" for port in local_cluster.free_ports(count)]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("multi_worker") / "project", MULTI_WORKER_PARAMS)
    dvc(project, "repro", "prepare")
    return project


def loss_curve(project: Path, split: str) -> list[float]:
    rows = (project / f"metrics/training/plots/metrics/{split}/loss.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    return [float(row.split("\t")[header.index("loss")]) for row in rows[1:]]


def train_with_the_cluster_helper(project: Path) -> subprocess.CompletedProcess:
    """Two local workers: the chief runs `dvc repro train` (DVC records the run), worker 1 the plain stage."""
    return run(
        [PYTHON, "-m", "fashion_vae.cluster", "--workers", "2", "--chief-command", "dvc repro train", "--", *STAGE],
        project, timeout=900,
    )


def test_two_local_workers_with_the_cluster_helper(project):
    result = train_with_the_cluster_helper(project)
    assert "Running stage 'train'" in result.stdout
    assert "[worker 1] train: worker done, 2 epochs; the chief (worker 0) writes the outputs" in result.stderr
    assert "worker 1 exited with status" not in result.stderr  # reported only when non-zero
    assert result.stderr.strip().splitlines()[-1] == "cluster: chief (worker 0) exited with status 0"
    assert re.search(rf"^{GLOBAL_STEPS}/{GLOBAL_STEPS} ", result.stdout, re.MULTILINE), result.stdout
    train_loss, val_loss = loss_curve(project, "train"), loss_curve(project, "eval")
    assert len(train_loss) == 2 and train_loss[1] < train_loss[0] - 10
    assert len(val_loss) == 2 and val_loss[1] < val_loss[0]
    summary = json.loads((project / "metrics/train.json").read_text())
    assert summary["val"]["loss"] == pytest.approx(val_loss[-1], rel=1e-5)
    from fashion_vae import params, training

    model_params = params.load(project / "params.yaml")["model"]
    model = training.load_model(project / "models/vae.keras", model_params)
    assert model.latent_dim == model_params["latent_dim"]
    assert "Data and pipelines are up to date." in dvc(project, "status", "train").stdout


def test_only_the_chief_writes(project, tmp_path):
    """Two hosts, emulated by two directories: worker 1 runs the plain stage command in its
    own copy and leaves it byte for byte as it was; the chief runs `dvc exp run`."""
    host2 = tmp_path / "host2"
    shutil.copytree(project, host2, symlinks=True)
    update_params(host2, {"train": {"seed": 7}})  # the same params on both hosts
    before = snapshot(host2)
    cluster = addresses()
    chief = Worker([str(BIN_DIR / "dvc"), "exp", "run", "-S", "train.seed=7"], project,
                   local_cluster.tf_config(cluster, 0))
    worker = Worker(STAGE, host2, local_cluster.tf_config(cluster, 1))
    assert worker.wait(timeout=900) == 0, "\n".join(worker.lines[-40:])
    assert chief.wait(timeout=900) == 0, "\n".join(chief.lines[-40:])
    assert any("train: worker done, 2 epochs" in line for line in worker.lines)
    assert snapshot(host2) == before
    experiments = []

    def visit(entry):
        params = ((entry.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data", {})
        experiments.append((entry.get("name"), params.get("train", {}).get("seed")))
        for group in entry.get("experiments") or []:
            for rev in group.get("revs", []):
                visit(rev)

    for entry in json.loads(dvc(project, "exp", "show", "--json").stdout):
        visit(entry)
    assert any(name and seed == 7 for name, seed in experiments), experiments


BAD_TF_CONFIGS = [
    (None, "train.distribute is multi_worker but TF_CONFIG is not set"),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 2}}',
     "TF_CONFIG: task.index 2 is out of range; cluster.worker has 2 workers (0 to 1)"),
    ('{"cluster": {"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG: cluster has a 'ps' job; only 'worker' is supported (worker 0 is the chief)"),
    ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG: no 'cluster'"),
    ("{'cluster': 1}", "TF_CONFIG: not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "chief", "index": 0}}',
     "TF_CONFIG: task.type is 'chief'; expected 'worker'"),
]
# A worker whose params.yaml does not say multi_worker would train alone and write.
INCONSISTENT = ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}',
                "TF_CONFIG is set (worker 1 of 2 (127.0.0.1:2)) but params.yaml has train.distribute = none; "
                "set train.distribute: multi_worker, or unset TF_CONFIG")


@pytest.mark.parametrize("tf_config, message, distribute",
                         [(*case, "multi_worker") for case in BAD_TF_CONFIGS] + [(*INCONSISTENT, "none")])
def test_bad_tf_config_stops_the_stage_before_training(project, tf_config, message, distribute):
    before = snapshot(project, OUTPUTS)
    update_params(project, {"train": {"distribute": distribute}})
    try:
        result = run(STAGE, project, check=False, timeout=300, env=worker_env(tf_config))
    finally:
        update_params(project, {"train": {"distribute": "multi_worker"}})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), result.stderr
    assert "Epoch" not in result.stdout
    assert snapshot(project, OUTPUTS) == before


def test_workers_with_different_params_stop_before_training(project, tmp_path):
    """TensorFlow would average the gradients of two different runs: both workers refuse."""
    host2 = tmp_path / "host2"
    shutil.copytree(project, host2, symlinks=True)
    update_params(host2, {"train": {"learning_rate": 0.001}})
    ours = yaml.safe_load((project / "params.yaml").read_text())["train"]["learning_rate"]
    before = snapshot(project, OUTPUTS)
    cluster = addresses()
    chief = Worker(STAGE, project, local_cluster.tf_config(cluster, 0))
    worker = Worker(STAGE, host2, local_cluster.tf_config(cluster, 1))
    assert chief.wait(timeout=600) == 1 and worker.wait(timeout=600) == 1
    assert chief.error_lines() == [
        f"error: multi-worker training stopped on worker 0 of 2 ({cluster[0]}): train.learning_rate is "
        f"{ours!r} here but 0.001 on worker 1 ({cluster[1]}); every worker needs the same params.yaml and data/prepared"
    ]
    # Worker 1 names the difference too, unless the chief has already gone when it looks.
    assert re.match(
        rf"error: multi-worker training stopped on worker 1 of 2 \({re.escape(cluster[1])}\): (train\.learning_rate is "
        rf"0\.001 here|worker 0 \({re.escape(cluster[0])}\) stopped or stopped responding)", worker.error_lines()[-1]
    ), worker.error_lines()
    assert len(worker.error_lines()) == 1
    assert not any("Epoch" in line for line in chief.lines)
    assert snapshot(project, OUTPUTS) == before


def start_pair(project: Path) -> tuple[Worker, Worker]:
    cluster = addresses()
    return (
        Worker(STAGE, project, local_cluster.tf_config(cluster, 0)),
        Worker(STAGE, project, local_cluster.tf_config(cluster, 1)),
    )


@pytest.fixture
def long_run(project):
    """Enough epochs that a worker can be killed mid-run; the good outputs of the
    first test must survive whatever happens."""
    if not (project / "models/vae.keras").exists():  # this test runs alone
        train_with_the_cluster_helper(project)
    update_params(project, {"train": {"epochs": 40}})
    before = snapshot(project, OUTPUTS)
    assert "models/vae.keras" in before
    yield before
    update_params(project, {"train": {"epochs": 2}})
    assert snapshot(project, OUTPUTS) == before


def bounded(worker: Worker) -> tuple[int, float]:
    """Exit status and seconds taken; the wait is bounded, so the test is too."""
    started = time.monotonic()
    status = worker.wait(timeout=3 * TIMEOUT_S + 60)
    return status, time.monotonic() - started


def test_killed_worker_stops_the_chief_with_one_line(project, long_run):
    chief, worker = start_pair(project)
    try:
        chief.wait_for("Epoch 2/40", timeout=600)
    finally:
        worker.proc.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    status, seconds = bounded(chief)
    assert status == 1, "\n".join(chief.lines[-30:])
    assert seconds < 2 * TIMEOUT_S + 30
    assert re.match(
        r"error: multi-worker training stopped on worker 0 of 2 \(127\.0\.0\.1:\d+\): worker 1 "
        r"\(127\.0\.0\.1:\d+\) stopped or stopped responding \(train\.worker_timeout_s = 20 s\); "
        r"\w+Error; nothing was written, start all workers again$",
        chief.error_lines()[-1],
    ), chief.error_lines()
    assert len(chief.error_lines()) == 1
    assert tensorflow_records(chief) == []
    assert not (project / "metrics/.training.partial").exists()  # the chief cleaned up its scratch


def test_killed_chief_stops_the_other_worker_with_one_line(project, long_run):
    chief, worker = start_pair(project)
    try:
        chief.wait_for("Epoch 2/40", timeout=600)
    finally:
        chief.proc.send_signal(signal.SIGKILL)
    chief.wait(timeout=30)
    status, seconds = bounded(worker)
    assert status == 1, "\n".join(worker.lines[-30:])  # its one line, then exit 1 (not 137, killed)
    assert seconds < 2 * TIMEOUT_S + 30
    assert re.match(r"error: multi-worker training stopped on worker 1 of 2 \(127\.0\.0\.1:\d+\): ",
                    worker.error_lines()[-1]), worker.lines[-30:]
    assert len(worker.error_lines()) == 1
    assert tensorflow_records(worker) == []


def test_worker_that_never_starts_stops_the_chief_in_bounded_time(project, long_run):
    cluster = addresses()
    chief = Worker(STAGE, project, local_cluster.tf_config(cluster, 0))  # worker 1 is never started
    status, seconds = bounded(chief)
    assert status == 1  # the watchdog's line, then exit 1 (not 137, killed)
    assert seconds < TIMEOUT_S + 120  # start-up (loading TensorFlow on a busy machine) + the timeout
    assert chief.error_lines() == [
        f"error: multi-worker training stopped on worker 0 of 2 ({cluster[0]}): not every worker joined "
        f"within train.worker_timeout_s = {TIMEOUT_S} s; nothing was written, start all workers again"
    ]
    assert tensorflow_records(chief) == []
