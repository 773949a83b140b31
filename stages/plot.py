"""plot: manifold, clusters, reconstructions and prior samples -> plots/*.png."""
from pathlib import Path

import numpy as np

from fashion_vae import latents, params, prepared
from fashion_vae.errors import stage_main

OUT_DIR = Path("plots")
TEST_NPZ = "data/prepared/test.npz"


@stage_main
def main() -> None:
    cfg = params.load()
    plot = cfg["plot"]
    x_test, y_test = prepared.load_split(TEST_NPZ)
    # TensorFlow loads only now (6 s): a bad params.yaml or data file stops at once.
    from fashion_vae import plotting, training
    from fashion_vae.evaluation import decode, encode

    training.configure_runtime(plot["seed"], cfg["train"]["threads"])
    model = training.load_model("models/vae.keras", cfg["model"])
    # The CSV must be this model's encoding of this test split: same latent_dim, same rows.
    frame = latents.read_csv("data/latent/test_latent.csv", model.latent_dim, y_test, TEST_NPZ)

    def decode_fn(points: np.ndarray) -> np.ndarray:
        return decode(model, points)

    def encode_mean(images: np.ndarray) -> np.ndarray:
        return encode(model, images)[0]

    figures = plotting.stage_figures(model, decode_fn, encode_mean, x_test, y_test,
                                     latents.latent_matrix(frame), frame["label"].to_numpy(), plot)
    # All four PNGs replaced together, or none.
    plotting.save_all({OUT_DIR / name: fig for name, fig in figures.items()}, plot["dpi"])
    print(f"plot: wrote manifold, clusters, reconstructions and samples to {OUT_DIR}/ "
          f"(prior: {model.prior_name})")


if __name__ == "__main__":
    main()
