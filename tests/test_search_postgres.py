"""One study shared by two machines through a real PostgreSQL server (issue 18).

Two clones of one project (a bare git origin, a local DVC remote) run their drivers at
once against the same study on Debian's PostgreSQL 15, started here on 127.0.0.1 with a
scratch data directory: no trial is trained twice, both machines' experiments reach the
origin with ``--push``, and a third clone's ``report`` lists every trial. A wrong password
is one line, and a database that stops mid-study stops the driver with one line, keeps
what finished, and the next run resumes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests import pg_server
from tests.conftest import dvc, project_env, run
from tests.test_search import (
    POLL,
    TINY_SEARCH,
    QueueWatch,
    commit,
    experiment_refs,
    one_error,
    queue_tasks,
    search,
    search_cmd,
    shown_experiments,
    wait_until,
    write_search,
)

# One xdist worker runs the whole module, in order: its tests build on each other's state.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("search_postgres")]

SHARED_SEARCH = {**TINY_SEARCH, "study": {**TINY_SEARCH["study"], "name": "shared", "trials": 2, "seeds": [1],
                                          "startup_trials": 2}}


@pytest.fixture(scope="module")
def postgres():
    missing = pg_server.available()
    if missing:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {missing}")
        pytest.skip(missing)
    server = pg_server.PostgresServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def origin(small_pipeline, tmp_path_factory) -> Path:
    """A bare git origin holding the small pipeline's results and a search.yaml; its data on a local DVC remote."""
    base = tmp_path_factory.mktemp("shared")
    seed = base / "seed"
    shutil.copytree(small_pipeline, seed, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else [])
    write_search(seed, SHARED_SEARCH)
    dvc(seed, "remote", "add", "-d", "storage", str(base / "dvc-remote"))
    commit(seed, "results, a search space and the DVC remote")
    bare = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], base)
    run(["git", "push", "-q", str(bare), "main"], seed)
    dvc(seed, "push")
    return bare


def machine(origin: Path, name: str) -> Path:
    path = origin.parent / name
    run(["git", "clone", "-q", str(origin), str(path)], origin.parent)
    dvc(path, "pull")
    return path


def study_trials(url: str):
    from fashion_vae.search.storage import open_storage, quiet_optuna

    return quiet_optuna().load_study(study_name="shared", storage=open_storage(url)).get_trials()


@pytest.fixture(scope="module")
def shared(postgres, origin) -> dict[str, Path]:
    """Machines A and B run their drivers at the same time on the one study."""
    machines = {name: machine(origin, name) for name in ("machine-a", "machine-b")}
    env = project_env()
    procs = {name: subprocess.Popen(search_cmd("run", "--storage", postgres.url(), "--push", "origin", "--poll", POLL),
                                    cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, path in machines.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{name}:\n{out}\n{err}"
        assert err == "", f"{name} printed on stderr:\n{err}"
    return machines


def test_two_machines_share_one_study_and_no_trial_is_trained_twice(postgres, origin, shared):
    trials = study_trials(postgres.url())
    assert 2 <= len(trials) <= 3 and all(t.state.name == "COMPLETE" for t in trials)  # two drivers may each ask the last
    owners = {t.user_attrs["workspace"].rsplit("/", 1)[-1] for t in trials}
    assert owners == {"machine-a", "machine-b"}, "both machines ran trials"
    wanted = {name for t in trials for name in t.user_attrs["experiments"].values()}
    assert len(wanted) == len(trials)  # one seed each, names unique per trial
    ran = {name: set(shown_experiments(path)) for name, path in shared.items()}
    assert not ran["machine-a"] & ran["machine-b"], "a trial was trained on both machines"
    assert ran["machine-a"] | ran["machine-b"] == wanted
    for name, path in shared.items():  # each machine trained exactly the trials it owns
        mine = {n for t in trials if t.user_attrs["workspace"].endswith(name) for n in t.user_attrs["experiments"].values()}
        assert ran[name] == mine
        assert [task for task, _ in queue_tasks(path)] and len(queue_tasks(path)) == len(mine)
    assert experiment_refs(origin) == wanted, "not every experiment reached the origin"


def test_a_third_clone_reports_every_trial_and_pulls_their_experiments(postgres, origin, shared):
    third = origin.parent / "machine-c"
    run(["git", "clone", "-q", str(origin), str(third)], origin.parent)
    out = third / "report"
    reported = search(third, "report", "--storage", postgres.url(), "--out", str(out), check=True)
    record = json.loads((out / "study.json").read_text())
    trials = study_trials(postgres.url())
    assert [t["number"] for t in record["trials"]] == [t.number for t in trials]
    assert f"{len(trials)} completed" in reported.stdout
    assert "study-secret" not in (out / "study.json").read_text() + reported.stdout
    table = (out / "front.md").read_text()
    for number in record["front"]:
        assert f"`shared-t{number:03d}-s1`" in table
    dvc(third, "exp", "pull", "origin")
    pulled = shown_experiments(third)
    assert set(pulled) == {name for t in trials for name in t.user_attrs["experiments"].values()}
    for t in trials:  # the metrics Optuna holds are those of the experiments the third machine pulled
        (name,) = t.user_attrs["experiments"].values()
        assert t.values == [pulled[name]["metrics"]["iwae_nll"], pulled[name]["metrics"]["knn"]["k5"]]


def test_a_wrong_password_is_one_line_without_the_password(postgres, shared):
    started = time.monotonic()
    line = one_error(search(shared["machine-a"], "run", "--storage", postgres.url(password="not-the-password")))
    assert "password authentication failed" in line and "not-the-password" not in line, line
    assert time.monotonic() - started < 20


def test_the_database_stopping_mid_study_stops_the_driver_with_one_line_and_a_later_run_resumes(postgres, shared,
                                                                                                 tmp_path):
    project = shared["machine-a"]
    before = len(study_trials(postgres.url()))
    log = tmp_path / "driver.log"
    with log.open("w") as handle:
        driver = subprocess.Popen(search_cmd("run", "--storage", postgres.url(), "--poll", POLL, "--trials",
                                             str(before + 1)), cwd=project, env=project_env(), stdout=handle,
                                  stderr=subprocess.STDOUT)
    try:
        tasks = QueueWatch(project)
        wait_until(lambda: any(state == "Running" for _, state in tasks()), "a running experiment", driver, log)
        postgres.stop()
        code = driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
        postgres.start()
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert code == 1 and "Traceback" not in text, text
    assert len(errors) == 1 and errors[0].startswith(
        f"error: lost the study's database {postgres.url().replace('study-secret', '***')} ("), text
    assert errors[0].endswith("every finished trial and experiment is kept, and running this command again "
                              "resumes the study"), text
    (name,) = [n for n, state in queue_tasks(project) if state in ("Running", "Success", "Queued")
               and n not in {e for t in study_trials(postgres.url())[:before] for e in t.user_attrs["experiments"].values()}]
    # The experiment goes on in DVC's queue; the next run adopts its trial and reads it when done.
    resumed = search(project, "run", "--storage", postgres.url(), "--poll", POLL, "--trials", str(before + 1), check=True)
    assert "search: resuming trial" in resumed.stdout, resumed.stdout
    trials = study_trials(postgres.url())
    assert len(trials) == before + 1 and trials[-1].state.name == "COMPLETE"
    assert list(trials[-1].user_attrs["experiments"].values()) == [name]
    assert [task for task, _ in queue_tasks(project)].count(name) == 1, "the experiment was queued again"
