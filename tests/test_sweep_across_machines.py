"""A sweep split across machines, coordinated through git and a DVC remote on S3.

Two clones of one bare git repository stand for two machines. Both use the same S3 remote
(moto's server, tests/s3_server.py). Machine A runs its half of a learning-rate sweep with
`dvc exp run`, machine B queues its share and runs it with `dvc queue start`; each sends its
experiments with `dvc exp push origin`. A third clone pulls them all with
`dvc exp pull origin`, sees every experiment's params and metrics in `dvc exp show --json`,
and `dvc exp apply` gives it an experiment's model, byte for byte, without training.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN_DIR, finish_queue, project_env, run, stages_run
from tests.s3_server import S3Remote, running_s3_remote

# One xdist worker runs the whole module, in order: its tests build on each other's state.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("sweep_across_machines")]

# Each machine's share of the sweep: experiment name -> train.learning_rate (1 epoch each).
MACHINE_A = {"lr-1e-3": 0.001}
MACHINE_B = {"lr-5e-3": 0.005}


def sweep_point(learning_rate: float) -> list[str]:
    return ["-S", f"train.learning_rate={learning_rate}", "-S", "train.epochs=1"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dvc(s3: S3Remote, cwd: Path, *args: str, check: bool = True,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """The real DVC CLI on one "machine": its AWS key comes from the environment."""
    result = run([str(BIN_DIR / "dvc"), *args], cwd, env=s3.env(project_env()), check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
            f"--- {s3.server.log_path} ---\n{s3.server.log_tail()}"
        )
    return result


def experiments(s3: S3Remote, project: Path) -> dict[str, dict]:
    """{name: {"params": ..., "metrics": {file: data}}} from `dvc exp show --json`."""
    found = {}
    for baseline in json.loads(dvc(s3, project, "exp", "show", "--json").stdout):
        for group in baseline.get("experiments") or []:
            for exp in group.get("revs", []):
                data = exp.get("data") or {}
                found[exp["name"]] = {
                    "params": data.get("params", {}).get("params.yaml", {}).get("data", {}),
                    "metrics": {name: m.get("data", {}) for name, m in (data.get("metrics") or {}).items()},
                }
    return found


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with running_s3_remote(tmp_path_factory.mktemp("s3")) as remote:
        yield remote


@pytest.fixture(scope="module")
def origin(small_pipeline, s3, tmp_path_factory) -> Path:
    """The shared bare git repository: the small pipeline's committed results, their data on S3."""
    base = tmp_path_factory.mktemp("machines")
    seed = base / "seed"
    shutil.copytree(
        small_pipeline, seed, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else []
    )
    dvc(s3, seed, "remote", "add", "-d", "storage", s3.url("sweep"))
    dvc(s3, seed, "remote", "modify", "storage", "endpointurl", s3.endpoint)
    run(["git", "add", "-A"], seed)
    run(["git", "commit", "-qm", "results, and the S3 remote"], seed)
    bare = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], base)
    run(["git", "push", "-q", str(bare), "main"], seed)
    dvc(s3, seed, "push")
    return bare


def machine(s3: S3Remote, origin: Path, name: str) -> Path:
    """A fresh clone of ``origin`` with the baseline's data pulled from S3."""
    path = origin.parent / name
    run(["git", "clone", "-q", str(origin), str(path)], origin.parent)
    dvc(s3, path, "pull")
    return path


@pytest.fixture(scope="module")
def swept(s3, origin) -> dict[str, str]:
    """Both machines run and push their share; returns {experiment: sha256 of its model}."""
    models = {}
    machine_a = machine(s3, origin, "machine-a")
    for name, lr in MACHINE_A.items():
        result = dvc(s3, machine_a, "exp", "run", "-n", name, *sweep_point(lr))
        assert sorted(stages_run(result)) == ["encode", "evaluate", "plot", "train"]
        models[name] = sha256(machine_a / "models/vae.keras")  # the bytes machine A trained
    pushed = dvc(s3, machine_a, "exp", "push", "origin")
    assert all(name in pushed.stdout for name in MACHINE_A), pushed.stdout

    machine_b = machine(s3, origin, "machine-b")
    for name, lr in MACHINE_B.items():
        dvc(s3, machine_b, "exp", "run", "--queue", "-n", name, *sweep_point(lr))
    finish_queue(machine_b, env=s3.env(project_env()))
    for name in MACHINE_B:  # queued runs train in temporary copies; read their models back
        dvc(s3, machine_b, "exp", "apply", name)
        models[name] = sha256(machine_b / "models/vae.keras")
    pushed = dvc(s3, machine_b, "exp", "push", "origin")
    assert all(name in pushed.stdout for name in MACHINE_B), pushed.stdout
    return models


@pytest.fixture(scope="module")
def third(s3, origin, swept) -> Path:
    """A third machine that only pulls: git clone, then `dvc exp pull origin`."""
    path = origin.parent / "machine-c"
    run(["git", "clone", "-q", str(origin), str(path)], origin.parent)
    assert not (path / ".dvc" / "cache").exists()  # nothing local: everything comes from git and S3
    pulled = dvc(s3, path, "exp", "pull", "origin")
    assert all(name in pulled.stdout for name in swept), pulled.stdout
    return path


def test_every_experiment_from_both_machines_is_shown_with_params_and_metrics(s3, third, swept):
    shown = experiments(s3, third)
    assert set(shown) == set(MACHINE_A) | set(MACHINE_B)
    for name, lr in {**MACHINE_A, **MACHINE_B}.items():
        params, metrics = shown[name]["params"], shown[name]["metrics"]
        assert params["train"]["learning_rate"] == lr and params["train"]["epochs"] == 1
        training = metrics["metrics/train.json"]
        assert training["train"]["loss"] > 0 and training["val"]["loss"] > 0
        evaluation = metrics["metrics/eval.json"]
        assert 0 < evaluation["iwae_nll"] <= evaluation["neg_elbo"] + 1.0
    assert len({shown[name]["metrics"]["metrics/train.json"]["val"]["loss"] for name in shown}) == len(shown)
    assert len(set(swept.values())) == len(swept)  # a different model per learning rate


@pytest.mark.parametrize("name", [*MACHINE_A, *MACHINE_B])
def test_exp_apply_gives_the_model_from_the_remote_without_training(s3, third, swept, name):
    applied = dvc(s3, third, "exp", "apply", name)
    assert "Running stage" not in applied.stdout
    assert sha256(third / "models/vae.keras") == swept[name]
    lr = {**MACHINE_A, **MACHINE_B}[name]
    assert yaml.safe_load((third / "params.yaml").read_text())["train"]["learning_rate"] == lr
    assert dvc(s3, third, "status").stdout.strip() == "Data and pipelines are up to date."
    assert stages_run(dvc(s3, third, "repro")) == []  # nothing to retrain
