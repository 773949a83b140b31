"""tf.distribute: MirroredStrategy over two logical CPU devices trains, saves and loads."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    # Two logical CPUs stand in for two GPUs; must be set before TensorFlow starts.
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from fashion_vae import dataset, prepared, training
    raw_dir, out = sys.argv[1], sys.argv[2]
    x = prepared.normalise(dataset.load_raw(raw_dir, "train_images")[:640])
    model_params = {"latent_dim": 2, "conv_filters": [8, 16], "kernel_size": 3, "dense_units": 16, "decoder_dense_units": 0, "beta": 1.0}
    train_params = {"seed": 1, "epochs": 3, "batch_size": 64, "learning_rate": 0.003, "lr_schedule": "constant",
                    "warmup_epochs": 0, "steps_per_execution": 1, "threads": 2, "distribute": "mirrored"}
    losses = []
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: losses.append(float(logs["loss"])))
    model, summary = training.train(model_params, train_params, x[:512], x[512:], callbacks=[cb], verbose=0)
    strategy = model.distribute_strategy
    training.save_model(model, out + "/vae.keras")
    loaded = training.load_model(out + "/vae.keras", model_params)
    same = bool(np.array_equal(loaded.encoder.heads(x[:8])[0], model.encoder.heads(x[:8])[0]))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "strategy": type(strategy).__name__,
                      "losses": losses, "reload_identical": same}))
    """
)


def test_mirrored_strategy_on_two_logical_cpus(raw_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(raw_dir), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["strategy"] == "MirroredStrategy" and report["replicas"] == 2
    losses = report["losses"]
    assert len(losses) == 3 and losses[-1] < losses[0] - 20
    assert report["reload_identical"]
    assert (tmp_path / "vae.keras").stat().st_size > 0
