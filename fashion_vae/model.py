"""The convolutional VAE: Sampling layer, Encoder, Decoder and the VAE model.

Follows the keras.io VAE example (2 strided convs -> dense -> z_mean / z_log_var;
dense -> 7x7xC -> 2 strided transposed convs -> sigmoid), with every size a
parameter, serialisable classes, and a loss computed from logits for stability.

The prior p(z) is a layer of its own (fashion_vae/priors.py): the standard normal
(analytic KL, the keras.io example's loss), or a learned one whose KL is estimated at
the sampled z. Training maximises the ELBO or, with ``objective="iwae"``, the
importance-weighted bound with K samples per image. Losses and log-densities are
computed in float32 under a mixed-precision policy too.
"""
from __future__ import annotations

import contextlib
import math

# The package's __init__ has set the backend and TensorFlow's CPU options by now.
from fashion_vae import quiet_tensorflow  # noqa: F401  (first: loads TensorFlow without start-up noise)
import keras  # noqa: E402
import tensorflow as tf
from keras import layers, ops

from fashion_vae.priors import PRIORS, as_float32, diagonal_normal_log_prob, make_prior

PACKAGE = "fashion_vae"
IMAGE_SHAPE = (28, 28, 1)
OBJECTIVES = ("elbo", "iwae")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Model keys older callers may leave out (the params file always has them).
MODEL_DEFAULTS = {"prior": "normal", "prior_components": 10}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(layers.Layer):
    """Reparameterisation trick: z = mean + exp(0.5 * log_var) * eps, eps ~ N(0, I).

    ``eps`` comes from a seeded :class:`keras.random.SeedGenerator`, so draws are
    reproducible and gradients flow to both ``mean`` and ``log_var``.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Encoder(keras.Model):
    """x -> (z_mean, z_log_var, z): strided Conv2D+ReLU layers, a dense layer, two heads."""

    def __init__(
        self,
        latent_dim: int = 2,
        conv_filters: tuple[int, ...] = (32, 64),
        kernel_size: int = 3,
        dense_units: int = 16,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.conv_filters = list(conv_filters)
        self.kernel_size = kernel_size
        self.dense_units = dense_units
        self.seed = seed
        self.convs = [
            layers.Conv2D(f, kernel_size, strides=2, padding="same", activation="relu", name=f"conv{i}")
            for i, f in enumerate(self.conv_filters)
        ]
        self.flatten = layers.Flatten()
        self.hidden = layers.Dense(dense_units, activation="relu", name="hidden")
        self.z_mean = layers.Dense(latent_dim, name="z_mean")
        self.z_log_var = layers.Dense(latent_dim, name="z_log_var")
        # float32 even under mixed precision: z feeds the float32 log-densities.
        self.sampling = Sampling(seed, name="sampling", dtype="float32")

    def build(self, input_shape=(None, *IMAGE_SHAPE)):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        flat = (shape[0], shape[1] * shape[2] * shape[3])
        self.hidden.build(flat)
        self.z_mean.build((None, self.dense_units))
        self.z_log_var.build((None, self.dense_units))
        self.built = True

    def heads(self, x):
        """(z_mean, z_log_var) of q(z|x), without drawing a sample."""
        h = x
        for conv in self.convs:
            h = conv(h)
        h = self.hidden(self.flatten(h))
        return self.z_mean(h), self.z_log_var(h)

    def call(self, x, training=None):
        z_mean, z_log_var = self.heads(x)
        return z_mean, z_log_var, self.sampling([z_mean, z_log_var])

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "conv_filters": self.conv_filters,
            "kernel_size": self.kernel_size,
            "dense_units": self.dense_units,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class Decoder(keras.Model):
    """z -> image probabilities: dense to 7x7xC, strided Conv2DTranspose+ReLU, sigmoid.

    ``dense_units`` > 0 adds a hidden Dense+ReLU layer before the projection, mirroring
    the encoder's. Without it the 7x7xC map is ReLU of an affine function of z, so a
    2-D latent can only move it along two directions; 0 is the seed's decoder.
    """

    def __init__(
        self,
        latent_dim: int = 2,
        conv_filters: tuple[int, ...] = (32, 64),
        kernel_size: int = 3,
        dense_units: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.conv_filters = list(conv_filters)
        self.kernel_size = kernel_size
        self.dense_units = dense_units
        self.hidden = layers.Dense(dense_units, activation="relu", name="hidden") if dense_units else None
        # Mirror of the encoder: widest map first, so 7x7xC -> 14x14 -> 28x28.
        filters = self.conv_filters[::-1]
        side = IMAGE_SHAPE[0] // 2 ** len(filters)
        self.map_shape = (side, side, filters[0])
        self.project = layers.Dense(side * side * filters[0], activation="relu", name="project")
        self.reshape = layers.Reshape(self.map_shape)
        self.deconvs = [
            layers.Conv2DTranspose(f, kernel_size, strides=2, padding="same", activation="relu", name=f"deconv{i}")
            for i, f in enumerate(filters)
        ]
        # Linear output layer: the loss uses these logits (stable BCE); call() applies sigmoid.
        self.to_logits = layers.Conv2DTranspose(1, kernel_size, padding="same", name="logits")

    def build(self, input_shape=None):
        if self.hidden is not None:
            self.hidden.build((None, self.latent_dim))
        self.project.build((None, self.dense_units or self.latent_dim))
        shape = (None, *self.map_shape)
        for deconv in self.deconvs:
            deconv.build(shape)
            shape = deconv.compute_output_shape(shape)
        self.to_logits.build(shape)
        self.built = True

    def logits(self, z):
        if self.hidden is not None:
            z = self.hidden(z)
        h = self.reshape(self.project(z))
        for deconv in self.deconvs:
            h = deconv(h)
        return self.to_logits(h)

    def call(self, z, training=None):
        return ops.sigmoid(self.logits(z))

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "conv_filters": self.conv_filters,
            "kernel_size": self.kernel_size,
            "dense_units": self.dense_units,
        }


def bce_per_image(x, logits):
    """Binary cross-entropy summed over pixels, one value per image (nats)."""
    return ops.sum(ops.binary_crossentropy(x, logits, from_logits=True), axis=(1, 2, 3))


def kl_per_image(z_mean, z_log_var):
    """KL(q(z|x) || N(0, I)) in closed form, one value per image (nats)."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """Encoder + decoder + prior, trained on reconstruction BCE + beta * KL (or the IWAE bound).

    ``objective="iwae"`` decodes ``iwae_samples`` (K) z per image in one batch of B*K and
    minimises -log (1/K) sum_k p(x|z_k) p(z_k)^beta / q(z_k|x)^beta; with beta = 1 that is
    the importance-weighted bound, and with K = 1 it is the ELBO with the Monte Carlo KL.
    """

    def __init__(
        self,
        latent_dim: int = 2,
        conv_filters: tuple[int, ...] = (32, 64),
        kernel_size: int = 3,
        dense_units: int = 16,
        beta: float = 1.0,
        seed: int | None = None,
        decoder_dense_units: int = 0,
        prior: str = "normal",
        prior_components: int = 10,
        objective: str = "elbo",
        iwae_samples: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if prior not in PRIORS or objective not in OBJECTIVES or iwae_samples < 1 or prior_components < 1:
            raise ValueError(
                f"VAE: bad prior={prior!r}/{prior_components}, objective={objective!r}/{iwae_samples}"
            )
        self.latent_dim = latent_dim
        self.conv_filters = list(conv_filters)
        self.kernel_size = kernel_size
        self.dense_units = dense_units
        self.decoder_dense_units = decoder_dense_units
        self.beta = float(beta)
        self.seed = seed
        self.encoder = Encoder(latent_dim, conv_filters, kernel_size, dense_units, seed, name="encoder")
        self.decoder = Decoder(latent_dim, conv_filters, kernel_size, decoder_dense_units, name="decoder")
        self.prior_name = prior
        self.prior_components = prior_components
        self.objective = objective
        self.iwae_samples = iwae_samples
        self.prior = make_prior(prior, latent_dim, prior_components, seed, name="prior")
        if prior == "vamp":
            self.prior.use_encoder(self.encoder.heads)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    def build(self, input_shape=(None, *IMAGE_SHAPE)):
        self.encoder.build(input_shape)
        self.decoder.build((None, self.latent_dim))
        self.prior.build()
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def call(self, x, training=None):
        """Reconstruction probabilities for ``x`` (through a sampled z)."""
        _, _, z = self.encoder(x, training=training)
        return self.decoder(z, training=training)

    def kl_terms(self, z_mean, z_log_var, z):
        """KL(q(z|x) || p(z)) per image: closed form for N(0, I), else log q(z|x) - log p(z) at z."""
        z_mean, z_log_var = as_float32(z_mean), as_float32(z_log_var)
        if self.prior.analytic_kl:
            return kl_per_image(z_mean, z_log_var)
        return diagonal_normal_log_prob(as_float32(z), z_mean, z_log_var) - self.prior.log_prob(z)

    def compute_losses(self, x, training=None):
        """Batch means of the loss (beta-weighted negative ELBO or IWAE bound), reconstruction BCE and KL."""
        if self.objective == "iwae":
            return self._iwae_losses(x)
        z_mean, z_log_var, z = self.encoder(x, training=training)
        reconstruction = ops.mean(bce_per_image(x, as_float32(self.decoder.logits(z))))
        kl = ops.mean(self.kl_terms(z_mean, z_log_var, z))
        return reconstruction + self.beta * kl, reconstruction, kl

    def _iwae_losses(self, x):
        """The K-sample bound; reconstruction and KL are their means over all B*K samples."""
        k = self.iwae_samples
        z_mean, z_log_var = (as_float32(t) for t in self.encoder.heads(x))
        # Image-major: rows i*K .. i*K+K-1 are image i's K samples, decoded in one batch.
        mean_k, log_var_k = ops.repeat(z_mean, k, axis=0), ops.repeat(z_log_var, k, axis=0)
        z = self.encoder.sampling([mean_k, log_var_k])
        bce = bce_per_image(ops.repeat(x, k, axis=0), as_float32(self.decoder.logits(z)))
        kl = diagonal_normal_log_prob(z, mean_k, log_var_k) - self.prior.log_prob(z)
        log_w = ops.reshape(-bce - self.beta * kl, (-1, k))
        bound = ops.logsumexp(log_w, axis=1) - math.log(k)
        return -ops.mean(bound), ops.mean(bce), ops.mean(kl)

    def _record(self, loss, reconstruction, kl):
        self.loss_tracker.update_state(loss)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            loss, reconstruction, kl = self.compute_losses(x, training=True)
            # Under tf.distribute each replica sees part of the batch; gradients are summed.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
            # mixed_float16: Keras wraps the optimizer in a LossScaleOptimizer; else a no-op.
            scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        return self._record(loss, reconstruction, kl)

    def test_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self._record(*self.compute_losses(x, training=False))

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "conv_filters": self.conv_filters,
            "kernel_size": self.kernel_size,
            "dense_units": self.dense_units,
            "decoder_dense_units": self.decoder_dense_units,
            "beta": self.beta,
            "seed": self.seed,
            "prior": self.prior_name,
            "prior_components": self.prior_components,
            "objective": self.objective,
            "iwae_samples": self.iwae_samples,
        }


def build_vae(model_params: dict, seed: int, objective: str = "elbo", iwae_samples: int = 1) -> VAE:
    """A built VAE from the ``model`` section of params.yaml (and the train objective)."""
    model_params = {**MODEL_DEFAULTS, **model_params}
    vae = VAE(
        latent_dim=model_params["latent_dim"],
        conv_filters=model_params["conv_filters"],
        kernel_size=model_params["kernel_size"],
        dense_units=model_params["dense_units"],
        decoder_dense_units=model_params["decoder_dense_units"],
        beta=model_params["beta"],
        seed=seed,
        prior=model_params["prior"],
        prior_components=model_params["prior_components"],
        objective=objective,
        iwae_samples=iwae_samples,
    )
    vae.build((None, *IMAGE_SHAPE))
    return vae


@contextlib.contextmanager
def precision_policy(name: str):
    """Keras' global dtype policy set to ``name`` for the block, then restored (even on error).

    Layers take the policy when they are created, so a model built inside the block
    computes in it; models built afterwards, in the same process, do not.
    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def float32_copy(vae: VAE) -> VAE:
    """The same VAE (config and weights) computing in float32, for a model trained in mixed precision.

    Mixed precision keeps float32 weights, so nothing is rounded: the copy is what is
    saved, and evaluate, encode and plot run it as any float32 model (no optimizer state).
    """
    with precision_policy("float32"):
        copy = VAE.from_config({**vae.get_config(), "dtype": "float32"})
        copy.build((None, *IMAGE_SHAPE))
    copy.set_weights(vae.get_weights())
    return copy
