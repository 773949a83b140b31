"""Priors p(z) over the latent space: the standard normal, a Gaussian mixture, a VampPrior.

Each prior is a small Keras layer with ``log_prob(z)`` (one value per latent point, over
the last axis) and ``sample(n, seed)``. Their maths runs in float32 whatever the
mixed-precision policy: the layers are created with ``dtype="float32"`` and cast their
inputs. The learned priors' parameters train with the model, through the KL term.

Only the standard normal has a closed-form KL to a diagonal Gaussian q(z|x)
(``analytic_kl``); for the others the VAE estimates KL at the sampled z as
log q(z|x) - log p(z).
"""
from __future__ import annotations

import math

from fashion_vae import quiet_tensorflow  # noqa: F401  (first: loads TensorFlow without start-up noise)
import keras  # noqa: E402
from keras import layers, ops

PACKAGE = "fashion_vae"
LOG_2PI = math.log(2.0 * math.pi)
PRIORS = ("normal", "mixture", "vamp")


def as_float32(x):
    """``x`` as float32 (no op when it already is: the float32 graph stays as it was)."""
    return x if keras.backend.standardize_dtype(x.dtype) == "float32" else ops.cast(x, "float32")


def diagonal_normal_log_prob(z, mean, log_var):
    """log N(z; mean, diag(exp(log_var))) summed over the last axis (broadcasting)."""
    return -0.5 * ops.sum(ops.square(z - mean) * ops.exp(-log_var) + log_var + LOG_2PI, axis=-1)


def _seed_generator(seed):
    # An int seeds a fresh generator: successive draws inside one sample() stay independent.
    return keras.random.SeedGenerator(seed) if seed is None or isinstance(seed, int) else seed


@keras.saving.register_keras_serializable(package=PACKAGE)
class StandardNormalPrior(layers.Layer):
    """p(z) = N(0, I): no weights; the KL to q(z|x) has a closed form."""

    analytic_kl = True

    def __init__(self, latent_dim: int = 2, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.latent_dim = latent_dim

    def build(self, input_shape=None):
        self.built = True

    def log_prob(self, z):
        z = as_float32(z)
        return -0.5 * ops.sum(ops.square(z) + LOG_2PI, axis=-1)

    def sample(self, n: int, seed=None):
        return keras.random.normal((n, self.latent_dim), seed=_seed_generator(seed))

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


class _MixturePrior(layers.Layer):
    """A mixture of diagonal Gaussians; subclasses say where its components come from."""

    analytic_kl = False

    def components(self):
        """(log_weights (C,), means (C, d), log_vars (C, d)), float32."""
        raise NotImplementedError

    def log_prob(self, z):
        log_weights, means, log_vars = self.components()
        # z (..., d) against every component (C, d) -> (..., C), then log-sum-exp over C.
        per_component = diagonal_normal_log_prob(ops.expand_dims(as_float32(z), -2), means, log_vars)
        return ops.logsumexp(per_component + log_weights, axis=-1)

    def sample(self, n: int, seed=None):
        seed = _seed_generator(seed)
        log_weights, means, log_vars = self.components()
        which = keras.random.categorical(ops.expand_dims(log_weights, 0), n, seed=seed)[0]
        eps = keras.random.normal((n, self.latent_dim), seed=seed)
        return ops.take(means, which, axis=0) + ops.exp(0.5 * ops.take(log_vars, which, axis=0)) * eps


@keras.saving.register_keras_serializable(package=PACKAGE)
class GaussianMixturePrior(_MixturePrior):
    """p(z) = sum_c w_c N(z; mu_c, diag(sigma_c^2)) with learnable means, log-variances, weights.

    Means start at seeded N(0, 1) draws, variances at 1 and weights equal, so the
    untrained prior is a spread of unit Gaussians around the standard normal's mass.
    """

    def __init__(self, latent_dim: int = 2, num_components: int = 10, seed: int | None = None, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.seed = seed

    def build(self, input_shape=None):
        c, d = self.num_components, self.latent_dim
        spread = keras.initializers.RandomNormal(stddev=1.0, seed=self.seed)
        self.means = self.add_weight(shape=(c, d), initializer=spread, name="means")
        self.log_vars = self.add_weight(shape=(c, d), initializer="zeros", name="log_vars")
        self.logits = self.add_weight(shape=(c,), initializer="zeros", name="logits")
        self.built = True

    def components(self):
        return ops.log_softmax(self.logits), self.means, self.log_vars

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_components": self.num_components,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class VampPrior(_MixturePrior):
    """p(z) = (1/C) sum_c q(z | u_c): the encoder's posteriors at C learnable pseudo-images.

    Tomczak & Welling (2018). The pseudo-images are sigmoid(parameters), so they stay
    in the data's (0, 1) range; they start near uniform grey. The VAE gives the prior its
    encoder with :meth:`use_encoder` (a plain reference, not a tracked sub-layer, so the
    encoder's weights are saved once, under the VAE).
    """

    def __init__(self, latent_dim: int = 2, num_components: int = 10, seed: int | None = None,
                 image_shape: tuple[int, ...] = (28, 28, 1), **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.seed = seed
        self.image_shape = tuple(image_shape)
        self._encoder_heads = None

    def use_encoder(self, heads) -> None:
        """``heads(x) -> (z_mean, z_log_var)``: the encoder whose posteriors form the prior."""
        self._encoder_heads = heads

    def build(self, input_shape=None):
        self.pseudo_logits = self.add_weight(
            shape=(self.num_components, *self.image_shape),
            initializer=keras.initializers.RandomNormal(stddev=0.1, seed=self.seed),
            name="pseudo_logits",
        )
        self.built = True

    def pseudo_inputs(self):
        return ops.sigmoid(self.pseudo_logits)

    def components(self):
        if self._encoder_heads is None:
            raise RuntimeError("VampPrior needs its encoder: call use_encoder(encoder.heads) first")
        means, log_vars = self._encoder_heads(self.pseudo_inputs())
        uniform = ops.full((self.num_components,), -math.log(self.num_components), dtype="float32")
        return uniform, as_float32(means), as_float32(log_vars)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_components": self.num_components,
            "seed": self.seed,
            "image_shape": list(self.image_shape),
        }


def make_prior(kind: str, latent_dim: int, num_components: int, seed: int | None, **kwargs) -> layers.Layer:
    """The prior named by ``model.prior`` in params.yaml."""
    if kind == "normal":
        return StandardNormalPrior(latent_dim, **kwargs)
    if kind == "mixture":
        return GaussianMixturePrior(latent_dim, num_components, seed, **kwargs)
    if kind == "vamp":
        return VampPrior(latent_dim, num_components, seed, **kwargs)
    raise ValueError(f"unknown prior {kind!r}; expected one of {', '.join(PRIORS)}")
