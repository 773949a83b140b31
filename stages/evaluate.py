"""evaluate: held-out test metrics of the trained VAE -> metrics/eval.json (+ details)."""
from fashion_vae import atomic, params, prepared
from fashion_vae.errors import stage_main

METRICS_PATH = "metrics/eval.json"  # headline: -log p(x) bounds, KL, k-NN accuracy
DETAILS_PATH = "metrics/eval_details.json"  # reconstruction, silhouette, per class, z = z_mean, sizes


@stage_main
def main() -> None:
    cfg = params.load()
    eval_params = cfg["evaluate"]
    train = prepared.load_split("data/prepared/train.npz")
    test = prepared.load_split("data/prepared/test.npz")
    # TensorFlow loads only now (6 s): a bad params.yaml or data file stops at once.
    from fashion_vae import evaluation, training

    training.configure_runtime(eval_params["seed"], cfg["train"]["threads"])
    model = training.load_model("models/vae.keras", cfg["model"])
    metrics = evaluation.evaluate(model, train, test, eval_params)
    headline, details = evaluation.split_metrics(metrics)
    atomic.write_json(METRICS_PATH, headline)
    atomic.write_json(DETAILS_PATH, details)
    knn = ", ".join(f"{k.lstrip('k')}-NN {v:.4f}" for k, v in metrics["knn"].items())
    print(
        f"evaluate: -ELBO {metrics['neg_elbo']:.2f}, IWAE(K={metrics['iwae_samples']}) "
        f"{metrics['iwae_nll']:.2f} nats/image; {knn}; silhouette {metrics['silhouette']:.3f}"
    )


if __name__ == "__main__":
    main()
