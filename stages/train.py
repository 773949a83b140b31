"""train: fit the VAE on data/prepared, log with dvclive, save models/vae.keras."""
import shutil
from pathlib import Path

from dvclive import Live
from dvclive.keras import DVCLiveCallback

from fashion_vae import atomic, params, prepared, training
from fashion_vae.errors import stage_main

MODEL_PATH = Path("models/vae.keras")
METRICS_PATH = Path("metrics/train.json")
LIVE_DIR = Path("metrics/training")
# dvclive writes here while training runs (watch it live); the directory replaces
# LIVE_DIR only after a successful run, so a failed run leaves no partial metrics.
LIVE_STAGING = Path("metrics/.training.partial")


@stage_main
def main() -> None:
    cfg = params.load()
    x_train, _ = prepared.load_split("data/prepared/train.npz")
    x_val, _ = prepared.load_split("data/prepared/val.npz")

    shutil.rmtree(LIVE_STAGING, ignore_errors=True)
    live = Live(dir=str(LIVE_STAGING), dvcyaml=None, save_dvc_exp=False, report=None)
    try:
        model, summary = training.train(
            cfg["model"], cfg["train"], x_train, x_val,
            callbacks=[DVCLiveCallback(live=live)],
            verbose=training.progress_verbosity(),
        )
    except BaseException:
        shutil.rmtree(LIVE_STAGING, ignore_errors=True)
        raise
    training.save_model(model, MODEL_PATH)
    atomic.write_json(METRICS_PATH, summary)
    atomic.replace_dir(LIVE_STAGING, LIVE_DIR)
    print(
        f"train: {summary['epochs']} epochs in {summary['wall_seconds']} s, "
        f"val loss {summary['val']['loss']:.2f}, {summary['train_images_per_second']} images/s"
    )


if __name__ == "__main__":
    main()
