"""The session's stage server runs ``dvc`` as the installed command would (tests/stage_server.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN_DIR, dvc_executable, project_env
from tests.stage_server import DVC_VAR

pytestmark = pytest.mark.e2e  # the real DVC command line; the session's stage server runs when e2e tests do


def both(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """``dvc ARGS`` handed over to the server, and the installed ``dvc`` itself."""
    handed, real = project_env(), project_env(handover=False)
    assert dvc_executable(handed) != dvc_executable(real) == str(BIN_DIR / "dvc"), "no hand-over in this session"
    return tuple(subprocess.run([dvc_executable(env), *args], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=120) for env in (handed, real))


def test_dvc_through_the_server_prints_and_exits_as_the_installed_command(tmp_path, stage_server):
    for name in ("handed", "real"):  # `dvc init` in two repositories: the same files
        (tmp_path / name).mkdir()
        subprocess.run(["git", "init", "-q"], cwd=tmp_path / name, check=True)
    env = {"handed": project_env(), "real": project_env(handover=False)}
    inits = {name: subprocess.run([dvc_executable(env[name]), "init"], cwd=tmp_path / name, env=env[name],
                                  capture_output=True, text=True, timeout=120) for name in env}
    assert inits["handed"].returncode == inits["real"].returncode == 0, inits
    assert inits["handed"].stdout == inits["real"].stdout and "Initialized DVC repository" in inits["real"].stdout
    files = {name: sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name / ".dvc").rglob("*"))
             for name in env}
    assert files["handed"] == files["real"]
    for args in (["--version"], ["status"], ["params", "diff", "--json"], ["exp", "show", "--json"],
                 ["no-such-command"], ["repro", "no-such-stage"]):
        handed, real = both(args, tmp_path / "real")
        assert (handed.returncode, handed.stdout, handed.stderr) == (real.returncode, real.stdout, real.stderr), args
    assert both(["no-such-command"], tmp_path / "real")[0].returncode == 254


def test_the_shim_runs_the_installed_dvc_when_no_server_is_named(tmp_path, stage_server):
    env = {**project_env(handover=False), DVC_VAR: project_env()[DVC_VAR]}
    result = subprocess.run([env[DVC_VAR], "--version"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip()[0].isdigit(), result.stderr
