"""Learned priors, the IWAE objective and mixed precision, each checked against numpy."""

import copy
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from scipy.special import logsumexp, softmax

from fashion_vae import evaluation, params, prepared, training
from fashion_vae.errors import PipelineError
from fashion_vae.model import VAE, build_vae, precision_policy
from fashion_vae.priors import GaussianMixturePrior, StandardNormalPrior, VampPrior

MODEL = {
    "latent_dim": 2,
    "conv_filters": [8, 16],
    "kernel_size": 3,
    "dense_units": 16,
    "decoder_dense_units": 0,
    "beta": 1.0,
    "prior": "normal",
    "prior_components": 4,
}
TRAIN = {
    "seed": 3,
    "epochs": 1,
    "batch_size": 32,
    "learning_rate": 0.003,
    "lr_schedule": "constant",
    "warmup_epochs": 0,
    "steps_per_execution": 1,
    "threads": 2,
    "distribute": "none",
    "objective": "elbo",
    "iwae_samples": 1,
    "precision": "float32",
}
LOG_2PI = np.log(2 * np.pi)
VARIANTS = [
    ("normal", "elbo", 1),
    ("mixture", "elbo", 1),
    ("vamp", "elbo", 1),
    ("normal", "iwae", 3),
    ("mixture", "iwae", 3),
    ("vamp", "iwae", 2),
]


@pytest.fixture(scope="module")
def images(raw_dir):
    from fashion_vae import dataset

    return prepared.normalise(dataset.load_raw(raw_dir, "train_images")[:96])


def np_diag_normal(z, mean, log_var):
    return -0.5 * (((z - mean) ** 2) / np.exp(log_var) + log_var + LOG_2PI).sum(axis=-1)


def np_mixture(z, log_weights, means, log_vars):
    """log sum_c w_c N(z; mu_c, sigma_c^2), one component at a time (no broadcasting tricks)."""
    per = np.stack([np_diag_normal(z, means[c], log_vars[c]) for c in range(len(means))], axis=-1)
    return logsumexp(per + log_weights, axis=-1)


def mixture_with(means, log_vars, logits):
    prior = GaussianMixturePrior(latent_dim=means.shape[1], num_components=len(means), seed=0)
    prior.build()
    prior.means.assign(means)
    prior.log_vars.assign(log_vars)
    prior.logits.assign(logits)
    return prior


def test_standard_normal_log_prob_and_samples():
    prior = StandardNormalPrior(latent_dim=3)
    z = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_allclose(prior.log_prob(z), np_diag_normal(z, 0.0, 0.0), rtol=1e-6)
    s = np.asarray(prior.sample(20_000, seed=1))
    np.testing.assert_allclose(s.mean(0), 0, atol=0.03)
    np.testing.assert_allclose(s.std(0), 1, atol=0.03)


def test_mixture_log_density_matches_numpy():
    rng = np.random.default_rng(1)
    means, log_vars = rng.normal(size=(5, 3)), rng.normal(scale=0.5, size=(5, 3))
    logits = rng.normal(size=5)
    prior = mixture_with(means, log_vars, logits)
    z = rng.normal(scale=2, size=(4, 6, 3)).astype(np.float32)  # any leading shape: (B, K, d)
    expected = np_mixture(z.astype(np.float64), np.log(softmax(logits)), means, log_vars)
    got = np.asarray(prior.log_prob(z))
    assert got.shape == (4, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # One component with mean 0, variance 1 is the standard normal.
    single = mixture_with(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros(1))
    np.testing.assert_allclose(single.log_prob(z), StandardNormalPrior(3).log_prob(z), rtol=1e-6)


def test_mixture_samples_follow_the_weights_and_are_seeded():
    means = np.array([[-20.0, 0.0], [0.0, 0.0], [20.0, 5.0]])
    prior = mixture_with(means, np.log(np.full((3, 2), 0.25)), np.log([0.2, 0.3, 0.5]))
    s = np.asarray(prior.sample(30_000, seed=4))
    which = np.argmin(((s[:, None, :] - means) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(np.bincount(which, minlength=3) / len(s), [0.2, 0.3, 0.5], atol=0.015)
    np.testing.assert_allclose(s[which == 2].mean(0), [20, 5], atol=0.02)
    np.testing.assert_allclose(s[which == 2].std(0), [0.5, 0.5], atol=0.02)
    np.testing.assert_array_equal(prior.sample(10, seed=4), prior.sample(10, seed=4))
    assert not np.array_equal(prior.sample(10, seed=4), prior.sample(10, seed=5))


def test_vamp_prior_is_the_encoder_posterior_mixture(images):
    model = build_vae({**MODEL, "prior": "vamp", "prior_components": 3}, seed=2)
    prior = model.prior
    assert isinstance(prior, VampPrior)
    pseudo = np.asarray(prior.pseudo_inputs())
    assert pseudo.shape == (3, 28, 28, 1) and np.all((pseudo > 0) & (pseudo < 1))
    means, log_vars = (np.asarray(t, np.float64) for t in model.encoder.heads(pseudo))
    z = np.random.default_rng(3).normal(size=(9, 2)).astype(np.float32)
    np.testing.assert_allclose(
        prior.log_prob(z), np_mixture(z, np.full(3, -np.log(3)), means, log_vars), rtol=1e-5
    )
    # The encoder's weights are the model's, held once: the prior adds only its pseudo-images.
    assert len(model.weights) == len(build_vae(MODEL, seed=2).weights) + 1


def heads(model, x):
    return tuple(np.asarray(t, np.float64) for t in model.encoder.heads(x))


def np_log_px(model, x, z):
    p = np.clip(np.asarray(model.decoder(z.astype(np.float32)), np.float64), 1e-12, 1 - 1e-12)
    xs = x.astype(np.float64).reshape(len(x), -1)
    p = p.reshape(len(p), -1)
    return (xs * np.log(p) + (1 - xs) * np.log(1 - p)).sum(axis=1)


def np_prior(model, z):
    """log p(z) of the model's mixture prior, from its weights, with numpy."""
    prior = model.prior
    if isinstance(prior, VampPrior):
        means, log_vars = heads(model, np.asarray(prior.pseudo_inputs()))
        return np_mixture(z, np.full(len(means), -np.log(len(means))), means, log_vars)
    logits = np.asarray(prior.logits, np.float64)
    return np_mixture(
        z,
        np.log(softmax(logits)),
        np.asarray(prior.means, np.float64),
        np.asarray(prior.log_vars, np.float64),
    )


def first_eps(seed, shape):
    # A fresh generator with the model's seed draws the eps the model's Sampling draws first.
    return np.asarray(keras.random.normal(shape, seed=keras.random.SeedGenerator(seed)), np.float64)


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_monte_carlo_kl_matches_numpy(images, prior):
    x, seed, beta = images[:16], 7, 0.6
    model = build_vae({**MODEL, "prior": prior, "beta": beta}, seed=seed)
    m, lv = heads(model, x)
    z = m + np.exp(0.5 * lv) * first_eps(seed, (16, 2))
    kl = np_diag_normal(z, m, lv) - np_prior(model, z)
    bce = -np_log_px(model, x, z)
    result = model.test_step(tf.constant(x))
    np.testing.assert_allclose(float(result["kl_loss"]), kl.mean(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(result["reconstruction_loss"]), bce.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(result["loss"]), bce.mean() + beta * kl.mean(), rtol=1e-4)


def test_monte_carlo_kl_averages_to_the_closed_form():
    """With a 1-component N(0, I) mixture the Monte Carlo KL is unbiased for the analytic one."""
    model = build_vae({**MODEL, "prior": "mixture", "prior_components": 1}, seed=0)
    model.prior.means.assign(np.zeros((1, 2)))
    mean = np.tile([[0.8, -1.5]], (50_000, 1)).astype(np.float32)
    log_var = np.tile([[np.log(0.3), np.log(2.0)]], (50_000, 1)).astype(np.float32)
    z = model.encoder.sampling([mean, log_var])
    analytic = np.asarray(build_vae(MODEL, seed=0).kl_terms(mean, log_var, z))
    mc = np.asarray(model.kl_terms(mean, log_var, z))
    assert np.allclose(analytic, analytic[0]) and not np.allclose(mc, mc[0])
    assert abs(mc.mean() - analytic[0]) < 0.02, (mc.mean(), analytic[0])


@pytest.mark.parametrize("prior", ["normal", "mixture"])
def test_iwae_loss_matches_numpy(images, prior):
    x, k, seed = images[:8], 4, 9
    model = build_vae({**MODEL, "prior": prior}, seed=seed, objective="iwae", iwae_samples=k)
    m, lv = heads(model, x)
    eps = first_eps(seed, (8 * k, 2)).reshape(8, k, 2)  # image-major, as the model repeats
    expected = []
    for i in range(8):
        z = m[i] + np.exp(0.5 * lv[i]) * eps[i]
        log_pz = np_diag_normal(z, 0.0, 0.0) if prior == "normal" else np_prior(model, z)
        log_w = (
            np_log_px(model, np.repeat(x[i : i + 1], k, axis=0), z) + log_pz - np_diag_normal(z, m[i], lv[i])
        )
        expected.append(-(logsumexp(log_w) - np.log(k)))
    result = model.test_step(tf.constant(x))
    np.testing.assert_allclose(float(result["loss"]), np.mean(expected), rtol=1e-4)


@pytest.mark.parametrize("prior", ["normal", "mixture", "vamp"])
def test_iwae_with_one_sample_is_the_monte_carlo_elbo(images, prior):
    x, beta, seed = images[:16], 0.8, 5
    iwae = build_vae({**MODEL, "prior": prior, "beta": beta}, seed=seed, objective="iwae", iwae_samples=1)
    elbo = build_vae({**MODEL, "prior": prior, "beta": beta}, seed=seed)
    elbo.set_weights(iwae.get_weights())  # initial weights come from Keras' global generator
    got, want = iwae.test_step(tf.constant(x)), elbo.test_step(tf.constant(x))
    np.testing.assert_allclose(
        float(got["loss"]), float(got["reconstruction_loss"]) + beta * float(got["kl_loss"]), rtol=1e-6
    )
    np.testing.assert_allclose(
        float(got["reconstruction_loss"]), float(want["reconstruction_loss"]), rtol=1e-6
    )
    if prior != "normal":  # same z, same Monte Carlo KL
        np.testing.assert_allclose(float(got["kl_loss"]), float(want["kl_loss"]), rtol=1e-5, atol=1e-5)
        return
    # N(0, I): the ELBO objective keeps the closed form; the IWAE one estimates it at z.
    m, lv = heads(iwae, x)
    z = m + np.exp(0.5 * lv) * first_eps(seed, (16, 2))
    np.testing.assert_allclose(
        float(got["kl_loss"]),
        (np_diag_normal(z, m, lv) - np_diag_normal(z, 0.0, 0.0)).mean(),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("prior,objective,k", VARIANTS)
def test_gradients_are_finite_and_reach_the_prior(images, prior, objective, k):
    model = build_vae({**MODEL, "prior": prior}, seed=1, objective=objective, iwae_samples=k)
    with tf.GradientTape() as tape:
        loss, _, _ = model.compute_losses(tf.constant(images[:16]), training=True)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    own = {id(w) for w in model.prior.trainable_weights}
    for w, g in zip(model.trainable_weights, grads):
        if id(w) in own:
            assert np.any(np.asarray(g) != 0), w.name


@pytest.mark.parametrize("prior,objective,k", VARIANTS)
def test_save_and_load_each_variant(tmp_path, images, prior, objective, k):
    model_params = {**MODEL, "prior": prior}
    model = build_vae(model_params, seed=1, objective=objective, iwae_samples=k)
    # Weights moved off their seeded initial values, so a load that re-initialised any of them
    # would differ (test_model's round trip covers a trained, compiled model).
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    path = tmp_path / "vae.keras"
    training.save_model(model, path)
    loaded = training.load_model(path, model_params)  # Keras safe mode
    assert isinstance(loaded, VAE) and loaded.get_config() == model.get_config()
    assert type(loaded.prior) is type(model.prior)
    assert (loaded.objective, loaded.iwae_samples, loaded.prior_components) == (objective, k, 4)
    z = np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.prior.log_prob(z), model.prior.log_prob(z))
    np.testing.assert_array_equal(loaded.prior.sample(5, seed=3), model.prior.sample(5, seed=3))
    np.testing.assert_array_equal(loaded.encoder.heads(images[:4])[0], model.encoder.heads(images[:4])[0])
    other = "mixture" if prior != "mixture" else "normal"
    with pytest.raises(
        PipelineError, match=rf"model has prior = {prior} but params.yaml has model.prior = {other}"
    ):
        training.load_model(path, {**model_params, "prior": other})
    with pytest.raises(
        PipelineError, match=r"prior_components = 4 but params.yaml has model.prior_components = 9"
    ):
        training.load_model(path, {**model_params, "prior_components": 9})


def test_mixed_bfloat16_computes_in_bfloat16_with_float32_losses(images):
    assert keras.mixed_precision.global_policy().name == "float32"
    with precision_policy("mixed_bfloat16"):
        model = build_vae({**MODEL, "prior": "mixture"}, seed=1, objective="iwae", iwae_samples=2)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert (
        model.encoder.convs[0].compute_dtype == "bfloat16"
        and model.encoder.convs[0].kernel.dtype == "float32"
    )
    assert model.prior.compute_dtype == "float32" and model.encoder.sampling.compute_dtype == "float32"
    loss, reconstruction, kl = model.compute_losses(tf.constant(images[:8]))
    assert loss.dtype == reconstruction.dtype == kl.dtype == tf.float32
    float32 = build_vae({**MODEL, "prior": "mixture"}, seed=1, objective="iwae", iwae_samples=2)
    float32.set_weights(model.get_weights())
    reference = float(float32.compute_losses(tf.constant(images[:8]))[0])
    assert abs(float(loss) - reference) < 0.02 * abs(reference)  # bfloat16 rounding only


def test_precision_policy_never_leaks(images):
    with pytest.raises(RuntimeError, match="boom"):
        with precision_policy("mixed_bfloat16"):
            raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == "float32"
    model, summary = training.train(
        {**MODEL, "prior": "mixture"},
        {**TRAIN, "precision": "mixed_bfloat16"},
        images[:64],
        images[64:],
        verbose=0,
    )
    assert keras.mixed_precision.global_policy().name == "float32"
    # Saved and evaluated as float32: same config, float32 compute everywhere.
    assert model.dtype_policy.name == "float32" and model.encoder.convs[0].compute_dtype == "float32"
    assert np.isfinite(summary["val"]["loss"])
    assert build_vae(MODEL, seed=0).encoder.convs[0].compute_dtype == "float32"


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_are_reproducible(images, precision):
    """Same seed, same machine type: the same float32 weights (op determinism holds in 16 bits too)."""

    def weights():
        model, summary = training.train(
            {**MODEL, "prior": "mixture"},
            {**TRAIN, "precision": precision},
            images[:64],
            images[64:],
            verbose=0,
        )
        assert np.isfinite(summary["train"]["loss"])
        return [w.numpy() for w in model.weights]

    a, b = weights(), weights()
    assert all(u.dtype != np.float16 and np.array_equal(u, v) for u, v in zip(a, b))


def test_evaluation_uses_the_models_prior(images):
    model = build_vae({**MODEL, "prior": "mixture"}, seed=4)
    x, seed = images[:10], 6
    terms = evaluation.elbo_terms(model, x, batch_size=4, seed=seed)
    m, lv = heads(model, x)
    z = m + np.exp(0.5 * lv) * np.random.default_rng(seed).standard_normal(m.shape).astype(np.float32)
    np.testing.assert_allclose(
        terms["kl"], np_diag_normal(z, m, lv) - np_prior(model, z), rtol=1e-4, atol=1e-4
    )
    k = 5
    got = evaluation.iwae_nll(model, x[:2], k=k, batch_size=10, seed=seed)
    eps = np.random.default_rng(seed).standard_normal((2, k, 2)).astype(np.float32)
    for i in range(2):
        zi = m[i] + np.exp(0.5 * lv[i]) * eps[i]
        log_w = (
            np_log_px(model, np.repeat(x[i : i + 1], k, 0), zi)
            + np_prior(model, zi)
            - np_diag_normal(zi, m[i], lv[i])
        )
        np.testing.assert_allclose(got[i], -(logsumexp(log_w) - np.log(k)), rtol=1e-4)


DEFAULTS = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())


def test_defaults_are_the_frontiers_choice():
    """docs/frontier.md: the learned mixture prior, trained on the ELBO in float32."""
    assert (DEFAULTS["model"]["prior"], DEFAULTS["model"]["prior_components"]) == ("mixture", 10)
    assert (DEFAULTS["train"]["objective"], DEFAULTS["train"]["iwae_samples"]) == ("elbo", 1)
    assert DEFAULTS["train"]["precision"] == "float32"


@pytest.mark.parametrize(
    "section,key,value,message",
    [
        (
            "model",
            "prior",
            "laplace",
            r"model\.prior = 'laplace' is invalid; expected one of 'normal', 'mixture', 'vamp'",
        ),
        (
            "model",
            "prior_components",
            0,
            r"model\.prior_components = 0 is invalid; expected an integer in \[1, 1000\]",
        ),
        ("train", "objective", "vi", r"train\.objective = 'vi' is invalid; expected one of 'elbo', 'iwae'"),
        ("train", "iwae_samples", 0, r"train\.iwae_samples = 0 is invalid"),
        (
            "train",
            "precision",
            "float16",
            r"train\.precision = 'float16' is invalid; expected one of 'float32', "
            r"'mixed_bfloat16', 'mixed_float16'",
        ),
    ],
)
def test_params_refuse_bad_values(section, key, value, message):
    raw = copy.deepcopy(DEFAULTS)
    raw[section][key] = value
    with pytest.raises(PipelineError, match=message):
        params.validate(raw)


def test_params_refuse_samples_the_elbo_ignores():
    raw = copy.deepcopy(DEFAULTS)
    raw["train"]["iwae_samples"] = 8
    with pytest.raises(
        PipelineError, match=r"train\.iwae_samples = 8 has no effect with train\.objective = 'elbo'"
    ):
        params.validate(raw)
    raw["train"]["objective"] = "iwae"
    assert params.validate(raw)["train"]["iwae_samples"] == 8
