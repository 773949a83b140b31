"""Evaluation throughput: the ELBO pass and the IWAE pass of ``fashion_vae.evaluation``."""
from __future__ import annotations

import statistics

import numpy as np

from benchmarks.interleave import summarise
from benchmarks.machine import timed


def bench_evaluation(model, x_test: np.ndarray, eval_params: dict, n_elbo: int, n_iwae: int, reps: int) -> dict:
    """ELBO and IWAE passes with the project's evaluation functions (or a fallback)."""
    k, batch, seed = eval_params["iwae_samples"], eval_params["batch_size"], eval_params["seed"]
    try:
        from fashion_vae.evaluation import elbo_terms, iwae_nll

        source = "fashion_vae.evaluation.elbo_terms / iwae_nll"
    except ImportError:
        elbo_terms, iwae_nll = _fallback_elbo_terms, _fallback_iwae_nll
        source = "benchmarks.eval_throughput fallback (fashion_vae.evaluation missing)"
    x_elbo, x_iwae = x_test[:n_elbo], x_test[:n_iwae]
    # Each call traces its tf.function again (as the evaluate stage does): tracing is included.
    elbo_s = [timed(lambda: elbo_terms(model, x_elbo, batch, seed)) for _ in range(reps)]
    iwae_s = [timed(lambda: iwae_nll(model, x_iwae, k, batch, seed)) for _ in range(max(1, reps - 1))]
    iwae_ips = statistics.median(len(x_iwae) / s for s in iwae_s)
    return {
        "source": source,
        "elbo": {"images": len(x_elbo), "batch_size": batch, "images_per_second": summarise([len(x_elbo) / s for s in elbo_s])},
        "iwae": {
            "images": len(x_iwae),
            "k": k,
            "batch_size": batch,
            "images_per_second": summarise([len(x_iwae) / s for s in iwae_s]),
            "decoder_samples_per_second": iwae_ips * k,
            "projected_seconds_full_test_set": len(x_test) / iwae_ips,
        },
    }


def _fallback_elbo_terms(model, x, batch_size, seed):
    import tensorflow as tf

    from fashion_vae.model import bce_per_image, kl_per_image

    @tf.function(reduce_retracing=True)
    def terms(batch):
        z_mean, z_log_var, z = model.encoder(batch, training=False)
        return bce_per_image(batch, model.decoder.logits(z)), kl_per_image(z_mean, z_log_var)

    return [terms(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def _fallback_iwae_nll(model, x, k, batch_size, seed):
    import tensorflow as tf

    from fashion_vae.model import bce_per_image

    rng = np.random.default_rng(seed)

    @tf.function(reduce_retracing=True)
    def log_w(img, eps):
        z_mean, z_log_var, _ = model.encoder(img, training=False)
        z = z_mean + tf.exp(0.5 * z_log_var) * eps
        logits = model.decoder.logits(z)
        log_px = -bce_per_image(tf.repeat(img, tf.shape(eps)[0], axis=0), logits)
        return log_px - 0.5 * tf.reduce_sum(tf.square(z), -1) + 0.5 * tf.reduce_sum(tf.square(eps) + z_log_var, -1)

    out = []
    for i in range(len(x)):
        for j in range(0, k, batch_size):
            eps = rng.standard_normal((min(batch_size, k - j), model.latent_dim)).astype(np.float32)
            out.append(log_w(x[i:i + 1], eps))
    return out
