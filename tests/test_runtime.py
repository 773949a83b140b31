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
