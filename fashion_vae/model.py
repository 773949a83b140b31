"""The convolutional VAE: Sampling layer, Encoder, Decoder and the VAE model.

Follows the keras.io VAE example (2 strided convs -> dense -> z_mean / z_log_var;
dense -> 7x7xC -> 2 strided transposed convs -> sigmoid), with every size a
parameter, serialisable classes, and a loss computed from logits for stability.
"""
from __future__ import annotations

# The package's __init__ has set the backend and TensorFlow's CPU options by now.
import keras
import tensorflow as tf
from keras import layers, ops

PACKAGE = "fashion_vae"
IMAGE_SHAPE = (28, 28, 1)


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
        self.sampling = Sampling(seed, name="sampling")

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
    """Encoder + decoder trained on reconstruction BCE + beta * KL."""

    def __init__(
        self,
        latent_dim: int = 2,
        conv_filters: tuple[int, ...] = (32, 64),
        kernel_size: int = 3,
        dense_units: int = 16,
        beta: float = 1.0,
        seed: int | None = None,
        decoder_dense_units: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.conv_filters = list(conv_filters)
        self.kernel_size = kernel_size
        self.dense_units = dense_units
        self.decoder_dense_units = decoder_dense_units
        self.beta = float(beta)
        self.seed = seed
        self.encoder = Encoder(latent_dim, conv_filters, kernel_size, dense_units, seed, name="encoder")
        self.decoder = Decoder(latent_dim, conv_filters, kernel_size, decoder_dense_units, name="decoder")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    def build(self, input_shape=(None, *IMAGE_SHAPE)):
        self.encoder.build(input_shape)
        self.decoder.build((None, self.latent_dim))
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def call(self, x, training=None):
        """Reconstruction probabilities for ``x`` (through a sampled z)."""
        _, _, z = self.encoder(x, training=training)
        return self.decoder(z, training=training)

    def compute_losses(self, x, training=None):
        """Batch means of reconstruction BCE, KL and the beta-weighted total."""
        z_mean, z_log_var, z = self.encoder(x, training=training)
        reconstruction = ops.mean(bce_per_image(x, self.decoder.logits(z)))
        kl = ops.mean(kl_per_image(z_mean, z_log_var))
        return reconstruction + self.beta * kl, reconstruction, kl

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
        }


def build_vae(model_params: dict, seed: int) -> VAE:
    """A built VAE from the ``model`` section of params.yaml."""
    vae = VAE(
        latent_dim=model_params["latent_dim"],
        conv_filters=model_params["conv_filters"],
        kernel_size=model_params["kernel_size"],
        dense_units=model_params["dense_units"],
        decoder_dense_units=model_params["decoder_dense_units"],
        beta=model_params["beta"],
        seed=seed,
    )
    vae.build((None, *IMAGE_SHAPE))
    return vae
