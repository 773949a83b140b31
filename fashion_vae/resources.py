"""Memory a configuration needs, estimated from params.yaml before anything is allocated.

Validation calls :func:`check`: a configuration whose train or evaluate stage would need
more memory than this machine has stops with one line naming the keys that drive the
estimate, the estimate and the memory available, instead of TensorFlow's OOM traceback or
the kernel's OOM killer minutes later. The estimate counts what grows with the params:

- the weights, their gradients and Adam's two moments (training), or the loaded model;
- the activations of one step, kept for the backward pass: ``batch_size`` images through
  the encoder and ``batch_size x iwae_samples`` samples through the decoder, and the
  prior's terms (a VampPrior's pseudo-images go through the encoder every step);
- the images in memory (the split, TensorFlow's copy, the shuffle buffer);
- TensorFlow's and Python's own footprint (a constant, measured).

The constants are calibrated against measured peak RSS (``python -m benchmarks.memory
--calibrate``; docs/performance.md) and err on the high side. ``FASHION_VAE_MEMORY_LIMIT``
(bytes, or a number with K/M/G/T) lowers the memory the check allows, for a shared machine
or a test.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fashion_vae import files

PIXELS = 28 * 28
TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000
FLOAT = 4  # bytes
RUNTIME_BYTES = 800 * files.MiB  # Python, TensorFlow, Keras, dvclive, scikit-learn loaded and running
# Measured peak RSS over these counts (docs/performance.md, "Memory"): training keeps about 1.7x
# the forward activations, inference about 0.9x a pass's; each weight is held about 14 times
# while training and saving (weights, gradients, Adam's moments, the file's copies).
ACTIVATION_FACTOR = 2.0
INFERENCE_FACTOR = 1.2
TRAIN_WEIGHT_COPIES = 15
EVAL_WEIGHT_COPIES = 4
LIMIT_ENV = "FASHION_VAE_MEMORY_LIMIT"
SIZE_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def map_side(layers: int) -> int:
    """The encoder's last feature map side after ``layers`` stride-2 'same' convolutions of 28."""
    side = 28
    for _ in range(layers):
        side = math.ceil(side / 2)
    return side


def parameter_count(model: dict) -> int:
    """Trainable weights of the VAE that ``model`` (params.yaml's section) builds, prior included."""
    f0, f1 = model["conv_filters"]
    k, d = model["kernel_size"], model["latent_dim"]
    dense, hidden = model["dense_units"], model["decoder_dense_units"]
    flat = map_side(2) ** 2 * f1
    encoder = (k * k * f0 + f0) + (k * k * f0 * f1 + f1) + (flat * dense + dense) + 2 * (dense * d + d)
    decoder = (d * hidden + hidden if hidden else 0) + ((hidden or d) * flat + flat)
    decoder += (k * k * f1 * f1 + f1) + (k * k * f0 * f1 + f0) + (k * k * f0 + 1)
    c = model["prior_components"]
    prior = {"normal": 0, "mixture": c + 2 * c * d, "vamp": c * PIXELS}[model["prior"]]
    return encoder + decoder + prior


def encoder_floats(model: dict) -> int:
    """Activations of one image through the encoder (input, both convs, hidden layer, heads)."""
    f0, f1 = model["conv_filters"]
    return PIXELS + map_side(1) ** 2 * f0 + 2 * map_side(2) ** 2 * f1 + model["dense_units"] + 3 * model["latent_dim"]


def decoder_floats(model: dict) -> int:
    """Activations of one latent sample through the decoder and its per-pixel loss."""
    f0, f1 = model["conv_filters"]
    return (model["decoder_dense_units"] + 2 * map_side(2) ** 2 * f1 + map_side(1) ** 2 * f1 + PIXELS * f0
            + 4 * PIXELS)


def prior_floats(model: dict, samples: int) -> int:
    """The prior's terms in one step: each sample against each component, and VampPrior's encoder pass."""
    c, d = model["prior_components"], model["latent_dim"]
    if model["prior"] == "normal":
        return samples * d
    terms = samples * c * (d + 2)
    return terms + (c * encoder_floats(model) if model["prior"] == "vamp" else 0)


@dataclass(frozen=True)
class Estimate:
    """Bytes a stage needs, by part; ``keys`` are the params.yaml keys that drive the largest part."""

    parts: dict[str, int]
    keys: dict[str, tuple[str, ...]]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def largest(self) -> str:
        return max((p for p in self.parts if p in self.keys), key=self.parts.__getitem__)


WIDTH_KEYS = ("model.conv_filters", "model.dense_units", "model.decoder_dense_units")


def train_estimate(cfg: dict) -> Estimate:
    model, train, prepare = cfg["model"], cfg["train"], cfg["prepare"]
    batch = train["batch_size"]
    k = train["iwae_samples"] if train["objective"] == "iwae" else 1
    train_images = (prepare["limit_train"] or TRAIN_IMAGES) - prepare["val_size"]
    step = batch * encoder_floats(model) + batch * k * decoder_floats(model)
    sample_keys = ("train.batch_size", "train.iwae_samples") if k > 1 else ("train.batch_size",)
    return Estimate(
        parts={
            "runtime": RUNTIME_BYTES,
            # weights, gradients, Adam's two moments; saving holds the file's bytes several times
            "weights": TRAIN_WEIGHT_COPIES * FLOAT * parameter_count(model),
            "activations": int(ACTIVATION_FACTOR * FLOAT * step),
            "prior": int(ACTIVATION_FACTOR * FLOAT * prior_floats(model, batch * k)),
            # the split, TensorFlow's copy of it, the shuffle buffer; the validation split twice
            "images": FLOAT * PIXELS * (3 * train_images + 2 * prepare["val_size"]),
        },
        keys={
            "weights": WIDTH_KEYS,
            "activations": (*sample_keys, "model.conv_filters"),
            "prior": ("model.prior_components", *sample_keys),
        },
    )


def evaluate_estimate(cfg: dict) -> Estimate:
    model, evaluate, prepare = cfg["model"], cfg["evaluate"], cfg["prepare"]
    k, batch = evaluate["iwae_samples"], evaluate["batch_size"]
    train_images = (prepare["limit_train"] or TRAIN_IMAGES) - prepare["val_size"]
    test_images = prepare["limit_test"] or TEST_IMAGES
    # One forward pass holds at most batch_size image x sample pairs (fewer when the split is smaller).
    pairs = min(batch, max(1, batch // k) * k, test_images * k)
    images = min(batch, test_images)
    step = max(images * (encoder_floats(model) + decoder_floats(model)), pairs * (decoder_floats(model) + PIXELS))
    return Estimate(
        parts={
            "runtime": RUNTIME_BYTES,
            "weights": EVAL_WEIGHT_COPIES * FLOAT * parameter_count(model),  # the model, Adam's saved state
            "activations": int(INFERENCE_FACTOR * FLOAT * (step + prior_floats(model, pairs))),
            "images": FLOAT * PIXELS * (train_images + test_images),
        },
        keys={"weights": WIDTH_KEYS, "activations": ("evaluate.batch_size", "evaluate.iwae_samples")},
    )


def model_file_bytes(model: dict) -> int:
    """The saved .keras file: the weights and Adam's two moments, as float32."""
    return 3 * FLOAT * parameter_count(model)


def parse_size(text: str) -> int | None:
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    return int(float(match.group(1)) * SIZE_SUFFIX[match.group(2).upper()]) if match else None


def machine_memory() -> tuple[int, str]:
    """(bytes, where from): the machine's RAM, lowered by a cgroup limit or FASHION_VAE_MEMORY_LIMIT."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                found.append((int(line.split()[1]) * 1024, "this machine has"))
    except (OSError, ValueError, IndexError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            found.append((int(text), "this container may use"))
    env = os.environ.get(LIMIT_ENV)
    if env is not None and parse_size(env) is not None:
        found.append((parse_size(env), f"{LIMIT_ENV} allows"))
    if not found:
        found.append((1 << 62, "this machine has"))  # unknown: the check then refuses nothing
    return min(found)


def describe(n_bytes: float) -> str:
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB")):
        if n_bytes >= unit:
            return f"{n_bytes / unit:.1f} {name}"
    return f"{n_bytes / (1 << 20):.2f} MiB"


def problems(cfg: dict) -> str | None:
    """What does not fit, as the body of one error line; None if everything does."""
    limit, source = machine_memory()
    file_bytes = model_file_bytes(cfg["model"])
    if file_bytes > files.MODEL_MAX_BYTES:
        return (f"{', '.join(WIDTH_KEYS)} give a model of {parameter_count(cfg['model']):,} weights, whose "
                f"models/vae.keras (with Adam's state) would be {describe(file_bytes)}, over the "
                f"{files.describe_size(files.MODEL_MAX_BYTES)} a stage loads; make the model narrower")
    for stage, estimate in (("train", train_estimate(cfg)), ("evaluate", evaluate_estimate(cfg))):
        if estimate.total > limit:
            keys = estimate.keys[estimate.largest()]
            values = ", ".join(f"{key} = {_value(cfg, key)}" for key in keys)
            return (f"{values} need about {describe(estimate.total)} in the {stage} stage "
                    f"({estimate.largest()} {describe(estimate.parts[estimate.largest()])}); {source} "
                    f"{describe(limit)}; lower {keys[0]}")
    return None


def _value(cfg: dict, key: str):
    section, name = key.split(".")
    return cfg[section][name]
