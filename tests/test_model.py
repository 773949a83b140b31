"""The VAE: shapes, sampling, the loss against numpy, serialisation, training behaviour."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from fashion_vae import prepared, training
from fashion_vae.model import VAE, Decoder, Encoder, Sampling, build_vae

MODEL = {"latent_dim": 2, "conv_filters": [8, 16], "kernel_size": 3, "dense_units": 16, "decoder_dense_units": 0, "beta": 1.0}
TRAIN = {
    "seed": 3, "epochs": 2, "batch_size": 32, "learning_rate": 0.003, "lr_schedule": "constant",
    "warmup_epochs": 0, "steps_per_execution": 1, "threads": 2, "distribute": "none",
}


@pytest.fixture(scope="module")
def real_images(small_real_images):
    return small_real_images


@pytest.fixture(scope="module")
def small_real_images(raw_dir):
    from fashion_vae import dataset

    images = dataset.load_raw(raw_dir, "train_images")[:320]
    return prepared.normalise(images)


@pytest.mark.parametrize("latent_dim", [2, 8])
def test_encoder_and_decoder_shapes(latent_dim):
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    encoder = Encoder(latent_dim=latent_dim, conv_filters=[32, 64], dense_units=16, seed=1)
    z_mean, z_log_var, z = encoder(x)
    assert z_mean.shape == z_log_var.shape == z.shape == (5, latent_dim)
    decoder = Decoder(latent_dim=latent_dim, conv_filters=[32, 64])
    out = np.asarray(decoder(z))
    assert out.shape == (5, 28, 28, 1)
    assert np.all((out > 0) & (out < 1))
    assert decoder.logits(z).shape == (5, 28, 28, 1)


def test_decoder_hidden_layer():
    z = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    seed_decoder = Decoder(latent_dim=2, conv_filters=[8, 16])
    seed_decoder(z)
    assert seed_decoder.hidden is None
    assert seed_decoder.project.kernel.shape == (2, 7 * 7 * 16)
    decoder = Decoder(latent_dim=2, conv_filters=[8, 16], dense_units=24)
    assert decoder(z).shape == (4, 28, 28, 1)
    assert decoder.hidden.kernel.shape == (2, 24)
    assert decoder.project.kernel.shape == (24, 7 * 7 * 16)
    # The projection sees ReLU(z W + b), computed here with numpy.
    w, b = (np.asarray(v) for v in decoder.hidden.weights)
    np.testing.assert_allclose(decoder.hidden(z), np.maximum(z @ w + b, 0), rtol=1e-5, atol=1e-6)
    assert len(decoder.trainable_weights) == len(seed_decoder.trainable_weights) + 2


def test_sampling_moments_and_gradients():
    layer = Sampling(seed=0)
    mean = tf.Variable(np.full((20_000, 2), [1.5, -2.0], np.float32))
    log_var = tf.Variable(np.full((20_000, 2), [np.log(0.25), np.log(4.0)], np.float32))
    with tf.GradientTape() as tape:
        z = layer([mean, log_var])
        total = tf.reduce_sum(z)
    z = z.numpy()
    np.testing.assert_allclose(z.mean(axis=0), [1.5, -2.0], atol=0.05)
    np.testing.assert_allclose(z.var(axis=0), [0.25, 4.0], rtol=0.05)
    grad_mean, grad_log_var = tape.gradient(total, [mean, log_var])
    np.testing.assert_allclose(grad_mean.numpy(), 1.0)  # dz/dmean = 1
    assert np.all(grad_log_var.numpy() != 0)  # dz/dlog_var = 0.5 * sigma * eps


def test_sampling_is_seeded():
    m, lv = np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32)
    assert np.array_equal(Sampling(seed=5)([m, lv]), Sampling(seed=5)([m, lv]))
    assert not np.array_equal(Sampling(seed=5)([m, lv]), Sampling(seed=6)([m, lv]))


def numpy_losses(model, x, eps, beta):
    """Reconstruction BCE, KL and loss from the model's heads, computed with numpy."""
    z_mean, z_log_var = (np.asarray(t, np.float64) for t in model.encoder.heads(x))
    z = z_mean + np.exp(0.5 * z_log_var) * eps
    p = np.clip(np.asarray(model.decoder(z.astype(np.float32)), np.float64), 1e-12, 1 - 1e-12)
    xs = x.astype(np.float64)
    bce = -(xs * np.log(p) + (1 - xs) * np.log(1 - p)).reshape(len(x), -1).sum(axis=1)
    kl = -0.5 * (1 + z_log_var - z_mean**2 - np.exp(z_log_var)).sum(axis=1)
    return bce.mean(), kl.mean(), bce.mean() + beta * kl.mean()


@pytest.mark.parametrize("step", ["train_step", "test_step"])
def test_step_losses_match_numpy(real_images, step):
    x = real_images[:16]
    beta, seed = 0.7, 11
    model = build_vae({**MODEL, "beta": beta}, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    # A fresh generator with the model's seed draws the eps the model will draw first.
    eps = np.asarray(keras.random.normal((16, 2), seed=keras.random.SeedGenerator(seed)), np.float64)
    expected = numpy_losses(model, x, eps, beta)  # before train_step changes the weights
    result = getattr(model, step)(tf.constant(x))
    got = (float(result["reconstruction_loss"]), float(result["kl_loss"]), float(result["loss"]))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("decoder_dense_units", [0, 24])
def test_save_load_round_trip(tmp_path, real_images, decoder_dense_units):
    model = build_vae({**MODEL, "decoder_dense_units": decoder_dense_units}, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(real_images[:64], epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "vae.keras"
    training.save_model(model, path)
    loaded = keras.saving.load_model(path)  # default safe_mode
    assert isinstance(loaded, VAE) and loaded.get_config() == model.get_config()
    x = real_images[:8]
    np.testing.assert_array_equal(loaded.encoder(x)[0], model.encoder(x)[0])
    z = np.asarray(model.encoder(x)[0])
    np.testing.assert_array_equal(loaded.decoder(z), model.decoder(z))


def test_saved_file_has_no_timestamps(tmp_path):
    import json
    import zipfile

    model = build_vae(MODEL, seed=1)
    training.save_model(model, tmp_path / "a.keras")
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
    training.save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()


def test_short_training_lowers_the_loss(real_images):
    model, summary = training.train(MODEL, TRAIN, real_images[:256], real_images[256:], verbose=0)
    fresh = build_vae(MODEL, seed=TRAIN["seed"])
    fresh.compile()
    before = fresh.evaluate(real_images[256:], batch_size=32, verbose=0, return_dict=True)["loss"]
    assert summary["val"]["loss"] < before - 25  # seeded: ~543 -> ~495 nats
    assert summary["epochs"] == 2 and summary["train_images_per_second"] > 0
    headline, details = training.split_summary(summary)
    assert headline == {"train": {"loss": summary["train"]["loss"]}, "val": {"loss": summary["val"]["loss"]}}
    assert details["epochs"] == 2 and set(details["val"]) == {"reconstruction_loss", "kl_loss"}


def weights_of(params_train, images):
    model, _ = training.train(MODEL, params_train, images[:256], images[256:], verbose=0)
    return [w.numpy() for w in model.weights]


def test_same_seed_same_weights_other_seed_differs(real_images):
    a = weights_of(TRAIN, real_images)
    b = weights_of(TRAIN, real_images)
    c = weights_of({**TRAIN, "seed": 4}, real_images)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_non_finite_loss_stops_with_clear_error(real_images):
    x = real_images[:256].copy()
    x[7, 3, 3, 0] = np.nan
    with pytest.raises(training.NonFiniteLossError, match=r"training diverged at epoch 1: non-finite loss \(.*loss=nan"):
        training.train(MODEL, TRAIN, x, real_images[256:], verbose=0)


def test_ctrl_c_that_keras_swallowed_still_stops_training_at_the_next_batch(real_images, monkeypatch):
    """Keras converts each batch's logs in a bare `except:`, which swallows a KeyboardInterrupt raised
    there; the recorded Ctrl-C (errors.interrupt_requested) stops the run at the end of that batch."""
    batches = []

    class CountBatches(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            batches.append(batch)

    monkeypatch.setattr(training, "interrupt_requested", lambda: len(batches) >= 2)
    with pytest.raises(KeyboardInterrupt):
        training.train(MODEL, {**TRAIN, "epochs": 3}, real_images[:256], real_images[256:],
                       callbacks=[CountBatches()], verbose=0)
    assert batches == [0, 1]


def test_batch_larger_than_data(real_images):
    from fashion_vae.errors import PipelineError

    with pytest.raises(PipelineError, match=r"train\.batch_size = 512 is larger than the 256 training images"):
        training.train(MODEL, {**TRAIN, "batch_size": 512}, real_images[:256], real_images[256:], verbose=0)


def test_cosine_schedule_warms_up_then_decays():
    schedule = training.learning_rate({**TRAIN, "lr_schedule": "cosine", "warmup_epochs": 1, "epochs": 4}, 10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(0.0015) and rates[2] == pytest.approx(0.003)
    assert rates[2] > rates[3] > rates[4] >= 0.0
    assert training.learning_rate(TRAIN, 10) == 0.003


def test_load_model_checks_params(tmp_path):
    model = build_vae(MODEL, seed=1)
    training.save_model(model, tmp_path / "m.keras")
    from fashion_vae.errors import PipelineError

    with pytest.raises(PipelineError, match=r"model has latent_dim = 2 but params.yaml has model.latent_dim = 4"):
        training.load_model(tmp_path / "m.keras", {**MODEL, "latent_dim": 4})
    with pytest.raises(PipelineError, match=r"decoder_dense_units = 0 but params.yaml has model.decoder_dense_units = 64"):
        training.load_model(tmp_path / "m.keras", {**MODEL, "decoder_dense_units": 64})
    (tmp_path / "bad.keras").write_bytes((tmp_path / "m.keras").read_bytes()[:500])
    with pytest.raises(PipelineError, match="bad.keras: not a loadable Keras model"):
        training.load_model(tmp_path / "bad.keras")


def test_defaults_are_the_standard_normal_elbo():
    """Today's model: N(0, I) prior (no weights, closed-form KL), ELBO objective."""
    model = build_vae(MODEL, seed=1)
    config = model.get_config()
    assert (config["prior"], config["objective"], config["iwae_samples"]) == ("normal", "elbo", 1)
    assert model.prior.analytic_kl and not model.prior.weights
    assert len(model.weights) == len(model.encoder.weights) + len(model.decoder.weights)
