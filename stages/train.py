"""train: fit the VAE on data/prepared, log with dvclive, save models/vae.keras."""
from pathlib import Path

from fashion_vae import atomic, distributed, params, prepared
from fashion_vae.errors import stage_main

MODEL_PATH = Path("models/vae.keras")
METRICS_PATH = Path("metrics/train.json")  # headline: final train and validation loss
DETAILS_PATH = Path("metrics/train_details.json")  # loss components, epochs, timings
LIVE_DIR = Path("metrics/training")
# dvclive writes here while training runs (watch it live); the directory replaces
# LIVE_DIR only after a successful run, so a failed run leaves no partial metrics.
LIVE_STAGING = Path("metrics/.training.partial")


@stage_main
def main() -> None:
    cfg = params.load()
    x_train, _ = prepared.load_split("data/prepared/train.npz")
    x_val, _ = prepared.load_split("data/prepared/val.npz")
    # Checks TF_CONFIG against train.distribute; only the chief (worker 0) of a
    # multi-worker run, or a run on one machine, takes the lock and writes.
    chief = distributed.is_chief(cfg["train"]["distribute"])
    # TensorFlow loads only now (6 s): a bad params.yaml, data file or TF_CONFIG stops at once.
    from fashion_vae import training  # first: TensorFlow without its start-up lines, before dvclive's callback

    training.check_precision(cfg["train"]["precision"])
    if not chief:
        train_share(cfg, x_train, x_val)
        return
    from dvclive.keras import DVCLiveCallback

    # One writer at a time: a second train stage in this workspace (outside DVC's own
    # lock) stops at once instead of interleaving its curves and model with ours.
    with atomic.exclusive_lock(MODEL_PATH.parent, "another train stage"):
        atomic.remove_path(LIVE_STAGING)  # a killed run's scratch (ours, whatever it holds)
        try:
            live = live_log(LIVE_STAGING)
            model, summary = training.train(
                cfg["model"], cfg["train"], x_train, x_val,
                callbacks=[
                    training.CheckOutputSpace([MODEL_PATH.parent, METRICS_PATH.parent]),
                    DVCLiveCallback(live=live),
                ],
                verbose=training.progress_verbosity(),
            )
            training.save_model(model, MODEL_PATH)
            headline, details = training.split_summary(summary)
            atomic.write_json(METRICS_PATH, headline)
            atomic.write_json(DETAILS_PATH, details)
            atomic.replace_dir(LIVE_STAGING, LIVE_DIR)
        finally:
            atomic.remove_path(LIVE_STAGING)
    print(
        f"train: {summary['epochs']} epochs in {summary['wall_seconds']} s, "
        f"val loss {summary['val']['loss']:.2f}, {summary['train_images_per_second']} images/s"
    )


def live_log(directory: Path):
    """dvclive's ``Live`` in ``directory``: no dvc.yaml (dvc.yaml is written by hand), no
    experiment of its own and no report (DVC runs the stage).

    Without DVC Studio configured, dvclive 3.49 still re-reads every metric file it has written
    at each step to build the update it then drops: quadratic in the epochs (about 10 s of CPU
    at 500). This ``Live`` skips that when Studio would skip the update anyway.
    """
    from dvclive import Live

    class StudioAwareLive(Live):
        def post_data_to_studio(self):
            if "data" in getattr(self, "_studio_events_to_skip", ()):
                return
            super().post_data_to_studio()

    return StudioAwareLive(dir=str(directory), dvcyaml=None, save_dvc_exp=False, report=None)


def train_share(cfg: dict, x_train, x_val) -> None:
    """A multi-worker run's other workers train their share of every batch and write nothing."""
    from fashion_vae import training

    _, summary = training.train(cfg["model"], cfg["train"], x_train, x_val, verbose=0)
    print(f"train: worker done, {summary['epochs']} epochs; the chief (worker 0) writes the outputs")


if __name__ == "__main__":
    main()
