"""Held-out metrics: reconstruction, KL, ELBO, the IWAE bound, and latent quality.

All sampling here uses numpy's seeded generator, so a metric depends only on the
model, the data and ``evaluate.seed``, not on TensorFlow's global random state.
"""
from __future__ import annotations

import math

from fashion_vae import quiet_tensorflow  # noqa: F401  (first: loads TensorFlow without start-up noise)
import numpy as np  # noqa: E402
import tensorflow as tf
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier

from fashion_vae import progress
from fashion_vae.dataset import CLASS_NAMES
from fashion_vae.errors import PipelineError
from fashion_vae.model import VAE, bce_per_image

LOG_2PI = math.log(2.0 * math.pi)


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# The passes below are traced with autograph=False: they hold no Python control flow on tensors,
# so the graph is the same, and AutoGraph's source rewriting of the model code they call cost
# about 1.5 s of every evaluate run.


def encode(model: VAE, x: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``z_mean`` and ``z_log_var`` for every image (deterministic: no sampling)."""

    @tf.function(reduce_retracing=True, autograph=False)
    def heads(batch):
        return model.encoder.heads(batch)

    parts = []
    with progress.bar(len(x), "encode", "images") as shown:
        for rows in _batches(len(x), batch_size):
            parts.append(heads(x[rows]))
            shown.update(rows.stop - rows.start)
    return (
        np.concatenate([p[0].numpy() for p in parts]),
        np.concatenate([p[1].numpy() for p in parts]),
    )


def decode(model: VAE, z: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Pixel probabilities for latent points ``z``."""
    decoder = tf.function(lambda batch: model.decoder(batch, training=False), reduce_retracing=True,
                          autograph=False)
    return np.concatenate([decoder(z[s]).numpy() for s in _batches(len(z), batch_size)])


def elbo_terms(model: VAE, x: np.ndarray, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """Per-image reconstruction BCE (z ~ q(z|x) and z = z_mean) and KL, in nats.

    KL is to the model's prior: closed form for N(0, I), else log q(z|x) - log p(z) at the sampled z.
    """

    @tf.function(reduce_retracing=True, autograph=False)
    def terms(batch, eps):
        z_mean, z_log_var = model.encoder.heads(batch)
        z = z_mean + tf.exp(0.5 * z_log_var) * eps
        return (
            bce_per_image(batch, model.decoder.logits(z)),
            bce_per_image(batch, model.decoder.logits(z_mean)),
            model.kl_terms(z_mean, z_log_var, z),
        )

    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((len(x), model.latent_dim)).astype(np.float32)
    parts = [terms(x[s], eps[s]) for s in _batches(len(x), batch_size)]
    sampled, at_mean, kl = (np.concatenate([p[i].numpy() for p in parts]).astype(np.float64) for i in range(3))
    return {"reconstruction": sampled, "reconstruction_at_mean": at_mean, "kl": kl}


def iwae_nll(model: VAE, x: np.ndarray, k: int, batch_size: int, seed: int) -> np.ndarray:
    """Per-image importance-weighted bound on -log p(x) with ``k`` samples from q(z|x).

    -log p(x) <= -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x). ``batch_size`` bounds
    the image x sample pairs decoded at once, so memory does not grow with k.
    """
    rng = np.random.default_rng(seed)
    images_per_step = max(1, batch_size // k)
    samples_per_step = min(k, batch_size)

    @tf.function(reduce_retracing=True, autograph=False)
    def log_weights(batch, eps):
        # batch: (B, 28, 28, 1); eps: (B, S, d) -> log w: (B, S)
        z_mean, z_log_var = model.encoder.heads(batch)
        z = z_mean[:, None, :] + tf.exp(0.5 * z_log_var)[:, None, :] * eps
        b, s, d = tf.shape(eps)[0], tf.shape(eps)[1], tf.shape(eps)[2]
        logits = model.decoder.logits(tf.reshape(z, (b * s, d)))
        targets = tf.repeat(batch, s, axis=0)
        log_px_z = -tf.reshape(bce_per_image(targets, logits), (b, s))
        log_pz = model.prior.log_prob(z)  # the model's own prior p(z)
        log_qz_x = -0.5 * tf.reduce_sum(tf.square(eps) + z_log_var[:, None, :] + LOG_2PI, axis=-1)
        return log_px_z + log_pz - log_qz_x

    out = np.empty(len(x), dtype=np.float64)
    with progress.bar(len(x) * k, f"IWAE bound, K = {k}", "samples") as shown:
        for rows in _batches(len(x), images_per_step):
            batch = x[rows]
            chunks = []
            for cols in _batches(k, samples_per_step):
                eps = rng.standard_normal((len(batch), cols.stop - cols.start, model.latent_dim)).astype(np.float32)
                chunks.append(log_weights(batch, eps).numpy().astype(np.float64))
                shown.update(len(batch) * (cols.stop - cols.start))
            log_w = np.concatenate(chunks, axis=1)
            top = log_w.max(axis=1, keepdims=True)  # log-mean-exp, stable
            out[rows] = -(top[:, 0] + np.log(np.exp(log_w - top).mean(axis=1)))
    return out


def knn_accuracy(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray, k: int) -> float:
    """Accuracy of a k-NN classifier fitted on train latents, scored on test latents."""
    classifier = KNeighborsClassifier(n_neighbors=k).fit(train_z, train_y)
    return float(classifier.score(test_z, test_y))


def silhouette(z: np.ndarray, y: np.ndarray) -> float:
    """Silhouette score of the latent points grouped by class (Euclidean)."""
    return float(silhouette_score(z, y, metric="euclidean"))


def per_class_mean(values: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {name: float(values[y == c].mean()) for c, name in enumerate(CLASS_NAMES) if np.any(y == c)}


# What `dvc exp show` lists for every experiment (the likelihood bounds, KL and latent
# class quality); the rest goes to metrics/eval_details.json. Short keys keep the table narrow.
HEADLINE = ("iwae_nll", "neg_elbo", "kl", "knn")


def split_metrics(metrics: dict) -> tuple[dict, dict]:
    """(headline, details) of :func:`evaluate`'s metrics: each number goes to exactly one file."""
    return (
        {key: metrics[key] for key in HEADLINE},
        {key: value for key, value in metrics.items() if key not in HEADLINE},
    )


def check_sizes(n_train: int, y_test: np.ndarray, knn_k: list[int]) -> None:
    """Fail before the expensive passes if the k-NN or silhouette scores cannot be computed."""
    if max(knn_k) > n_train:
        raise PipelineError(
            f"evaluate.knn_k = {max(knn_k)} is more than the {n_train} training images the k-NN "
            "classifier is fitted on; lower it or prepare more training images"
        )
    n_classes = len(np.unique(y_test))
    if not 2 <= n_classes < len(y_test):
        raise PipelineError(
            f"the test split holds {len(y_test)} images of {n_classes} classes; the silhouette score needs "
            "at least 2 classes and more images than classes (raise prepare.limit_test)"
        )


def evaluate(
    model: VAE,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    eval_params: dict,
) -> dict:
    """All test-set metrics of the evaluate stage, as a JSON-ready dict."""
    (x_train, y_train), (x_test, y_test) = train, test
    check_sizes(len(x_train), y_test, eval_params["knn_k"])
    seed, batch_size = eval_params["seed"], eval_params["batch_size"]
    terms = elbo_terms(model, x_test, batch_size, seed)
    nll = iwae_nll(model, x_test, eval_params["iwae_samples"], batch_size, seed)
    train_z, _ = encode(model, x_train, batch_size)
    test_z, _ = encode(model, x_test, batch_size)
    neg_elbo = terms["reconstruction"] + terms["kl"]
    return {
        "test_images": int(len(x_test)),
        "reconstruction": float(terms["reconstruction"].mean()),
        "kl": float(terms["kl"].mean()),
        "neg_elbo": float(neg_elbo.mean()),
        "reconstruction_at_mean": float(terms["reconstruction_at_mean"].mean()),
        "neg_elbo_at_mean": float((terms["reconstruction_at_mean"] + terms["kl"]).mean()),
        "iwae_nll": float(nll.mean()),
        "iwae_samples": int(eval_params["iwae_samples"]),
        "knn": {  # accuracy of a k-NN classifier on test z_mean, per k
            f"k{k}": knn_accuracy(train_z, y_train, test_z, y_test, k) for k in eval_params["knn_k"]
        },
        "silhouette": silhouette(test_z, y_test),
        "per_class_reconstruction": per_class_mean(terms["reconstruction"], y_test),
    }
