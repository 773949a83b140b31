"""Shared fixtures: real data, and throw-away copies of the project driven by real DVC."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.stage_server import DVC_VAR, HANDOVER, path_with_shim

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent  # the venv running pytest holds dvc too

# A small real subset with tiny epochs, set through params.yaml like any user would.
SMALL_PARAMS = {
    "prepare": {"limit_train": 900, "limit_test": 300, "val_size": 200},
    "train": {"epochs": 2, "batch_size": 64, "warmup_epochs": 0},
    "evaluate": {"iwae_samples": 16},
    "plot": {"manifold_n": 6, "samples_n": 16, "reconstructions_per_class": 1, "dpi": 60},
}


def project_env(handover: bool = True) -> dict[str, str]:
    """The environment of the project's commands: the venv on PATH, fixed git identity, no analytics.

    With ``handover``, stages that these commands start (``dvc repro`` and the like) run in the
    session's stage server (tests/stage_server.py) instead of importing TensorFlow each time;
    tests of the command line itself (start-up noise, runtime options, signals, multi-worker)
    pass ``handover=False``.
    """
    env = dict(os.environ)
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com",
        DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.pop("PYTHONPATH", None)
    env.pop("FASHION_VAE_STAGE_SERVER", None)
    env.pop(DVC_VAR, None)
    if handover:
        env.update(HANDOVER)  # in tests/stage_server.py: pytest may load this file twice, as two modules
        env["PATH"] = path_with_shim(env)  # `dvc` too, wherever it is started from PATH
    return env


def dvc_executable(env: dict[str, str]) -> str:
    """The venv's ``dvc``, or the session's hand-over shim for it where ``env`` names one."""
    return env.get(DVC_VAR) or str(BIN_DIR / "dvc")


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with the project's venv on PATH; output captured as text."""
    env = kwargs.pop("env", None) or project_env()
    if cmd and cmd[0] == str(BIN_DIR / "dvc"):
        cmd = [dvc_executable(env), *cmd[1:]]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(project: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return run([str(BIN_DIR / "dvc"), *args], project, check=check, timeout=timeout)


def start_queue_workers(project: Path, jobs: int, env: dict | None = None) -> None:
    """``dvc queue start -j JOBS`` with its output in a file, not a pipe.

    The workers are forked from it and keep its stdout and stderr open until they exit,
    so reading them through a pipe would wait for the whole queue (and for ever if a
    worker hangs) instead of returning once the workers are started.
    """
    log = project / ".dvc" / "tmp" / "queue-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = env or project_env()
    with open(log, "w") as out:
        result = subprocess.run(
            [dvc_executable(env), "queue", "start", "-j", str(jobs)], cwd=project,
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=120,
        )
    assert result.returncode == 0, log.read_text()


def wait_for_queue(project: Path, timeout: float, env: dict | None = None, jobs: int = 1) -> str:
    """Poll ``dvc queue status`` until nothing is queued or running; the last status.

    Each look starts DVC (about a second of CPU, taken from the experiments it waits for), so
    it looks only when DVC's queue files changed, no worker is alive, or a minute went by.
    A look also pings the workers through celery's file broker, and a worker that reads
    such a message half-written stops ("Unrecoverable error: JSONDecodeError" in its log)
    once its current task ends, leaving the rest queued with no worker: then it starts
    workers again, as a user would with ``dvc queue start`` (the search driver does too).

    On time-out, fails with the status and the workers' own logs, which say where they stuck.
    """
    from fashion_vae.search.experiments import Queue

    queue = Queue(project)  # its `activity`: DVC's queue files, read without starting DVC
    deadline = time.monotonic() + timeout
    seen, looked = None, 0.0
    while True:
        activity = queue.activity()
        now = time.monotonic()
        if activity == seen and activity[-1] > 0 and now - looked < 60 and now < deadline:
            time.sleep(1)  # reading the files is cheap: a finished experiment is seen at once
            continue
        seen, looked = activity, now
        status = run([str(BIN_DIR / "dvc"), "queue", "status"], project, env=env or project_env()).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        if "Running" not in status and activity[-1] == 0:  # no worker process lives (not: none answered)
            start_queue_workers(project, jobs, env=env)
        if time.monotonic() > deadline:
            logs = sorted((project / ".dvc" / "tmp" / "exps" / "celery").glob("**/*.out"))
            tails = "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
                              for p in logs)
            pytest.fail(f"queue did not finish in {timeout:.0f} s:\n{status}\n{tails}")
        time.sleep(1)


def finish_queue(project: Path, jobs: int = 1, timeout: float = 600, env: dict | None = None) -> None:
    """Run the queued experiments to the end with ``jobs`` workers; fail with the logs of any that failed."""
    env = env or project_env()
    start_queue_workers(project, jobs, env=env)
    try:
        status = wait_for_queue(project, timeout, env=env, jobs=jobs)
    finally:
        run([str(BIN_DIR / "dvc"), "queue", "stop", "--kill"], project, check=False, env=env)
    failed = [line.split()[1] for line in status.splitlines() if line.rstrip().endswith("Failed")]
    logs = (run([str(BIN_DIR / "dvc"), "queue", "logs", name], project, check=False, env=env).stdout
            for name in failed)
    assert not failed, "\n".join(logs)


def update_params(project: Path, overrides: dict) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def project_files() -> list[str]:
    """Files of the project as a clone would have them (tracked + new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    return [f for f in listed if f and (REPO_ROOT / f).is_file()]


def make_project(dest: Path, overrides: dict | None = None, commit: bool = True) -> Path:
    """Copy the project into ``dest`` as a fresh git + DVC repository on the small subset."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in project_files():
        if name == "dvc.lock" or name.startswith(("metrics/", "tests/", "benchmarks/", "docs/")):
            continue  # start with no results: the pipeline must make them
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    update_params(dest, overrides if overrides is not None else SMALL_PARAMS)
    template = REPO_ROOT / ".dvc" / "plots" / "offline.html"  # generated at set-up, gitignored
    if template.exists():
        shutil.copy2(template, dest / ".dvc" / "plots" / "offline.html")
    if commit:
        run(["git", "init", "-q", "-b", "main"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "baseline"], dest)
    return dest


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    """Names of the stages a `dvc repro` / `dvc exp run` output says it ran."""
    return [line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage '")]


def built_once(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """``build(path)`` run once per test session, whichever pytest-xdist worker asks first (a file
    lock: the others wait for it); every caller gets the same ``path``, which they must not change."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    path, done = shared / name / "project", shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            if path.parent.exists():  # a build that failed halfway
                shutil.rmtree(path.parent)
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def small_pipeline(tmp_path_factory, worker_id) -> Path:
    """A project copy on the small real subset, after a full `dvc repro`.

    Built once per run (``built_once``). Every test copies it before changing anything.
    """
    def build(project: Path) -> None:
        make_project(project)
        built = dvc(project, "repro")
        (project.parent / "repro.out").write_text(built.stdout)  # what the build printed

    return built_once(tmp_path_factory, worker_id, "small-pipeline", build)


def copy_of(project: Path, dest: Path) -> Path:
    """A copy of a project (DVC's locks and indexes in .dvc/tmp stay behind)."""
    shutil.copytree(project, dest, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else [])
    return dest


# Work units in the order the xdist workers should take them: the longest first, so that no
# worker is left with a long group at the end. The first group builds the shared small pipeline
# while the others start on work that does not need it (multi_worker, the bounds cases); each
# worker holds two units at a time. Measured on the 2-core machine type; the rest in file order.
FIRST = ("test_search_postgres", "test_multi_worker", "test_bounds", "test_search", "test_e2e",
         "test_sweep_across_machines", "test_faults", "test_s3_remote", "test_browser")


@pytest.hookimpl(trylast=True)  # after pytest-xdist has added each item's group to its id
def pytest_collection_modifyitems(session, config, items):
    session.config._vae_runs_stages = any(item.get_closest_marker("e2e") for item in items)
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(FIRST)))  # stable: file order within each
    if getattr(config.option, "loadgroup", False):
        # Tests of a group share module fixtures and state (a study, a server): split over two
        # workers they build them twice and see each other's half. pytest 9.2 broke how
        # pytest-xdist 3.8 tags groups, silently; refuse to run like that.
        ungrouped = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
        if ungrouped:
            raise pytest.UsageError(f"pytest-xdist did not apply xdist_group to {ungrouped[0]} (and "
                                    f"{len(ungrouped) - 1} more): use the pinned pytest (requirements.txt)")


@pytest.fixture(scope="session", autouse=True)
def stage_server(request, tmp_path_factory):
    """Runs ``stages.NAME``'s ``main()`` in children forked from one process that imported them
    (tests/stage_server.py): each run skips TensorFlow's 6 s start-up. Started when the session
    has end-to-end tests; stages that DVC starts hand themselves over to it (``HANDOVER``)."""
    if not getattr(request.config, "_vae_runs_stages", True):
        yield None
        return
    from tests.stage_server import StageServer

    server = StageServer(project_env(handover=False), tmp_path_factory.mktemp("stage-server"))
    HANDOVER.update(server.env({}))
    yield server
    HANDOVER.clear()
    server.close()


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    """A directory holding the four verified official files (data/raw, or fetched)."""
    local = REPO_ROOT / "data" / "raw"
    from fashion_vae import dataset

    if all((local / spec.name).exists() for spec in dataset.RAW_FILES.values()):
        return local
    out = tmp_path_factory.mktemp("raw")
    sources = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["fetch"]["sources"]
    dataset.fetch_all(sources, out, timeout_s=60)
    return out
