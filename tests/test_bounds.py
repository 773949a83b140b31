"""Every numeric key of params.yaml at the largest and smallest value validation accepts (issue 19).

Generated from the schema in fashion_vae/params.py, not written case by case: a key added
there is covered here without anyone writing a case. Each value runs through the stage
that reads its section, on tiny real data, and must either finish or stop with exactly
one line on stderr (``error: ...``, exit status 1) -- no warning, no traceback -- within a
bounded time and memory. The memory the resource check allows is lowered to
``MEMORY_LIMIT`` for the run (``FASHION_VAE_MEMORY_LIMIT``), so what it lets through must
also fit under it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import yaml

from fashion_vae import params
from tests.conftest import REPO_ROOT, built_once, make_project, project_env

pytestmark = pytest.mark.e2e

STAGE_OF = {"fetch": "fetch", "prepare": "prepare", "model": "train", "train": "train", "evaluate": "evaluate",
            "plot": "plot"}
MEMORY_LIMIT = 3 << 30
PEAK_ALLOWED = MEMORY_LIMIT + (MEMORY_LIMIT >> 2)  # the estimate errs high; the measured peak may exceed it a little
TIME_LIMIT_S = 180
# The smallest sensible pipeline: 30 training images, 10 validation, 20 test; one step per epoch.
TINY = {
    "prepare": {"limit_train": 40, "val_size": 10, "limit_test": 20},
    "train": {"epochs": 1, "batch_size": 30, "warmup_epochs": 0},
    "evaluate": {"iwae_samples": 2, "batch_size": 1000, "knn_k": [1]},
    "plot": {"manifold_n": 2, "samples_n": 2, "reconstructions_per_class": 1, "dpi": 20},
}


def numeric_keys() -> list[tuple[str, str, params.Rule]]:
    return [(section, key, rule) for section, rules in params.SCHEMA.items() for key, rule in rules.items()
            if rule.kind in ("int", "number", "int_list")]


def extreme(rule: params.Rule, which: str):
    """The smallest or largest value the rule itself accepts (the next float inside an open bound)."""
    bound, is_open = (rule.low, rule.low_open) if which == "min" else (rule.high, rule.high_open)
    if rule.kind == "number":
        value = float(bound)
        if is_open:
            value = math.nextafter(value, math.inf if which == "min" else -math.inf)
        return value
    return int(bound)


def value_for(section: str, key: str, rule: params.Rule, which: str, base: dict):
    value = extreme(rule, which)
    if rule.kind == "int_list":
        return [value] * len(base[section][key])
    return value


CASES = [(section, key, which) for section, key, _ in numeric_keys() for which in ("min", "max")]


def test_every_numeric_key_has_finite_bounds_the_test_can_run():
    committed = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, key, rule in numeric_keys():
        assert rule.low is not None and rule.high is not None, f"{section}.{key} has no bound"
        for which in ("min", "max"):
            value = value_for(section, key, rule, which, committed)
            assert rule.check(value) is not None, f"{section}.{key}: its own {which} {value!r} is refused"


@pytest.fixture(scope="session")
def base(tmp_path_factory, worker_id, raw_dir, stage_server) -> Path:
    """A tiny project with every stage's inputs: raw data, prepared splits, a model, its latent CSV.
    Built once for all workers; each case runs in a hard-linked copy."""
    def build(root: Path) -> None:
        make_project(root, TINY, commit=False)
        shutil.copytree(raw_dir, root / "data" / "raw")
        for stage in ("prepare", "train", "encode"):
            result = stage_server.run(stage, root, project_env())
            assert result.returncode == 0, result.stderr

    return built_once(tmp_path_factory, worker_id, "bounds-base", build)


def workspace_copy(base: Path, dest: Path) -> Path:
    """A copy of the base project whose files are hard links: stages replace files, never write into them."""
    shutil.copytree(base, dest, copy_function=os.link, symlinks=True)
    return dest


RESULTS: dict[str, object] = {}  # identical params run once (most minima are the tiny base's own values)


@pytest.mark.parametrize("case", CASES, ids=[f"{s}.{k}={w}" for s, k, w in CASES])
def test_extreme_value_finishes_or_stops_with_one_line(case, base, stage_server, tmp_path):
    section, key, which = case
    rule = params.SCHEMA[section][key]
    config = yaml.safe_load((base / "params.yaml").read_text())
    config[section][key] = value_for(section, key, rule, which, config)
    text = yaml.safe_dump(config, sort_keys=False)
    stage = STAGE_OF[section]
    digest = hashlib.sha256(f"{stage}\n{text}".encode()).hexdigest()
    if digest not in RESULTS:
        project = workspace_copy(base, tmp_path / "project")
        (project / "params.yaml").unlink()
        (project / "params.yaml").write_text(text)
        env = {**project_env(), "FASHION_VAE_MEMORY_LIMIT": str(MEMORY_LIMIT)}
        RESULTS[digest] = stage_server.run(stage, project, env, timeout=TIME_LIMIT_S)
    result = RESULTS[digest]
    shown = json.dumps(config[section][key])[:60]
    report = f"{section}.{key} = {shown} through {stage}: exit {result.returncode}\n--- stderr\n{result.stderr[-2000:]}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode == 0:
        assert not lines, "finished, but printed on stderr:\n" + report
    else:
        assert result.returncode == 1, report
        assert len(lines) == 1 and lines[0].startswith("error: "), report
    assert "Traceback" not in result.stdout, report
    assert result.max_rss_bytes <= PEAK_ALLOWED, f"peak {result.max_rss_bytes / 2**30:.2f} GiB\n" + report
    print(f"{section}.{key}={shown}: exit {result.returncode} in {result.seconds:.1f} s, "
          f"peak {result.max_rss_bytes / 2**20:.0f} MiB" + (f": {lines[0][:160]}" if lines else ""))
