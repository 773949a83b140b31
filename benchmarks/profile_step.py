"""Where a training step spends its time, layer by layer (issue 6's profile).

    python -m benchmarks.profile_step [--seed-architecture] [--batch N] [--reps R]

Times, at the project's runtime settings (oneDNN as configured, op determinism,
pinned threads), each layer of the VAE on its own: the forward pass, and the forward
plus backward pass (gradients for the layer's input and weights), each compiled with
``tf.function`` on a fixed batch (10 runs per call), median of R calls after warm-up.
It then times one whole ``train_step`` (loss, sampling and the Adam update included)
to compare with the sum of the layers. Prints a table; writes nothing.
"""
from __future__ import annotations

import argparse
import statistics
import time

from fashion_vae import quiet_tensorflow  # noqa: F401  TensorFlow with the stages' options, start-up lines filtered

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.flops import SEED_MODEL, flops_per_image  # noqa: E402
from fashion_vae import params, prepared, training  # noqa: E402
from fashion_vae.model import build_vae  # noqa: E402


CALLS_PER_GRAPH = 10  # amortises the ~0.5 ms of a tf.function call over several layer runs


def median_ms(fn, reps: int, calls: int = 1) -> float:
    """Median wall milliseconds of one of the ``calls`` layer runs inside ``fn``."""
    for _ in range(3):  # tracing and oneDNN primitive creation
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / calls


def layer_chain(vae, x):
    """(name, layer, input) for every weighted layer, inputs from a real forward pass."""
    enc, dec = vae.encoder, vae.decoder
    chain, h = [], x
    for conv in enc.convs:
        chain.append((f"encoder.{conv.name}", conv, h))
        h = conv(h)
    h = enc.flatten(h)
    chain.append(("encoder.hidden", enc.hidden, h))
    h = enc.hidden(h)
    chain.append(("encoder.z_mean", enc.z_mean, h))
    chain.append(("encoder.z_log_var", enc.z_log_var, h))
    z = enc.z_mean(h)
    if dec.hidden is not None:
        chain.append(("decoder.hidden", dec.hidden, z))
        z = dec.hidden(z)
    chain.append(("decoder.project", dec.project, z))
    h = dec.reshape(dec.project(z))
    for deconv in dec.deconvs:
        chain.append((f"decoder.{deconv.name}", deconv, h))
        h = deconv(h)
    chain.append(("decoder.logits", dec.to_logits, h))
    return chain


def profile(model_params: dict, train_params: dict, x: np.ndarray, reps: int) -> list[tuple[str, float, float]]:
    vae = build_vae(model_params, train_params["seed"])
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    batch = tf.constant(x)
    rows = []
    for name, layer, inp in layer_chain(vae, batch):
        inp = tf.constant(inp)
        upstream = tf.random.normal(layer(inp).shape, seed=1)
        # Inputs differ slightly per call so that grappler cannot merge the repeated runs.
        scales = [1.0 + 1e-6 * i for i in range(CALLS_PER_GRAPH)]

        @tf.function
        def forward(a, layer=layer, scales=scales):
            return [tf.reduce_sum(layer(a * c)) for c in scales]

        @tf.function
        def forward_backward(a, layer=layer, upstream=upstream, scales=scales):
            results = []
            for c in scales:
                with tf.GradientTape() as tape:
                    tape.watch(a)
                    out = layer(a * c)
                grads = tape.gradient(out, [a, *layer.trainable_weights], output_gradients=upstream)
                # Return the output too: a linear layer's gradients do not need it, and
                # grappler would otherwise prune its forward pass from the timing.
                results.append((tf.reduce_sum(out), grads))
            return results

        rows.append((name, median_ms(lambda: forward(inp), reps, CALLS_PER_GRAPH),
                     median_ms(lambda: forward_backward(inp), reps, CALLS_PER_GRAPH)))
    step = tf.function(vae.train_step)
    rows.append(("whole train_step", 0.0, median_ms(lambda: step(batch), reps)))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed-architecture", action="store_true", help="profile the keras.io seed, not params.yaml")
    parser.add_argument("--batch", type=int, help="batch size (default: train.batch_size)")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args(argv)

    cfg = params.load()
    model_params = SEED_MODEL if args.seed_architecture else cfg["model"]
    train_params = cfg["train"]
    batch = args.batch or (128 if args.seed_architecture else train_params["batch_size"])
    training.configure_runtime(train_params["seed"], train_params["threads"])
    x, _ = prepared.load_split("data/prepared/train.npz")
    rows = profile(model_params, train_params, x[:batch], args.reps)

    step_ms = rows[-1][2]
    layers_ms = sum(fb for _, _, fb in rows[:-1])
    flops = flops_per_image(model_params)
    by_layer = dict(flops["forward_mflop_by_layer"])
    by_layer["encoder.z_mean"] = by_layer["encoder.z_log_var"] = by_layer.pop("encoder.heads") / 2
    print(f"train step profile: {model_params}, batch {batch}, oneDNN "
          f"{'on' if training.onednn_enabled() else 'off'}, {train_params['threads']} threads")
    print(f"{'layer (timed alone)':28s} {'fwd ms':>8s} {'fwd+bwd ms':>10s} {'share':>7s} {'GFLOP/s':>8s}")
    for name, fwd, fb in rows[:-1]:
        gflops = 3 * by_layer[name] * batch / fb  # MFLOP per ms = GFLOP/s; training = 3x forward
        print(f"{name:28s} {fwd:8.2f} {fb:10.2f} {100 * fb / layers_ms:6.1f}% {gflops:8.1f}")
    print(f"{'sum of the layers':28s} {'':8s} {layers_ms:10.2f}")
    print(f"{'whole train_step':28s} {'':8s} {step_ms:10.2f}  (loss, sampling and Adam included) = "
          f"{1000 * batch / step_ms:.0f} images/s, {flops['train_flop'] * batch / step_ms / 1e6:.1f} GFLOP/s")

if __name__ == "__main__":
    main()
