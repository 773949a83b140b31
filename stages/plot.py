"""plot: manifold, clusters, reconstructions and prior samples -> plots/*.png."""
from pathlib import Path

import numpy as np

from fashion_vae import latents, params, plotting, prepared, training
from fashion_vae.errors import stage_main
from fashion_vae.evaluation import decode, encode

OUT_DIR = Path("plots")
TEST_NPZ = "data/prepared/test.npz"


@stage_main
def main() -> None:
    cfg = params.load()
    plot = cfg["plot"]
    training.configure_runtime(plot["seed"], cfg["train"]["threads"])
    model = training.load_model("models/vae.keras", cfg["model"])
    x_test, y_test = prepared.load_split(TEST_NPZ)
    # The CSV must be this model's encoding of this test split: same latent_dim, same rows.
    frame = latents.read_csv("data/latent/test_latent.csv", model.latent_dim, y_test, TEST_NPZ)
    z = latents.latent_matrix(frame)
    labels = frame["label"].to_numpy()

    def decode_fn(points: np.ndarray) -> np.ndarray:
        return decode(model, points)

    values = plotting.grid_values(
        plot["manifold_n"], plot["manifold_spacing"], plot["manifold_quantile"], plot["manifold_range"]
    )
    figures = {
        OUT_DIR / "manifold.png": plotting.manifold_figure(decode_fn, model.latent_dim, values,
                                                           plotting.principal_axes(z)),
        OUT_DIR / "clusters.png": plotting.clusters_figure(z, labels),
    }
    picked = plotting.pick_per_class(y_test, plot["reconstructions_per_class"])
    z_mean, _ = encode(model, x_test[picked])
    figures[OUT_DIR / "reconstructions.png"] = plotting.reconstructions_figure(
        x_test[picked], decode_fn(z_mean), y_test[picked]
    )
    prior = np.random.default_rng(plot["seed"]).standard_normal((plot["samples_n"], model.latent_dim))
    figures[OUT_DIR / "samples.png"] = plotting.samples_figure(decode_fn(prior.astype(np.float32)))
    plotting.save_all(figures, plot["dpi"])  # all four PNGs replaced together, or none
    print(f"plot: wrote manifold, clusters, reconstructions and samples to {OUT_DIR}/")


if __name__ == "__main__":
    main()
