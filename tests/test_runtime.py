"""TensorFlow's CPU runtime settings that the stages rely on, checked in fresh processes."""
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, project_env

PROBE = (
    "import stages, dvclive, tensorflow as tf\n"  # stages first, as `python -m stages.X` does
    "from fashion_vae.training import onednn_enabled\n"
    "print(onednn_enabled())\n"
)


@pytest.mark.parametrize("setting, expected", [(None, "True"), ("0", "False")])
def test_stages_turn_on_onednn_before_tensorflow_loads(setting, expected):
    env = project_env(handover=False)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if setting is not None:  # a user's own choice wins
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


def test_training_dataset_has_fixed_prefetch_and_no_autotune():
    import numpy as np

    from fashion_vae.training import make_dataset

    x = np.zeros((10, 28, 28, 1), np.float32)
    ds = make_dataset(x, 4, seed=1, shuffle=True)
    assert ds.options().autotune.enabled is False
    assert [b.shape[0] for b in ds] == [4, 4]  # full batches only when training
    assert [b.shape[0] for b in make_dataset(x, 4)] == [4, 4, 2]


def test_the_training_log_reads_no_metric_file_back_at_each_step_without_studio(tmp_path, monkeypatch):
    """dvclive would parse every TSV it wrote at every step for a Studio update it then drops."""
    import dvclive.live

    from stages.train import live_log

    monkeypatch.delenv("DVC_STUDIO_TOKEN", raising=False)
    monkeypatch.delenv("STUDIO_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    reads = []
    monkeypatch.setattr(dvclive.live, "parse_metrics", lambda live: reads.append(live) or ({}, {}))
    live = live_log(tmp_path / "log")
    for step in range(3):
        live.log_metric("loss", 10.0 - step)
        live.next_step()
    live.end()
    assert reads == []
    rows = (tmp_path / "log" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert rows[0] == "step\tloss" and len(rows) == 4  # the curve itself is written as before
