"""The search (issue 18): search.yaml validation, and a real study whose trials are DVC experiments.

The study runs on the small real subset through DVC's own queue (one worker): its
experiments exist with the params Optuna asked for, Optuna's stored values are the median
of the experiments' metrics, a second run resumes without training anything again (also
after the driver was killed mid-trial), and Ctrl-C keeps what finished. Bad input of every
kind stops with one line.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN_DIR, REPO_ROOT, dvc, project_env, run

# One xdist worker runs the whole module, in order: its tests build on each other's state.
pytestmark = pytest.mark.xdist_group("search")

POLL = "2"  # the driver's poll: reads DVC's queue files; a `dvc queue status` only when they change
SEEDS = [1, 2]
# Tiny trials: one epoch, scored on K = 4, each experiment runs up to evaluate.
TINY_SEARCH = {
    "study": {"name": "tiny", "trials": 1, "seeds": SEEDS, "startup_trials": 1, "sampler_seed": 3, "jobs": 1,
              "fixed": {"train.epochs": 1, "train.warmup_epochs": 0, "evaluate.iwae_samples": 4}, "targets": ["evaluate"]},
    "space": {"model.beta": {"kind": "float", "low": 0.5, "high": 1.5},
              "train.learning_rate": {"kind": "log-float", "low": 0.001, "high": 0.01},
              "model.prior": {"kind": "categorical", "choices": ["normal", "mixture"]}},
}


# -- search.yaml: validated before anything runs ------------------------------------------------------


def params_raw() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def changed(path: str, value) -> dict:
    """TINY_SEARCH with one entry (``a.b.c`` path; None deletes it) changed."""
    spec = json.loads(json.dumps(TINY_SEARCH))
    *parents, last = path.split("/")
    node = spec
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return spec


BAD_SEARCH = [
    ("unknown-section", changed("sampler", {"name": "tpe"}), r"unknown section 'sampler'; allowed sections: study, space$"),
    ("unknown-study-key", changed("study/n_trials", 5), r"study: unknown key 'n_trials'; allowed keys: name, trials"),
    ("missing-study-key", changed("study/seeds", None), r"study\.seeds: missing; expected a non-empty list"),
    ("bad-seeds", changed("study/seeds", [1, 1]), r"study\.seeds: \[1, 1\] is invalid; expected a non-empty list"),
    ("seed-out-of-range", changed("study/seeds", [-1]), r"study\.seeds: \[-1\] is invalid"),
    ("bad-trials", changed("study/trials", 0), r"study\.trials: 0 is invalid; expected an integer in \[1, 10000\]"),
    ("bad-name", changed("study/name", "a b"), r"study\.name: 'a b' is invalid; expected a study name"),
    ("bad-targets", changed("study/targets", ["deploy"]), r"study\.targets: \['deploy'\] is invalid"),
    ("fixed-not-a-param", changed("study/fixed", {"train.epoch": 1}), r"study\.fixed\.train\.epoch: params\.yaml has no key train\.epoch$"),
    ("fixed-rejected", changed("study/fixed", {"train.epochs": 0}),
     r"study\.fixed: these values are outside what params\.yaml accepts \(train\.epochs = 0 is invalid"),
    ("key-not-in-params", changed("space/model.dropout", {"kind": "float", "low": 0, "high": 1}),
     r"space\.model\.dropout: params\.yaml has no key model\.dropout$"),
    ("not-a-key", changed("space/beta", {"kind": "float", "low": 0, "high": 1}),
     r"space\.beta: 'beta' is not a params\.yaml key; expected section\.name$"),
    ("unknown-spec-key", changed("space/model.beta", {"kind": "float", "low": 0.5, "high": 1, "step": 0.1}),
     r"space\.model\.beta: unknown key 'step'"),
    ("unknown-kind", changed("space/model.beta", {"kind": "uniform", "low": 0.5, "high": 1}),
     r"space\.model\.beta\.kind: 'uniform' is invalid; expected one of float, log-float, int, categorical$"),
    ("low-above-high", changed("space/model.beta", {"kind": "float", "low": 2, "high": 1}),
     r"space\.model\.beta: low = 2 is greater than high = 1$"),
    ("log-range-touches-0", changed("space/train.learning_rate", {"kind": "log-float", "low": 0, "high": 0.01}),
     r"space\.train\.learning_rate\.low: 0 is invalid for a log-float range; expected a number > 0$"),
    ("empty-choices", changed("space/model.prior", {"kind": "categorical", "choices": []}),
     r"space\.model\.prior\.choices: \[\] is invalid; expected a non-empty list$"),
    ("choice-params-refuses", changed("space/model.prior", {"kind": "categorical", "choices": ["normal", "flow"]}),
     r"space\.model\.prior\.choices: choice 'flow' is outside what params\.yaml accepts \(model\.prior = 'flow' "
     r"is invalid; expected one of 'normal', 'mixture', 'vamp'\)$"),
    ("range-params-refuses", changed("space/train.learning_rate", {"kind": "log-float", "low": 0.001, "high": 2}),
     r"space\.train\.learning_rate\.high: high = 2\.0 is outside what params\.yaml accepts \(train\.learning_rate = "
     r"2\.0 is invalid; expected a number in \(0, 1\]\)$"),
    ("int-kind-float-bound", changed("space/model.dense_units", {"kind": "int", "low": 8.5, "high": 64}),
     r"space\.model\.dense_units\.low: 8\.5 is invalid; expected an integer$"),
    ("seed-searched", changed("space/train.seed", {"kind": "int", "low": 0, "high": 9}),
     r"space\.train\.seed: the seeds are study\.seeds, not a searched key$"),
    ("searched-and-fixed", changed("space/train.epochs", {"kind": "int", "low": 1, "high": 3}),
     r"space\.train\.epochs: is also in study\.fixed; a key is either searched or fixed$"),
    ("empty-space", changed("space", {}), r"space: missing or empty"),
]


@pytest.mark.parametrize("case", BAD_SEARCH, ids=[c[0] for c in BAD_SEARCH])
def test_bad_search_yaml_is_one_line_naming_the_key(case):
    from fashion_vae.errors import PipelineError
    from fashion_vae.search import space

    _, spec, expect = case
    with pytest.raises(PipelineError) as raised:
        space.validate(spec, params_raw())
    message = str(raised.value)
    assert "\n" not in message and message.startswith("search.yaml: "), message
    assert re.search(expect, message), message


def test_a_good_space_gives_optuna_distributions_and_trial_params():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from fashion_vae.search import space

    spec = changed("space/model.conv_filters", {"kind": "categorical", "choices": [[16, 32], [32, 64]]})
    parsed = space.validate(spec, params_raw())
    dists = parsed.distributions()
    assert dists["train.learning_rate"] == FloatDistribution(0.001, 0.01, log=True)
    assert dists["model.conv_filters"] == CategoricalDistribution(["[16, 32]", "[32, 64]"])
    assert parsed.params_of({"model.conv_filters": "[32, 64]", "model.beta": 0.7}) == {
        "train.epochs": 1, "train.warmup_epochs": 0, "evaluate.iwae_samples": 4, "model.conv_filters": [32, 64], "model.beta": 0.7}
    # params.yaml's own values are inside this space: the study measures them first.
    assert parsed.default_trial(params_module().load(REPO_ROOT / "params.yaml"))["model.conv_filters"] == "[16, 32]"


def params_module():
    from fashion_vae import params

    return params


def test_overrides_are_typed_as_params_yaml_types_them():
    from fashion_vae.search.experiments import override

    assert override("model.beta", 0.5) == "model.beta=0.5"
    assert override("model.beta", 1.0) == "model.beta=1.0"  # stays a float
    assert override("train.learning_rate", 1e-5) == "train.learning_rate=1e-05"
    assert override("model.conv_filters", [16, 32]) == "model.conv_filters=[16,32]"
    assert override("model.prior", "vamp") == "model.prior=vamp"


def test_the_reruns_figure_draws_each_median_and_range_against_the_targets():
    from fashion_vae.search import report

    def spread(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    reruns = [{"trial": 0, "tag": "e40", "set": {"train.epochs": 40}, "experiments": {"42": "a", "43": "b", "44": "c"},
               "iwae_nll": spread([254.5, 253.6, 254.0]), "knn5": spread([0.7045, 0.7035, 0.7045])},
              {"trial": 11, "tag": "e17", "set": {"train.epochs": 17}, "experiments": {"42": "d", "43": "e", "44": "f"},
               "iwae_nll": spread([253.2, 253.5, 253.1]), "knn5": spread([0.7015, 0.6998, 0.7042])}]
    fig = report.reruns_figure(reruns, [0], "t")
    ax = fig.axes[0]
    points = [line for line in ax.lines if line.get_marker() == "o"]
    assert [(float(p.get_xdata()[0]), float(p.get_ydata()[0])) for p in points] == [(0.7045, 254.0), (0.7015, 253.2)]
    labels = ax.get_legend_handles_labels()[1]
    assert labels[-2:] == ["trial 0 (params.yaml), train.epochs=40, 3 seeds", "trial 11, train.epochs=17, 3 seeds"]
    dashed = {(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.lines if line.get_linestyle() == "--"}
    assert ((0, 1), (250.0, 250.0)) in dashed and ((0.72, 0.72), (0, 1)) in dashed  # the targets
    # The error bars span each re-run's range over its seeds.
    from matplotlib.collections import LineCollection

    segments = [seg for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()]
    spans = sorted(tuple(float(v) for v in seg[:, 1]) for seg in segments if seg[0, 0] == seg[1, 0])
    assert spans == [(253.1, 253.5), (253.6, 254.5)]
    import matplotlib.pyplot as plt

    plt.close(fig)


# -- the driver's view of DVC's queue, without DVC ------------------------------------------------------

STATUS_TEXT = """Task     Name          Created  Status
c6b46b0  tiny-t000-s1  12:07 AM Running
92ec198  tiny-t000-s2  12:07 AM Queued
3dfaa62  tiny-t001-s1  Nov 29, 2026  Success

Worker status: 0 active, 1 idle
"""


def test_queue_status_is_parsed_with_its_worker_count():
    from fashion_vae.search.experiments import parse_status

    states = parse_status(STATUS_TEXT)
    assert dict(states) == {"tiny-t000-s1": "Running", "tiny-t000-s2": "Queued", "tiny-t001-s1": "Success"}
    assert states.workers == 1
    assert parse_status("No experiment tasks in the queue.\n").workers is None


def started(cmd: list[str]) -> subprocess.Popen:
    """A process whose command line /proc already shows (just after exec it can read empty)."""
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def test_queue_activity_changes_with_tasks_and_workers_but_not_with_pings(tmp_path):
    from fashion_vae.search.experiments import Queue

    celery = tmp_path / ".dvc" / "tmp" / "exps" / "celery"
    for folder in ("broker/in", "broker/processed", "result"):
        (celery / folder).mkdir(parents=True)
    queue = Queue(tmp_path)
    empty = queue.activity()
    assert empty[-1] == 0
    (celery / "broker/in/1_a.reply.celery.pidbox.msg").write_text("{}")  # a ping's reply
    assert queue.activity() == empty
    (celery / "broker/in/2_b.celery.msg").write_text("{}")  # a task queued
    queued = queue.activity()
    assert queued != empty
    (celery / "broker/in/2_b.celery.msg").rename(celery / "broker/processed/2_b.celery.msg")  # taken
    assert queue.activity() != queued
    (celery / "dvc-exp-worker-1.pid").write_text(str(os.getpid()))  # alive, but not a queue worker
    assert queue.activity()[-1] == 0
    sleeper = started([sys.executable, "-c", "import time; time.sleep(60)", "queue-worker"])
    try:
        (celery / "dvc-exp-worker-1.pid").write_text(str(sleeper.pid))
        assert queue.activity()[-1] == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    assert queue.activity()[-1] == 0
    (celery / "result/celery-task-meta-1").write_text("")  # created, not yet written: DVC reads "running"
    created = queue.activity()
    (celery / "result/celery-task-meta-1").write_text('{"status": "SUCCESS"}')
    assert queue.activity() != created


def test_a_tasks_run_is_alive_only_while_its_exec_run_process_runs(tmp_path):
    from fashion_vae.search.experiments import Queue

    rev = "c6b46b0f70331614cbe1571d5283e9f7b952999a"
    record = tmp_path / ".dvc" / "tmp" / "exps" / "run" / rev / f"{rev}.json"
    queue = Queue(tmp_path)
    assert queue.run_alive("c6b46b0") is None  # not started: no record yet
    record.parent.mkdir(parents=True)
    runner = started([sys.executable, "-c", "import time; time.sleep(60)", "exec-run"])
    try:
        record.write_text(json.dumps({"pid": runner.pid, "returncode": None}))
        assert queue.run_alive("c6b46b0") is True
        record.write_text(json.dumps({"pid": os.getpid(), "returncode": None}))  # a pid reused by another program
        assert queue.run_alive("c6b46b0") is False
    finally:
        runner.kill()
        runner.wait()
    record.write_text(json.dumps({"pid": runner.pid, "returncode": None, "stdout": "x.out"}))
    assert queue.run_alive("c6b46b0") is False
    queue.forget_dead_run("c6b46b0")  # as DVC does for a process it finds gone: `dvc queue kill` signals nothing
    assert json.loads(record.read_text()) == {"pid": runner.pid, "returncode": -1, "stdout": "x.out"}


def test_a_dvc_command_that_never_answers_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    from fashion_vae.errors import PipelineError
    from fashion_vae.search import experiments

    hung = tmp_path / "dvc"
    hung.write_text("#!/bin/sh\nsleep 30\n")
    hung.chmod(0o755)
    monkeypatch.setattr(experiments, "COMMAND_TIMEOUT_S", 0.5)
    queue = experiments.Queue(tmp_path)
    queue.dvc = str(hung)
    started = time.monotonic()
    with pytest.raises(PipelineError, match=r"^dvc queue status: ERROR: no answer within 0\.5 s$"):
        queue.status()  # read-only: tried READ_ATTEMPTS times, then one line
    assert time.monotonic() - started < 10


class RecordingQueue:
    """Stands for DVC's queue: ``status`` answers from a list of texts, ``run_alive`` and
    ``experiments`` as set; records what the driver asks DVC to change."""

    def __init__(self, texts, run_alive=None, done=None):
        from fashion_vae.search.experiments import parse_status

        self.texts, self.calls, self.parse = list(texts), [], parse_status
        self.alive, self.done = run_alive, done or {}

    def status(self):
        return self.parse(self.texts.pop(0) if len(self.texts) > 1 else self.texts[0])

    def run_alive(self, task):
        return self.alive

    def experiments(self, expect=()):
        return self.done

    def __getattr__(self, name):  # kill, remove, enqueue, forget_dead_run
        return lambda *args: self.calls.append((name, *args))


def test_the_driver_asks_dvc_only_when_the_queue_files_change_or_no_worker_lives(monkeypatch):
    from fashion_vae.search import driver as driver_module

    class CountingQueue(RecordingQueue):
        activity_now = ((), (), (), (("dvc-exp-worker-1.pid", True),), 1)
        looks = 0

        def activity(self):
            return self.activity_now

        def status(self):
            self.looks += 1
            return super().status()

    queue = CountingQueue([STATUS_TEXT], run_alive=True)
    driver = orphan_driver(queue, [])
    for _ in range(4):
        driver.step(study=None)
    assert queue.looks == 1, "nothing changed: one look"
    queue.activity_now = ((), ("2_b.celery.msg",), (), queue.activity_now[3], 1)  # a task was taken
    driver.step(study=None)
    driver.step(study=None)
    assert queue.looks == 2
    monkeypatch.setattr(driver_module, "RECHECK_S", 0)  # now and then regardless
    driver.step(study=None)
    assert queue.looks == 3
    monkeypatch.setattr(driver_module, "RECHECK_S", 300)
    queue.activity_now = ((), ("2_b.celery.msg",), (), (("dvc-exp-worker-1.pid", False),), 0)
    driver.step(study=None)
    driver.step(study=None)
    assert queue.looks == 5, "no worker lives: a look every poll"
    assert ("start_workers", driver.jobs) in queue.calls  # tiny-t000-s2 is queued and nobody would run it


def orphan_driver(queue, logged):
    from fashion_vae.search.driver import Driver, InFlight
    from fashion_vae.search.space import validate

    driver = Driver(validate(TINY_SEARCH, params_raw()), "sqlite:///x.db", Path("."), queue, log=logged.append)
    trial = type("Trial", (), {"params": {"model.beta": 0.7, "train.learning_rate": 0.002, "model.prior": "mixture"}})()
    driver.in_flight = [InFlight(trial, {1: "tiny-t000-s1", 2: "tiny-t000-s2"}, driver.space.params_of(trial.params))]
    return driver


STALE = STATUS_TEXT.replace("0 active, 1 idle", "0 active, 0 idle")
WAITING = ["tiny-t000-s1", "tiny-t000-s2"]
AFTER_REMOVAL = "\n".join(line for line in STALE.splitlines() if "tiny-t000-s1" not in line)


def test_a_running_experiment_whose_run_has_stopped_is_queued_again_after_three_looks(monkeypatch):
    from fashion_vae.errors import PipelineError
    from fashion_vae.search import driver as driver_module
    from fashion_vae.search.driver import ORPHAN_POLLS, ORPHAN_S

    monkeypatch.setattr(driver_module, "REMOVE_WAIT_S", 0)
    from fashion_vae.search.experiments import parse_status

    stale, live = parse_status(STALE), parse_status(STATUS_TEXT)
    # Not started yet while a worker lives (its process, or its answer to DVC's ping); or running.
    for queue, states, alive in [(RecordingQueue([AFTER_REMOVAL]), stale, 1),
                                 (RecordingQueue([AFTER_REMOVAL]), live, 0),
                                 (RecordingQueue([AFTER_REMOVAL], run_alive=True), stale, 0)]:
        driver = orphan_driver(queue, [])
        assert not any(driver.orphaned(states, WAITING, alive) for _ in range(5))
        assert queue.calls == []

    # No worker and no run: dead at the third look in a row; killed, removed, queued again.
    logged = []
    queue = RecordingQueue([AFTER_REMOVAL])
    driver = orphan_driver(queue, logged)
    looks = [driver.orphaned(stale, WAITING, alive=0) for _ in range(ORPHAN_POLLS)]
    assert looks == [False] * (ORPHAN_POLLS - 1) + [True]
    assert [call[:2] for call in queue.calls] == [
        ("forget_dead_run", "c6b46b0"), ("kill", ["tiny-t000-s1"]), ("remove", ["tiny-t000-s1"]),
        ("enqueue", "tiny-t000-s1")]
    values = queue.calls[-1][2]
    assert values["train.seed"] == 1 and values["model.beta"] == 0.7 and values["train.epochs"] == 1
    assert logged == ["search: tiny-t000-s1: DVC lists it as running but its run has stopped (with its "
                      "machine?); queued again"]

    # Its run gone while a worker lives (which may still be collecting it): only after ORPHAN_S seconds.
    queue = RecordingQueue([AFTER_REMOVAL], run_alive=False, done={"tiny-t000-s1": {"rev": "abc", "metrics": {}}})
    driver = orphan_driver(queue, [])
    assert not any(driver.orphaned(stale, WAITING, alive=1) for _ in range(ORPHAN_POLLS + 2))
    since, looks = driver.suspects["tiny-t000-s1"]
    driver.suspects["tiny-t000-s1"] = (since - ORPHAN_S, looks)
    assert driver.orphaned(stale, WAITING, alive=1)
    # It had finished just as its machine stopped: its result is taken, nothing is trained again.
    assert [c[0] for c in queue.calls] == ["forget_dead_run", "kill", "remove"]
    assert driver.in_flight[0].results == {1: {"rev": "abc", "metrics": {}}}

    # DVC still lists it after the first removal (seen when a worker shut down holding the task):
    # removed again, then queued anew.
    queue = RecordingQueue([STALE, AFTER_REMOVAL])
    driver = orphan_driver(queue, [])
    assert [driver.orphaned(stale, WAITING, alive=0) for _ in range(ORPHAN_POLLS)][-1]
    assert [c[0] for c in queue.calls] == ["forget_dead_run", "kill", "remove", "remove", "enqueue"]

    # A task DVC will not let go of stops the driver with one line that says what to do, and
    # what DVC answered.
    class Refusing(RecordingQueue):
        def remove(self, names):
            self.calls.append(("remove", names))
            return "ERROR: Invalid experiment 'c6b46b0'."

    stuck_queue = Refusing([STALE])
    stuck = orphan_driver(stuck_queue, [])
    with pytest.raises(PipelineError, match=r"^tiny-t000-s1: DVC lists it as running .*would not remove it \(DVC: "
                                            r"ERROR: Invalid experiment 'c6b46b0'.\); run `dvc queue kill "
                                            r"tiny-t000-s1` and `dvc queue remove tiny-t000-s1`, then"):
        for _ in range(ORPHAN_POLLS):
            stuck.orphaned(stale, WAITING, alive=0)
    assert [c[0] for c in stuck_queue.calls].count("remove") == driver_module.REMOVE_TRIES


def test_ctrl_c_stops_an_experiment_that_started_while_the_one_before_it_was_stopped():
    """The queued experiment was taken by the worker (the running one had just ended) between DVC's
    answer and the removal: the next look finds it running and stops it too."""
    s1_done_s2_started = STATUS_TEXT.replace("tiny-t000-s1  12:07 AM Running", "tiny-t000-s1  12:07 AM Success") \
        .replace("tiny-t000-s2  12:07 AM Queued", "tiny-t000-s2  12:07 AM Running")
    nothing_left = "\n".join(line for line in STATUS_TEXT.splitlines() if "tiny-t000" not in line)
    queue = RecordingQueue([STATUS_TEXT, s1_done_s2_started, nothing_left], done={"tiny-t000-s1": {"rev": "abc"}})
    driver = orphan_driver(queue, [])
    assert driver.stop_unfinished() == 1  # s2; s1 had finished
    assert [c for c in queue.calls if c[0] in ("remove", "kill")] == [
        ("remove", ["tiny-t000-s2"]), ("kill", ["tiny-t000-s1"]), ("remove", []),
        ("remove", []), ("kill", ["tiny-t000-s2"]), ("remove", ["tiny-t000-s2"])]


# -- the CLI and a real study ---------------------------------------------------------------------------


def search_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fashion_vae.search", *args]


def search(project: Path, *args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    return run(search_cmd(*args), project, check=check, timeout=timeout)


def one_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout
    return lines[0]


def write_search(project: Path, spec: dict) -> None:
    (project / "search.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", message], project)


@pytest.fixture(scope="module")
def project(small_pipeline, tmp_path_factory) -> Path:
    """The small pipeline's committed results and the tiny search.yaml: a workspace a study can start in."""
    root = tmp_path_factory.mktemp("search") / "project"
    shutil.copytree(small_pipeline, root, symlinks=True,
                    ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else [])
    write_search(root, TINY_SEARCH)
    commit(root, "results and a tiny search space")
    return root


def study(project: Path, storage: str | None = None):
    from fashion_vae.search.storage import open_storage, quiet_optuna

    url = storage or f"sqlite:///{project}/search/study.db"
    return quiet_optuna().load_study(study_name="tiny", storage=open_storage(url))


def shown_experiments(project: Path, expect: set[str] = frozenset()) -> dict[str, dict]:
    """name -> (params, metrics, rev) as `dvc exp show --json` gives them.

    Just after a queue worker exits, `exp show` can briefly list no experiments: with ``expect``
    (names known to exist), it looks again for a few seconds before answering what it sees."""
    for _ in range(10):
        found = _shown_once(project)
        if expect <= set(found):
            break
        time.sleep(1)
    return found


def _shown_once(project: Path) -> dict[str, dict]:
    found = {}
    for commit_entry in json.loads(dvc(project, "exp", "show", "--json", "-A").stdout):
        for exp in commit_entry.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                found[rev["name"]] = {
                    "rev": rev["rev"], "params": (data.get("params") or {}).get("params.yaml", {}).get("data"),
                    "metrics": (data.get("metrics") or {}).get("metrics/eval.json", {}).get("data"),
                    "state": (exp.get("executor") or {}).get("state")}
    return found


def completed_experiments(project: Path) -> set[str]:
    """The experiment names of the study's completed trials, as the study database records them."""
    try:
        trials = study(project).get_trials()
    except Exception:  # no study yet
        return set()
    return {name for t in trials if t.state.name == "COMPLETE" for name in t.user_attrs["experiments"].values()}


def queue_tasks(project: Path) -> list[tuple[str, str]]:
    """(name, state) of every task `dvc queue status` lists."""
    lines = dvc(project, "queue", "status").stdout.splitlines()
    return [(f[1], f[-1]) for f in (line.split() for line in lines)
            if len(f) >= 4 and f[-1] in ("Queued", "Running", "Success", "Failed")]


class QueueWatch:
    """``queue_tasks`` for a poll every second: DVC is asked only when its queue files changed
    (``Queue.activity``, read without starting DVC) or the last answer is 8 s old."""

    def __init__(self, project: Path):
        from fashion_vae.search.experiments import Queue

        self.project, self.queue = project, Queue(project)
        self.seen, self.asked, self.tasks = None, 0.0, []

    def __call__(self) -> list[tuple[str, str]]:
        activity, now = self.queue.activity(), time.monotonic()
        if activity != self.seen or now - self.asked >= 8:
            self.seen, self.asked, self.tasks = activity, now, queue_tasks(self.project)
        return self.tasks


def start_driver(project: Path, log: Path, *args: str) -> subprocess.Popen:
    env = {**project_env(), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen(search_cmd("run", "--poll", POLL, *args), cwd=project, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_until(condition, what: str, proc: subprocess.Popen, log: Path, timeout: float = 300,
               every: float = 1) -> None:
    """Poll ``condition`` every ``every`` seconds. A ``dvc`` command costs a second of CPU, taken from
    the trial it waits for: conditions on the queue ask through a ``QueueWatch``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the driver exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(every)


def experiment_refs(project: Path) -> set[str]:
    """Names of the experiments DVC has committed or received (refs/exps of a workspace or a bare
    origin), read with git alone: no DVC start-up."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], project).stdout.split()
    return {ref.rsplit("/", 1)[-1] for ref in refs}


def assert_trial_matches_its_experiments(trial, shown: dict, spec: dict) -> None:
    """The experiments exist with the asked params, and Optuna holds the medians of their metrics."""
    from fashion_vae.search.space import decode_choice

    names = trial.user_attrs["experiments"]
    assert sorted(map(int, names)) == SEEDS
    for seed, name in names.items():
        params = shown[name]["params"]
        for key, value in {**trial.params, **spec["study"]["fixed"], "train.seed": int(seed)}.items():
            section, field = key.split(".")
            assert params[section][field] == decode_choice(value), (name, key)
    medians = [statistics.median(shown[n]["metrics"]["iwae_nll"] for n in names.values()),
               statistics.median(shown[n]["metrics"]["knn"]["k5"] for n in names.values())]
    assert trial.values == medians


@pytest.mark.e2e
def test_study_runs_through_dvcs_queue_and_stores_the_medians_of_the_experiments(project):
    result = search(project, "run", "--poll", POLL, check=True)
    assert "search: trial 0:" in result.stdout and "search: trial 0 done:" in result.stdout, result.stdout
    trials = study(project).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"]
    (trial,) = trials
    assert trial.user_attrs["default"], "the first trial is params.yaml's own values"
    shown = shown_experiments(project, expect={"tiny-t000-s1", "tiny-t000-s2"})
    assert set(shown) == {"tiny-t000-s1", "tiny-t000-s2"}
    assert_trial_matches_its_experiments(trial, shown, TINY_SEARCH)
    assert all(state == "Success" for _, state in queue_tasks(project))

    # The same command again: the study is complete, nothing is queued or trained.
    again = search(project, "run", "--poll", POLL, check=True)
    assert "trial" not in again.stdout.split("search: study")[0], again.stdout
    assert len(queue_tasks(project)) == 2 and set(shown_experiments(project, expect=set(shown))) == set(shown)


@pytest.mark.e2e
def test_refusals_before_anything_is_queued(project, tmp_path):
    # A missing or bad search.yaml, a bad --storage, a workspace with uncommitted changes.
    assert re.fullmatch(r"error: missing\.yaml: missing; write one \(see README, Search\)",
                        one_error(search(project, "run", "--config", "missing.yaml")))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(changed("space/model.beta", {"kind": "float", "low": 2, "high": 1})))
    assert one_error(search(project, "run", "--config", str(bad))).endswith(
        "space.model.beta: low = 2 is greater than high = 1")
    assert "not a database URL" in one_error(search(project, "run", "--storage", "not a url"))
    refused_port = free_port()
    started = time.monotonic()
    line = one_error(search(project, "run", "--storage", f"postgresql+psycopg://u:secret@127.0.0.1:{refused_port}/db"))
    assert re.search(r"cannot open the study's database \(OperationalError: .*(refused|failed)", line), line
    assert "secret" not in line and time.monotonic() - started < 15
    empty = f"sqlite:///{tmp_path}/empty.db"  # a database without this study: report and rerun say so
    name = yaml.safe_load((project / "search.yaml").read_text())["study"]["name"]
    for command in (["report", "--out", str(tmp_path / "report")], ["rerun", "0"]):
        assert one_error(search(project, *command, "--storage", empty)) == (
            f"error: no study named {name!r} in {empty}; run python -m fashion_vae.search run first")
    params = project / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("beta: 1.0", "beta: 0.9"))
    try:
        line = one_error(search(project, "run"))
    finally:
        params.write_text(original)
    assert line == ("error: the workspace has uncommitted changes to params.yaml; DVC's queue copies the "
                    "workspace into every trial, so commit or stash them first")
    assert not queue_tasks(project) or all(state == "Success" for _, state in queue_tasks(project))


@pytest.mark.e2e
def test_a_server_that_never_answers_stops_the_driver_within_the_connect_timeout(project):
    with socket.socket() as silent:  # accepts the TCP connection, never speaks PostgreSQL
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        line = one_error(search(project, "report", "--storage", f"postgresql+psycopg://u:p@127.0.0.1:{port}/db"))
        elapsed = time.monotonic() - started
    assert "cannot open the study's database" in line and ":p@" not in line
    assert elapsed < 20, f"took {elapsed:.1f} s"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.e2e
def test_ctrl_c_keeps_what_finished_and_a_second_driver_is_refused(project, tmp_path):
    log = tmp_path / "driver.log"
    before = shown_experiments(project, expect=completed_experiments(project))
    driver = start_driver(project, log, "--trials", "2")
    try:
        wait_until(lambda: "search: trial 1:" in log.read_text(), "trial 1 asked", driver, log)
        # Meanwhile a second driver on the same workspace and study database is refused.
        second = search(project, "run", "--trials", "2")
        assert one_error(second) == ("error: search/: another search driver is already running in this "
                                     "workspace; wait for it to finish")
        tasks = QueueWatch(project)
        wait_until(lambda: any(name.startswith("tiny-t001") and state == "Running" for name, state in tasks()),
                   "trial 1 running", driver, log)
        driver.send_signal(signal.SIGINT)
        code = driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    text = log.read_text()
    assert code == 130, text
    assert "Traceback" not in text
    trials = {t.number: t for t in study(project).get_trials()}
    assert trials[0].state.name == "COMPLETE" and trials[1].state.name == "FAIL"
    assert trials[1].user_attrs["interrupted"]
    assert not [t for t in queue_tasks(project) if t[1] in ("Queued", "Running")]
    completed = completed_experiments(project)  # trial 0's, whether this driver or an earlier one ran it
    after = {n: e["rev"] for n, e in shown_experiments(project, expect=completed).items()
             if e["state"] in (None, "success")}
    assert all(after.get(name) == exp["rev"] for name, exp in before.items()), "a finished experiment was lost"
    # The running experiment was stopped, unless it ended in the moment before the kill; the queued one never ran.
    finished_anyway = [name for name in after if name.startswith("tiny-t001")]
    assert "tiny-t001-s2" not in finished_anyway and set(after) == completed | set(finished_anyway)
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: interrupted (Ctrl-C); kept 1 completed trials and their 2 experiments in sqlite:///search/study.db; "
        f"marked trial(s) 1 failed and removed {2 - len(finished_anyway)} unfinished experiment(s); run the same "
        "command to continue"], text


def kill_processes_under(root: Path) -> list[str]:
    """SIGKILL every process working in ``root`` (DVC's queue workers and the runs they started),
    as a machine that stops does: all at once. Each is stopped first, until no new one appears,
    so none sees another die and records it (DVC would mark the experiment failed); their
    command lines."""
    stopped: dict[int, str] = {}
    while True:
        found = False
        for entry in Path("/proc").iterdir():
            try:
                pid = int(entry.name) if entry.name.isdigit() else None
                if pid is None or pid == os.getpid() or pid in stopped or \
                        not Path(os.readlink(entry / "cwd")).is_relative_to(root):
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                os.kill(pid, signal.SIGSTOP)
                stopped[pid], found = command, True
            except (OSError, ValueError):
                continue  # gone meanwhile, or not ours to read
        if not found:
            break
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return list(stopped.values())


@pytest.mark.e2e
def test_a_driver_killed_with_its_queue_resumes_its_trial_without_training_a_finished_experiment_again(
        project, tmp_path):
    log = tmp_path / "killed.log"
    driver = start_driver(project, log, "--trials", "2")  # trial 1 was interrupted: one more to finish
    try:
        tasks = QueueWatch(project)
        wait_until(lambda: ("tiny-t002-s2", "Running") in tasks(), "trial 2's second experiment", driver, log)
        # The machine stops: the driver, DVC's queue worker and the experiment it runs. DVC still
        # lists that experiment as running, for ever; the driver started again must see through it.
        os.kill(driver.pid, signal.SIGKILL)
        killed = kill_processes_under(project)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert any("queue-worker" in cmd for cmd in killed), killed
    assert "tiny-t002-s2" not in experiment_refs(project), "the experiment ended before the machine stopped"
    first = shown_experiments(project, expect={"tiny-t002-s1"})["tiny-t002-s1"]["rev"]
    assert study(project).get_trials()[2].state.name == "RUNNING"
    resumed = search(project, "run", "--poll", POLL, "--trials", "2", check=True)
    # Adopted: its first experiment is read, not trained again; the second is queued again.
    assert "search: resuming trial 2 (1 of 2 experiments already finished)" in resumed.stdout, resumed.stdout
    assert ("search: tiny-t002-s2: DVC lists it as running but its run has stopped (with its machine?); "
            "queued again") in resumed.stdout, resumed.stdout
    shown = shown_experiments(project, expect=completed_experiments(project))
    assert shown["tiny-t002-s1"]["rev"] == first, "the finished experiment was trained again"
    names = [name for name, _ in queue_tasks(project)]
    assert names.count("tiny-t002-s1") == 1 and names.count("tiny-t002-s2") == 1, names
    trials = study(project).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert_trial_matches_its_experiments(trials[2], shown, TINY_SEARCH)

    # The report: every trial in the record, the front as a table of experiment names and a figure.
    out = tmp_path / "report"
    reported = search(project, "report", "--out", str(out), check=True)
    assert "3 completed" not in reported.stdout and "2 completed, 1 failed" in reported.stdout, reported.stdout
    record = json.loads((out / "study.json").read_text())
    assert [t["number"] for t in record["trials"]] == [0, 1, 2]
    assert record["trials"][1]["error"] == "interrupted (Ctrl-C)"
    assert record["trials"][0]["per_seed"]["1"]["iwae_nll"] == shown["tiny-t000-s1"]["metrics"]["iwae_nll"]
    table = (out / "front.md").read_text()
    for number in record["front"]:
        assert f"`tiny-t{number:03d}-s1`, `tiny-t{number:03d}-s2`" in table
    assert record["params_yaml_trials"] == [0]
    rows = [line.split(" | ") for line in (out / "trials.md").read_text().splitlines()[2:]]
    assert [row[0].strip("| ") for row in rows] == ["0", "", "1", "", "2", ""], "a row per seed of every trial"
    assert rows[2][1].startswith("fail") and rows[2][-1].rstrip(" |") == "interrupted (Ctrl-C)"
    assert rows[0][-2] == f"{shown['tiny-t000-s1']['metrics']['iwae_nll']:.2f}"
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "reruns.png").exists() and "reruns.png" not in reported.stdout  # no re-run yet


@pytest.mark.e2e
def test_a_rerun_of_a_finished_trial_over_other_seeds_is_recorded_and_not_run_twice(project, tmp_path, monkeypatch,
                                                                                     capsys):
    from fashion_vae.search.__main__ import main
    from fashion_vae.search.experiments import Queue

    # Refused with one line before anything is queued (in this process: the command line is the same).
    monkeypatch.chdir(project)
    before = Queue(project).activity()  # DVC's queue files: a task queued would change them
    for args, expect in [
        (["99"], r"^error: trial 99 does not exist; only completed trials can be re-run$"),
        (["1"], r"^error: trial 1 failed; only completed trials can be re-run$"),
        (["0", "--set", "model.dropout=0.1"], r"^error: --set: params\.yaml has no key model\.dropout$"),
        (["0", "--set", "train.epochs=0"], r"^error: --set: trial 0's params with these values are outside what "
                                           r"params\.yaml accepts \(train\.epochs = 0 is invalid"),
        (["0", "--set", "train.seed=3"], r"^error: --set train\.seed: the seeds are --seeds, not an override$"),
        (["0", "--set", "train.epochs"], r"^error: --set 'train\.epochs': expected KEY=VALUE"),
        (["0", "--tag", "A B"], r"^error: --tag 'A B' is invalid"),
        (["0", "--seeds", "5", "5"], r"^error: --seeds 5 5: a seed is given twice$"),
    ]:
        assert main(["rerun", *args]) == 1, args
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.splitlines()) == 1, (args, captured)
        assert re.search(expect, captured.err.strip()), (args, captured.err)
    assert Queue(project).activity() == before

    # Trial 0 again with another seed and K = 2 for its scoring: one new experiment, recorded in the study.
    args = ("rerun", "0", "--seeds", "3", "--set", "evaluate.iwae_samples=2", "--tag", "k2", "--poll", POLL)
    result = search(project, *args, check=True)
    assert "search: re-run of trial 0 (k2) done:" in result.stdout, result.stdout
    shown = shown_experiments(project, expect={"tiny-t000-k2-s3"})
    trial = study(project).get_trials()[0]
    from fashion_vae.search.space import decode_choice

    wanted = {**trial.params, **TINY_SEARCH["study"]["fixed"], "evaluate.iwae_samples": 2, "train.seed": 3}
    for key, value in wanted.items():
        section, field = key.split(".")
        assert shown["tiny-t000-k2-s3"]["params"][section][field] == decode_choice(value), key
    record = study(project).user_attrs["rerun:000-k2"]
    metrics = shown["tiny-t000-k2-s3"]["metrics"]
    assert record["per_seed"]["3"]["iwae_nll"] == metrics["iwae_nll"]
    assert record["per_seed"]["3"]["knn5"] == metrics["knn"]["k5"]
    assert record["set"] == {"evaluate.iwae_samples": 2} and record["experiments"] == {"3": "tiny-t000-k2-s3"}

    # The same command again: recorded, so nothing is queued or trained.
    queued = Queue(project).activity()
    assert main(list(args)) == 0
    assert "search: re-run of trial 0 (k2) is already recorded" in capsys.readouterr().out
    assert Queue(project).activity() == queued and experiment_refs(project) >= {"tiny-t000-k2-s3"}

    # The report lists it beside the trials.
    out = tmp_path / "report"
    assert main(["report", "--out", str(out)]) == 0
    reruns = json.loads((out / "study.json").read_text())["reruns"]
    assert [(r["trial"], r["tag"], r["iwae_nll"]["median"]) for r in reruns] == [(0, "k2", metrics["iwae_nll"])]
    assert "`tiny-t000-k2-s3`" in (out / "reruns.md").read_text()
    assert (out / "reruns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "reruns.png" in capsys.readouterr().out


@pytest.mark.browser
def test_optuna_dashboard_shows_the_study_and_its_trials_in_a_browser(project, tmp_path):
    """`optuna-dashboard` on the study's database, on 127.0.0.1; Chromium reads the study and its trial count."""
    import urllib.request

    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM_ARGS, chromium_or_skip

    browser_path = chromium_or_skip()
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    dashboard = subprocess.Popen([str(BIN_DIR / "optuna-dashboard"), f"sqlite:///{project}/search/study.db",
                                  "--host", "127.0.0.1", "--port", str(port)], cwd=project, env=project_env(),
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as answer:
                    summaries = json.load(answer)["study_summaries"]
                break
            except OSError:
                assert dashboard.poll() is None and time.monotonic() < deadline, (tmp_path / "dashboard.log").read_text()
                time.sleep(0.5)
        (summary,) = summaries
        trials = len(study(project).get_trials())
        with sync_playwright() as playwright:
            # The dashboard is on 127.0.0.1; every name still resolves to nothing.
            args = [a.replace("MAP * ~NOTFOUND", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1") for a in CHROMIUM_ARGS]
            browser = playwright.chromium.launch(executable_path=browser_path, args=args, headless=True)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/dashboard", wait_until="load")
            page.get_by_text("tiny", exact=False).first.wait_for(timeout=30_000)
            page.goto(f"http://127.0.0.1:{port}/dashboard/studies/{summary['study_id']}/trials", wait_until="load")
            # The count shows 0 until the page has loaded the trials; it must come to the study's own.
            page.get_by_text(f"{trials} Trials", exact=True).first.wait_for(timeout=30_000)
            browser.close()
        assert summary["study_name"] == "tiny"
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
        log.close()
