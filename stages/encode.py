"""encode: every test image's z_mean and z_log_var -> data/latent/test_latent.csv."""
from fashion_vae import latents, params, prepared
from fashion_vae.errors import stage_main

CSV_PATH = "data/latent/test_latent.csv"


@stage_main
def main() -> None:
    cfg = params.load()
    x_test, y_test = prepared.load_split("data/prepared/test.npz")
    # TensorFlow loads only now (6 s): a bad params.yaml or data file stops at once.
    from fashion_vae import training
    from fashion_vae.evaluation import encode

    training.configure_runtime(cfg["train"]["seed"], cfg["train"]["threads"])
    model = training.load_model("models/vae.keras", cfg["model"])
    z_mean, z_log_var = encode(model, x_test)
    latents.write_csv(latents.to_frame(z_mean, z_log_var, y_test), CSV_PATH)
    print(f"encode: {len(x_test)} test images -> {CSV_PATH}")


if __name__ == "__main__":
    main()
