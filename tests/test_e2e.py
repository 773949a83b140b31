"""End to end: the real DVC CLI on a small real subset, as a user drives it.

One project copy goes through the whole workflow in order: repro, no-op, selective
re-runs, byte-identical retraining, experiments and diffs, a queued sweep, and a
remote round trip into a fresh clone.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    BIN_DIR, copy_of, dvc, finish_queue, project_env, run, stages_run, update_params,
)

# One xdist worker runs the whole module, in order: its tests build on each other's state.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

ALL_STAGES = ["fetch", "prepare", "train", "evaluate", "encode", "plot"]
OUTPUTS = [
    "data/raw/train-images-idx3-ubyte.gz",
    "data/raw/t10k-labels-idx1-ubyte.gz",
    "data/prepared/train.npz",
    "data/prepared/val.npz",
    "data/prepared/test.npz",
    "models/vae.keras",
    "metrics/train.json",
    "metrics/train_details.json",
    "metrics/training/metrics.json",
    "metrics/training/plots/metrics/train/loss.tsv",
    "metrics/training/plots/metrics/eval/loss.tsv",
    "metrics/eval.json",
    "metrics/eval_details.json",
    "data/latent/test_latent.csv",
    "plots/manifold.png",
    "plots/clusters.png",
    "plots/reconstructions.png",
    "plots/samples.png",
]
CACHED_OUTPUTS = [o for o in OUTPUTS if not o.startswith("metrics/")]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", message], project)


@pytest.fixture(scope="module")
def project(small_pipeline, tmp_path_factory) -> Path:
    """The session's small pipeline, built by a first `dvc repro` from nothing; this module's own copy."""
    return copy_of(small_pipeline, tmp_path_factory.mktemp("e2e") / "project")


def test_repro_runs_all_six_stages(project, small_pipeline):
    built = (small_pipeline.parent / "repro.out").read_text()  # what that `dvc repro` printed
    assert stages_run(subprocess.CompletedProcess([], 0, built, "")) == ALL_STAGES
    for name in OUTPUTS:
        assert (project / name).is_file(), name
    assert "up to date" in dvc(project, "status").stdout
    shown = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    (workspace,) = shown.values()  # keyed by "" (the workspace) in DVC 3.67
    files = workspace["data"]
    # Headline metrics only, each number once: dvclive's metrics.json (the same final losses) and
    # the details files are not declared, so `dvc exp show` stays narrow.
    assert set(files) == {"metrics/train.json", "metrics/eval.json"}
    train = files["metrics/train.json"]["data"]
    evaluation = files["metrics/eval.json"]["data"]
    assert set(train) == {"train", "val"} and train["val"]["loss"] > 0
    assert set(evaluation) == {"iwae_nll", "neg_elbo", "kl", "knn"}
    assert evaluation["iwae_nll"] <= evaluation["neg_elbo"] + 1.0
    assert set(evaluation["knn"]) == {"k1", "k5"}
    live = json.loads((project / "metrics/training/metrics.json").read_text())
    assert live["step"] == 1 and live["eval"]["loss"] == pytest.approx(train["val"]["loss"])
    # The details are still one command away, by name.
    details = json.loads(dvc(project, "metrics", "show", "--json", "metrics/eval_details.json",
                             "metrics/train_details.json").stdout)
    (named,) = details.values()
    eval_details = named["data"]["metrics/eval_details.json"]["data"]
    assert eval_details["iwae_samples"] == 16 and len(eval_details["per_class_reconstruction"]) == 10
    assert eval_details["reconstruction"] == pytest.approx(evaluation["neg_elbo"] - evaluation["kl"])
    assert named["data"]["metrics/train_details.json"]["data"]["epochs"] == 2
    table = dvc(project, "metrics", "show").stdout
    assert "metrics/eval.json" in table and "metrics/train.json" in table


# TensorFlow's C++ start-up lines (glog format "I0000 00:00:... file.cc:123] ..."), absl's preamble,
# and anything about CUDA: none of it means anything to a user of a CPU pipeline.
TF_NOISE = re.compile(r"^[IWEF]\d{4} [\d:. ]+\s*\d+ \w+\.cc:\d+\]|absl::InitializeLog|cuInit|cuda|CUDA", re.MULTILINE)


def test_stages_print_no_tensorflow_start_up_noise(project, tmp_path):
    """Each TensorFlow stage, run as a user runs it (no TF_CPP_MIN_LOG_LEVEL of their own):
    only its own lines reach the terminal."""
    env = project_env(handover=False)  # the real `python -m stages.NAME`: TensorFlow's own import
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    # train by hand rewrites its timings in metrics/: it runs in a copy, so DVC's view below holds.
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    update_params(copy, {"train": {"epochs": 1}})  # the noise is TensorFlow's start-up, not the epochs
    runs = [("train", copy), ("encode", project), ("plot", project), ("evaluate", project)]
    for name, where in runs:
        result = run([sys.executable, "-m", f"stages.{name}"], where, env=env)
        assert not TF_NOISE.search(result.stderr), f"stages.{name} stderr:\n{result.stderr}"
        assert not TF_NOISE.search(result.stdout), f"stages.{name} stdout:\n{result.stdout}"
        assert result.stdout.splitlines()[-1].startswith(f"{name}: "), result.stdout
    # Running a stage by hand rewrote identical outputs: DVC sees nothing to do.
    assert "up to date" in dvc(project, "status").stdout


def test_second_repro_runs_nothing(project):
    result = dvc(project, "repro")
    assert stages_run(result) == []
    assert "Data and pipelines are up to date." in result.stdout


@pytest.mark.parametrize(
    "override,expected",
    [
        ({"plot": {"manifold_n": 5}}, ["plot"]),
        ({"evaluate": {"iwae_samples": 12}}, ["evaluate"]),
        ({"train": {"learning_rate": 0.0031}}, ["train", "evaluate", "encode", "plot"]),
    ],
    ids=["plot-param", "iwae-k", "train-param"],
)
def test_a_param_change_reruns_only_dependent_stages(project, override, expected):
    update_params(project, override)
    assert sorted(stages_run(dvc(project, "repro"))) == sorted(expected)
    assert stages_run(dvc(project, "repro")) == []


def test_forced_retrain_is_byte_identical(project):
    git_commit(project, "baseline results")
    before = {name: digest(project / name) for name in CACHED_OUTPUTS}
    assert stages_run(dvc(project, "repro", "-f", "train")) == ["fetch", "prepare", "train"]
    after = {name: digest(project / name) for name in CACHED_OUTPUTS}
    assert after == before
    result = dvc(project, "repro")
    assert stages_run(result) == []  # identical model: evaluate, encode, plot are skipped
    # Only uncached metrics may differ: wall-clock timings in metrics/train.json, and
    # float noise in the logged validation curve (TensorFlow's first evaluation pass).
    changed = {line[3:] for line in run(["git", "status", "--porcelain"], project).stdout.splitlines()}
    assert all(name == "dvc.lock" or name.startswith("metrics/train") for name in changed), changed
    git_commit(project, "re-run train")


def exp_rows(project: Path) -> list[dict]:
    """Flattened `dvc exp show --json`: one dict per experiment with params and metrics."""
    rows = []

    def visit(entry):
        data = entry.get("data") or {}
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        metrics = {name: m.get("data", {}) for name, m in (data.get("metrics") or {}).items()}
        rows.append({"rev": entry.get("rev"), "name": entry.get("name"), "params": params, "metrics": metrics})
        for group in entry.get("experiments") or []:
            for rev in group.get("revs", []):
                visit(rev)

    for entry in json.loads(dvc(project, "exp", "show", "--json").stdout):
        visit(entry)
    return rows


def test_experiment_run_and_diffs(project):
    result = dvc(project, "exp", "run", "-n", "three-epochs", "-S", "train.epochs=3")
    assert sorted(stages_run(result)) == ["encode", "evaluate", "plot", "train"]
    rows = {row["name"]: row for row in exp_rows(project)}
    exp = rows["three-epochs"]
    assert exp["params"]["train"]["epochs"] == 3
    assert exp["metrics"]["metrics/train.json"]["val"]["loss"] > 0
    assert "iwae_nll" in exp["metrics"]["metrics/eval.json"]

    # After one experiment the comparison table is one a person can read (issue 14: it was
    # about 3,000 characters wide when every number was declared twice).
    # COLUMNS: DVC fits the table to the terminal (80 columns without one); measure its real width.
    wide = {**project_env(), "COLUMNS": "1000"}
    table = run([str(BIN_DIR / "dvc"), "exp", "show", "--only-changed", "--no-pager"], project, env=wide).stdout
    print(table)
    assert "three-epochs" in table and "iwae_nll" in table and "train.epochs" in table
    # "Created" shows a time ("07:42 PM") on the day of the run and a date ("Nov 25, 2026") later:
    # measured without it and with the date's width added, the bound holds on any day. "Under
    # about 200 columns" (issue 14): the real project's table is 199 on the day and 202 later.
    without_dates = run([str(BIN_DIR / "dvc"), "exp", "show", "--only-changed", "--no-pager", "--drop", "Created"],
                        project, env=wide).stdout
    assert "Created" in table and "Created" not in without_dates
    assert max(len(line) for line in without_dates.splitlines()) + len("Nov 25, 2026") + 3 <= 205, table

    dvc(project, "exp", "apply", "three-epochs")
    params_diff = json.loads(dvc(project, "params", "diff", "HEAD", "--json").stdout)
    assert params_diff["params.yaml"]["train.epochs"] == {"old": 2, "new": 3, "diff": 1}
    metrics_diff = json.loads(dvc(project, "metrics", "diff", "HEAD", "--json").stdout)
    assert set(metrics_diff["metrics/train.json"]) == {"train.loss", "val.loss"}
    assert "neg_elbo" in metrics_diff["metrics/eval.json"]
    out = project / "diff_page"
    dvc(project, "plots", "diff", "HEAD", "-o", str(out))
    page = (out / "index.html").read_text()
    assert "HEAD" in page and "workspace" in page
    assert page.count("<img") >= 8  # four images for each of the two revisions
    run(["git", "checkout", "--", "."], project)
    dvc(project, "checkout")


def test_queued_sweep(project):
    dvc(project, "exp", "run", "--queue", "-S", "model.latent_dim=2,4", "-S", "train.epochs=1")
    # One worker, as in the README's sweep: with two, a CI run's workers were still alive
    # after 900 s (not reproduced locally; the cause was not found).
    finish_queue(project, jobs=1)
    latent_dims = sorted(
        row["params"]["model"]["latent_dim"]
        for row in exp_rows(project)
        if row["params"].get("train", {}).get("epochs") == 1
    )
    assert latent_dims == [2, 4]


def test_remote_round_trip_restores_everything(project, tmp_path):
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-d", "storage", str(remote))
    git_commit(project, "add a DVC remote")
    dvc(project, "push")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    dvc(clone, "pull")
    for name in OUTPUTS:
        assert (clone / name).is_file(), name
        assert digest(clone / name) == digest(project / name), name
    assert "up to date" in dvc(clone, "status").stdout
    assert stages_run(dvc(clone, "repro")) == []  # nothing retrains


def test_params_file_is_unchanged_by_the_workflow(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["train"]["epochs"] == 2 and params["model"]["latent_dim"] == 2
