"""plot: manifold, clusters, reconstructions and prior samples -> plots/*.png."""
from pathlib import Path

import numpy as np

from fashion_vae import latents, params, plotting, prepared, training
from fashion_vae.errors import stage_main
from fashion_vae.evaluation import decode, encode

OUT_DIR = Path("plots")


@stage_main
def main() -> None:
    cfg = params.load()
    plot = cfg["plot"]
    training.configure_runtime(plot["seed"], cfg["train"]["threads"])
    model = training.load_model("models/vae.keras", cfg["model"])
    frame = latents.read_csv("data/latent/test_latent.csv")
    x_test, y_test = prepared.load_split("data/prepared/test.npz")
    z = latents.latent_matrix(frame)
    labels = frame["label"].to_numpy()
    dpi = plot["dpi"]

    def decode_fn(points: np.ndarray) -> np.ndarray:
        return decode(model, points)

    values = plotting.grid_values(
        plot["manifold_n"], plot["manifold_spacing"], plot["manifold_quantile"], plot["manifold_range"]
    )
    axes_2d = plotting.principal_axes(z)
    plotting.save(plotting.manifold_figure(decode_fn, model.latent_dim, values, axes_2d), OUT_DIR / "manifold.png", dpi)
    plotting.save(plotting.clusters_figure(z, labels), OUT_DIR / "clusters.png", dpi)

    picked = plotting.pick_per_class(y_test, plot["reconstructions_per_class"])
    z_mean, _ = encode(model, x_test[picked])
    figure = plotting.reconstructions_figure(x_test[picked], decode_fn(z_mean), y_test[picked])
    plotting.save(figure, OUT_DIR / "reconstructions.png", dpi)

    prior = np.random.default_rng(plot["seed"]).standard_normal((plot["samples_n"], model.latent_dim))
    plotting.save(plotting.samples_figure(decode_fn(prior.astype(np.float32))), OUT_DIR / "samples.png", dpi)
    print(f"plot: wrote manifold, clusters, reconstructions and samples to {OUT_DIR}/")


if __name__ == "__main__":
    main()
