"""Held-out metrics recomputed independently with numpy; bounds that must hold."""
import keras
import numpy as np
import pytest
from scipy.special import logsumexp

from fashion_vae import evaluation, prepared
from fashion_vae.errors import PipelineError
from fashion_vae.model import build_vae

MODEL = {"latent_dim": 2, "conv_filters": [8, 16], "kernel_size": 3, "dense_units": 16, "decoder_dense_units": 0, "beta": 1.0}


@pytest.fixture(scope="module")
def trained(raw_dir):
    from fashion_vae import dataset

    x = prepared.normalise(dataset.load_raw(raw_dir, "test_images")[:300])
    keras.utils.set_random_seed(0)
    model = build_vae(MODEL, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x[:256], epochs=3, batch_size=32, verbose=0)
    return model, x[256:]


def heads(model, x):
    m, lv = model.encoder.heads(x)
    return np.asarray(m, np.float64), np.asarray(lv, np.float64)


def log_bernoulli(model, x, z):
    p = np.clip(np.asarray(model.decoder(z.astype(np.float32)), np.float64), 1e-12, 1 - 1e-12)
    xs = x.astype(np.float64).reshape(len(x), -1)
    p = p.reshape(len(p), -1)
    return (xs * np.log(p) + (1 - xs) * np.log(1 - p)).sum(axis=1)


def test_elbo_terms_match_numpy(trained):
    model, x = trained
    seed = 5
    terms = evaluation.elbo_terms(model, x, batch_size=16, seed=seed)
    m, lv = heads(model, x)
    eps = np.random.default_rng(seed).standard_normal(m.shape).astype(np.float32)
    z = m + np.exp(0.5 * lv) * eps
    np.testing.assert_allclose(terms["reconstruction"], -log_bernoulli(model, x, z), rtol=1e-4)
    np.testing.assert_allclose(terms["reconstruction_at_mean"], -log_bernoulli(model, x, m), rtol=1e-4)
    kl = 0.5 * (m**2 + np.exp(lv) - 1 - lv).sum(axis=1)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4, atol=1e-5)


def test_iwae_matches_numpy_and_bounds_the_elbo(trained):
    model, x = trained
    x = x[:8]
    k, seed = 5, 3
    got = evaluation.iwae_nll(model, x, k=k, batch_size=10, seed=seed)  # 2 images x 5 samples a step
    rng = np.random.default_rng(seed)
    m, lv = heads(model, x)
    expected = []
    for start in range(0, len(x), 2):
        eps = rng.standard_normal((2, k, 2)).astype(np.float32)
        for i in range(2):
            j = start + i
            z = m[j] + np.exp(0.5 * lv[j]) * eps[i]
            log_px = log_bernoulli(model, np.repeat(x[j : j + 1], k, axis=0), z)
            log_pz = -0.5 * (z**2 + np.log(2 * np.pi)).sum(axis=1)
            log_q = -0.5 * (((z - m[j]) ** 2) / np.exp(lv[j]) + lv[j] + np.log(2 * np.pi)).sum(axis=1)
            expected.append(-(logsumexp(log_px + log_pz - log_q) - np.log(k)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_iwae_tightens_with_k_and_stays_below_neg_elbo(trained):
    model, x = trained
    terms = evaluation.elbo_terms(model, x, batch_size=64, seed=0)
    neg_elbo = (terms["reconstruction"] + terms["kl"]).mean()
    estimates = [evaluation.iwae_nll(model, x, k=k, batch_size=400, seed=1).mean() for k in (1, 10, 100)]
    assert abs(estimates[0] - neg_elbo) < 2.0  # K = 1 is a one-sample ELBO
    assert estimates[2] < estimates[1] < estimates[0]
    assert estimates[2] <= neg_elbo


def test_iwae_memory_chunks_do_not_change_the_result(trained):
    model, x = trained
    a = evaluation.iwae_nll(model, x[:4], k=12, batch_size=4, seed=2)  # samples split across steps
    b = evaluation.iwae_nll(model, x[:4], k=12, batch_size=4, seed=2)
    assert np.array_equal(a, b)
    assert np.all(np.isfinite(a))


def test_knn_on_separable_latent_is_perfect():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0 * c, -5.0 * c] for c in range(10)])
    y_train = np.repeat(np.arange(10), 30)
    y_test = np.repeat(np.arange(10), 10)
    z_train = centres[y_train] + rng.normal(scale=0.1, size=(300, 2))
    z_test = centres[y_test] + rng.normal(scale=0.1, size=(100, 2))
    assert evaluation.knn_accuracy(z_train, y_train, z_test, y_test, 1) == 1.0
    assert evaluation.knn_accuracy(z_train, y_train, z_test, y_test, 5) == 1.0
    assert evaluation.silhouette(z_test, y_test) > 0.9
    shuffled = rng.permutation(y_test)
    assert evaluation.silhouette(z_test, shuffled) < 0.1


def test_evaluate_reports_every_metric(trained):
    model, x = trained
    y = np.arange(len(x), dtype=np.uint8) % 10
    params = {"seed": 0, "iwae_samples": 4, "batch_size": 64, "knn_k": [1, 5]}
    metrics = evaluation.evaluate(model, (x, y), (x, y), params)
    assert metrics["neg_elbo"] == pytest.approx(metrics["reconstruction"] + metrics["kl"])
    assert metrics["iwae_nll"] <= metrics["neg_elbo"] + 1.0
    assert set(metrics["knn"]) == {"k1", "k5"}
    assert metrics["knn"]["k1"] == 1.0  # test == train: each point is its own neighbour
    assert len(metrics["per_class_reconstruction"]) == 10
    assert metrics["test_images"] == len(x)
    headline, details = evaluation.split_metrics(metrics)
    assert set(headline) == set(evaluation.HEADLINE) and not set(headline) & set(details)
    assert {**headline, **details} == metrics  # every number in exactly one file


def test_sizes_are_checked_before_the_expensive_passes(trained):
    model, x = trained
    y = np.arange(len(x), dtype=np.uint8) % 10
    params = {"seed": 0, "iwae_samples": 4, "batch_size": 64, "knn_k": [1, len(x) + 1]}
    with pytest.raises(PipelineError, match=rf"evaluate\.knn_k = {len(x) + 1} is more than the {len(x)} training "
                       "images the k-NN classifier is fitted on"):
        evaluation.evaluate(model, (x, y), (x, y), params)
    with pytest.raises(PipelineError, match=r"the test split holds 10 images of 10 classes; the silhouette score "
                       r"needs at least 2 classes and more images than classes"):
        evaluation.check_sizes(len(x), np.arange(10), [1])
    with pytest.raises(PipelineError, match="holds 5 images of 1 classes"):
        evaluation.check_sizes(len(x), np.zeros(5, np.uint8), [1])
    evaluation.check_sizes(len(x), np.arange(11) % 10, [1, len(x)])
